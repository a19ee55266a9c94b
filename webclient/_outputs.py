"""Where GET bodies go: names checked against the output folder, folders opened without following
symbolic links, bodies written to temporary files and renamed into place once complete.

Rules: a name that resolves outside the output folder is refused before anything is sent; each
folder on the way is opened component by component with ``O_NOFOLLOW`` relative to its parent, and
the temporary file is created (``O_EXCL``, mode 0600, locked while written) and renamed relative to
that descriptor, so a folder swapped for a symlink meanwhile cannot redirect a body; a body that
does not arrive whole leaves neither its temporary file nor the folders created for it (when
empty); a complete body gets the mode any new file gets (``0o666 & ~umask``); temporary files of
killed runs (older than :data:`~webclient._folders.STALE_TEMP_AGE`, unlocked) are removed by the
next run. The folder and temporary-file mechanics are in :mod:`webclient._folders`; resuming an
interrupted download (``<name>.part``) in :mod:`webclient._partials`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ._folders import TEMP_ATTEMPTS, CreatedFolders, create_temp
from ._partials import META_SUFFIX, PART_SUFFIX, Resume
from .errors import LocalFileError, UnsafePathError

#: A control character, which no output name may hold.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def destination(out_dir: Path, name: str) -> Path:
    """Where a body named ``name`` is saved; UnsafePathError when that is outside ``out_dir``."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in name) or not name:
        raise UnsafePathError(f"refusing to write {name!r}: not a usable file name")
    try:
        root = out_dir.resolve()
        target = (root / name).resolve()
    except RuntimeError as exc:  # Python 3.11 reports a loop of symlinks this way
        raise UnsafePathError(f"refusing to write {name!r}: {exc}") from exc
    if target == root or not target.is_relative_to(root):
        raise UnsafePathError(f"refusing to write {name!r}: it is outside {out_dir}")
    return target


