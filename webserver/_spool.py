"""A request body received whole before its handler runs: in memory while small, then in a
private temporary file (as waitress and nginx do).

Why: a handler reading ``request.body`` must never wait on the client, or a slow uploader holds a
worker for as long as it likes. The connection receives the body while it is parked in the
selector, a piece at a time, into a :class:`Spool`; the handler then reads the spool.

Rules: at most ``MEMORY_LIMIT`` bytes of a body are held in memory; beyond, the file is private
(0600): unnamed in the system's temporary folder, or, in a folder a handler named (so that it
can link the file into place instead of copying it), named and locked (``flock``) while in use;
either way it is removed when the spool closes, so a client that disconnects leaves nothing. A
full disk is :class:`~webserver.HTTPError` 507.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile

from .errors import HTTPError

error_log = logging.getLogger("webserver.error")

#: Bytes of a body kept in memory before it moves to a temporary file: a form or a small JSON
#: body never touches the disk, and a thousand slow uploaders hold at most 64 MiB between them.
MEMORY_LIMIT = 64 * 1024
#: Name prefix of a spooled body's file.
TEMP_PREFIX = ".webserver-body-"
#: Bytes handed to a handler per read of the spooled body.
READ_SIZE = 256 * 1024


class Spool:
    """The body of one request, written as it arrives and read once by the handler."""

    __slots__ = ("_fd", "_folder", "_memory", "_read_at", "path", "size")

    def __init__(self, folder: str | None = None) -> None:
        #: Where the temporary file goes (the system's temporary folder when None).
        self._folder = folder
        self._memory = bytearray()
        self._fd = -1
        #: The file's name, when it has one (spooled in a handler's folder).
        self.path: str | None = None
        self._read_at = 0
        #: Bytes written so far.
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data``; HTTPError 507 when the disk is full."""
        try:
            if self._fd < 0 and len(self._memory) + len(data) > MEMORY_LIMIT:
                self._fd, self.path = _private_file(self._folder)
                self._write_all(self._memory)
                self._memory = bytearray()
            if self._fd < 0:
                self._memory += data
            else:
                self._write_all(data)
        except OSError as exc:
            raise _storage_error(exc) from exc
        self.size += len(data)

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    @property
    def fd(self) -> int:
        """The temporary file's descriptor, or -1 while the body is in memory."""
        return self._fd

    def read_chunk(self) -> bytes:
        """The next piece of the body from the start, ``b""`` at its end."""
        if self._fd < 0:
            chunk = bytes(self._memory[self._read_at : self._read_at + READ_SIZE])
        else:
            chunk = os.pread(self._fd, READ_SIZE, self._read_at)
        self._read_at += len(chunk)
        return chunk

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._memory = bytearray()


def _private_file(folder: str | None) -> tuple[int, str | None]:
    """A new file only this process can open: unnamed in the system's temporary folder, or
    named and locked in ``folder``; its descriptor and name."""
    if folder is None:
        directory = tempfile.gettempdir()
        try:
            return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600), None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        fd, path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        os.unlink(path)
        return fd, None
    return locked_temp_file(folder, TEMP_PREFIX)


def locked_temp_file(folder: str, prefix: str) -> tuple[int, str]:
    """A new private (0600) file named ``prefix...`` in ``folder``, locked (``flock``) so that
    :func:`remove_unheld` in another process leaves it alone; its descriptor and name.

    The clean-up may remove the file between its creation and the lock: then it is made again.
    """
    for _ in range(3):
        fd, path = tempfile.mkstemp(prefix=prefix, dir=folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd, path
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(errno.EAGAIN, "temporary files keep vanishing", folder)


def remove_unheld(folder: str) -> int:
    """Remove the files of ``folder`` that no live process holds locked; how many.

    Why: a process killed mid-request (SIGKILL, a crash, power loss) leaves its temporary files
    behind, and nothing else would ever remove them. A file still locked belongs to a live
    process (a ``--workers`` sibling) and is kept. A missing folder holds nothing.
    """
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    return sum(_remove_if_unheld(os.path.join(folder, name)) for name in names)


def _remove_if_unheld(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # gone meanwhile, or not a file we may open
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Removed while the lock is held, so no process can be writing it meanwhile.
        os.unlink(path)
    except OSError:
        return False  # locked: a live process's
    finally:
        os.close(fd)
    return True


def _storage_error(exc: OSError) -> HTTPError:
    """Map a file-system failure to a status, logging what the client is not told."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        error_log.error("request body not stored, disk full: %s", exc)
        return HTTPError("no space left to store the request body", status=507, close=True)
    error_log.error("request body not stored: %s", exc)
    return HTTPError("the request body could not be stored", status=500, close=True)