class Destinations:
    """:func:`destination` for many names of one run, resolving each folder once.

    A name made of plain components (no empty, ``.`` or ``..`` part) whose last component is not
    a symlink lands at its resolved folder joined with that component, which is what resolving
    the whole path gives; any other name takes :func:`destination` itself.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._root: str | None = None
        #: Resolved folders (relative name -> real path), only those inside the root.
        self._folders: dict[str, str] = {}

    @property
    def root(self) -> str | None:
        """The output folder, resolved (once); None when it cannot be (a loop of symlinks)."""
        if self._root is None:
            try:
                self._root = os.fspath(self.out_dir.resolve())
            except RuntimeError:  # Python 3.11 reports a loop of symlinks this way
                return None
        return self._root

    def __call__(self, name: str) -> Path:
        if not name or _CONTROL.search(name):
            return destination(self.out_dir, name)
        folder_name, _, last = name.rpartition("/")
        if last in ("", ".", "..") or (
            folder_name and any(p in ("", ".", "..") for p in folder_name.split("/"))
        ):
            return destination(self.out_dir, name)
        root = self.root
        if root is None:
            return destination(self.out_dir, name)  # (which says why)
        folder = self._folders.get(folder_name)
        if folder is None:
            if not folder_name:
                folder = root
            else:
                folder = os.path.realpath(os.path.join(root, folder_name))
                if not folder.startswith(root.rstrip("/") + "/") or os.path.islink(folder):
                    # (still a link once resolved: a loop, which destination() reports)
                    return destination(self.out_dir, name)
            self._folders[folder_name] = folder
        target = os.path.join(folder, last)
        if os.path.islink(target):
            return destination(self.out_dir, name)
        return Path(target)


#: How ``<name>.part`` and its record are opened: never through a symlink, and without waiting
#: (a named pipe there would block the open until a reader came; regular files ignore it).
_PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: What opening or checking them fails with when the name is taken by a symlink, a folder, a
#: named pipe or a device: then the body goes to a plain temporary file.
_NAME_TAKEN = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ESTALE})


class OutputFile:
    """A body sink writing beside ``path`` and renaming into place only when complete.

    Missing folders on the way to ``path`` are created (and recorded in ``folders``, shared by a
    run); the folder is opened once, component by component without following symlinks (see
    :class:`CreatedFolders`), and the temporary file is created and renamed relative to that
    descriptor, so a folder swapped for a symlink meanwhile cannot redirect the body. A body
    that does not arrive whole leaves nothing behind: its temporary file is removed, and so are
    the folders created for it, when empty, deepest first. With ``deferred``, :meth:`close`
    keeps the complete body in its temporary file and :meth:`publish` renames it into place
    later (a batch does that in command-file order). With ``resume``, the temporary file is
    ``<name>.part`` (see the module docstring), kept when the body is cut short if the response
    had a validator.
    """

    def __init__(
        self,
        path: Path,
        on_write: Callable[[int], None] | None = None,
        *,
        folders: CreatedFolders | None = None,
        deferred: bool = False,
        resume: Resume | None = None,
    ) -> None:
        self.path = path
        self._resume = resume
        #: The name of the ``.part.meta`` record in the folder, once written.
        self._meta: str | None = None
        #: Bytes in the file: those kept from an earlier run, then those written.
        self.size = resume.offset if resume is not None else 0
        self._on_write = on_write
        #: Folders of this file alone (none given): let go of when the file is done.
        self._own_folders = folders is None
        self._folders = folders if folders is not None else CreatedFolders()
        self._deferred = deferred
        self._folder = os.path.dirname(path)
        self._folder_fd = -1
        prefix = f".{path.name[:50]}."
        try:
            for attempt in range(TEMP_ATTEMPTS):
                self._folder_fd = self._folders.open(self._folder)
                try:
                    self._fd, self._temp = self._open_part(self._folder_fd, prefix)
                    break
                except FileNotFoundError:
                    # Another failed download of the run removed the folder it had created.
                    os.close(self._folder_fd)
                    self._folder_fd = -1
                    if attempt == TEMP_ATTEMPTS - 1:
                        raise
        except (OSError, UnsafePathError) as exc:
            if self._folder_fd >= 0:
                os.close(self._folder_fd)
            self._folders.remove_empty(self._folder)
            if self._own_folders:
                self._folders.close()
            if isinstance(exc, UnsafePathError):
                raise UnsafePathError(f"cannot write {path}: {exc}") from exc
            raise LocalFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._open = True
        #: The body is complete in the temporary file, not yet renamed into place.
        self._pending = False
        self._published = False

    def _open_part(self, folder_fd: int, prefix: str) -> tuple[int, str]:
        """``<name>.part`` (record first, then the file, locked, its first ``offset`` bytes
        kept); a unique temporary name instead when not resuming or another run holds it."""
        resume = self._resume
        if resume is None:
            return create_temp(folder_fd, prefix)
        name = self.path.name + PART_SUFFIX
        try:
            fd = os.open(name, _PART_FLAGS, 0o600, dir_fd=folder_fd)
        except OSError as exc:
            if exc.errno not in _NAME_TAKEN or resume.offset:
                raise
            fd = -1  # a symlink, folder or pipe in its place is never used (nor removed)
        try:
            if fd < 0:
                raise BlockingIOError
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if fd >= 0:
                os.close(fd)  # another run is writing it: this one goes its own way
            return self._not_resumable(folder_fd, prefix)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < resume.offset:
                raise OSError(errno.ESTALE, f"{name} changed since the request was sent")
            self._write_meta(folder_fd, resume)
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, resume.offset)
            os.lseek(fd, resume.offset, os.SEEK_SET)
        except OSError as exc:
            if resume.offset or exc.errno not in _NAME_TAKEN:
                os.close(fd)
                raise
            # The name of the .part or its record is taken by something that is no regular
            # file: the body goes without them, and the .part goes too when this run created it.
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder_fd)
            os.close(fd)
            return self._not_resumable(folder_fd, prefix)
        except BaseException:
            os.close(fd)
            raise
        return fd, name

    def _not_resumable(self, folder_fd: int, prefix: str) -> tuple[int, str]:
        """A plain temporary file instead of the ``.part``: this body is not resumed later."""
        self._resume = None
        self.size = 0
        return create_temp(folder_fd, prefix)

    def _write_meta(self, folder_fd: int, resume: Resume) -> None:
        """Record the URL and validator beside the ``.part`` (or remove an older record when
        this response has no validator: what it leaves could not be resumed)."""
        meta = self.path.name + META_SUFFIX
        if resume.validator is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(meta, dir_fd=folder_fd)
            return
        import json

        record = json.dumps({"url": resume.url, "validator": resume.validator}).encode()
        fd = os.open(meta, _PART_FLAGS | os.O_TRUNC, 0o600, dir_fd=folder_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.ESTALE, f"{meta} is not a regular file")
            os.write(fd, record)
        finally:
            os.close(fd)
        self._meta = meta

    @property
    def resumable(self) -> bool:
        """Whether what is written so far stays for a later run when the body is cut short."""
        return self._meta is not None and self.size > 0

    def write(self, data: bytes) -> None:
        assert self._open
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)
        if self._on_write is not None:
            self._on_write(len(data))

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            # Created 0600 so that nobody reads a half-written body; complete, it gets the mode
            # any new file gets (whether the body came from the network or the cache).
            os.fchmod(self._fd, self._folders.file_mode())
            os.close(self._fd)
        except OSError as exc:
            self._discard()
            raise LocalFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._pending = True
        if not self._deferred:
            self.publish()

    def publish(self) -> None:
        """Rename the complete body into place (once; :meth:`close` does it unless deferred)."""
        if not self._pending:
            return
        self._pending = False
        fd = self._folder_fd
        try:
            os.replace(self._temp, self.path.name, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            self._discard()
            raise LocalFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        if self._meta is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._meta, dir_fd=fd)
        self._published = True
        self._release_folder()

    def abort(self) -> None:
        """Forget the body (unless already renamed into place): nothing is left behind."""
        if self._published:
            return
        keep = self._open and self.resumable
        if self._open:
            self._open = False
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._pending = False
        if keep:
            self._release_folder()  # cut short: the .part waits for the next run
            return
        self._discard()

    def _discard(self) -> None:
        if self._folder_fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._temp, dir_fd=self._folder_fd)
        if self._meta is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._meta, dir_fd=self._folder_fd)
        self._folders.remove_empty(self._folder)
        self._release_folder()

    def _release_folder(self) -> None:
        fd, self._folder_fd = self._folder_fd, -1
        if fd >= 0:
            os.close(fd)
        if self._own_folders:
            self._folders.close()


class SpoolSink:
    """A body to show, not save (``webclient get URL``): kept in an anonymous temporary file
    (gone from the file system from the start) until its turn to be copied to stdout."""

    def __init__(self) -> None:
        import tempfile  # (only ``get`` without -o needs it: a batch does not pay its import)

        self.file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed by abort()

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def close(self) -> None:
        self.file.flush()

    def abort(self) -> None:
        """Let go of the body (shown, or not wanted)."""
        self.file.close()
