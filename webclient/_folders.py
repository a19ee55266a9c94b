"""The output folder's mechanics: folders opened one component at a time without following
symbolic links (and the ones a run created, removed again when empty), temporary files created
and locked in them, and the temporary files of killed runs removed.

Rules: see :mod:`webclient._outputs`, which writes bodies with these.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time

from ._shared.tempfiles import create_private_at
from .errors import UnsafePathError

#: Attempts at creating a temporary file (or opening a folder) that another failed download of
#: the run may remove meanwhile.
TEMP_ATTEMPTS = 5
#: Opens one folder of a path, never through a symbolic link.
O_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: The names :func:`create_temp` gives (``.<name>.<tag><number>.part``).
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{7,}\.part")
#: A temporary file older than this, and not locked, was left by a run that was killed: a live
#: run holds the lock of each file it writes, and writes it within its read timeout.
STALE_TEMP_AGE = 10 * 60


def file_mode() -> int:
    """The mode a new file gets here, ``0o666 & ~umask``, as ``curl -o`` and ``wget`` leave it.

    The umask is read from ``/proc/self/status`` where there is one: ``os.umask`` can only read
    it by setting it, which races with other threads creating files.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o666 & ~mask


def create_temp(folder_fd: int, prefix: str) -> tuple[int, str]:
    """A new file ``prefix<unique>.part`` in the folder open as ``folder_fd``, open for writing
    (mode 0600, O_EXCL) and locked until closed, so no other run takes it for a leftover."""
    fd, name = create_private_at(folder_fd, prefix, ".part")
    with contextlib.suppress(OSError):  # a file system without locks: the age still protects
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, name


def remove_stale_temps(folder: str, *, now: float | None = None) -> int:
    """Remove the temporary files of killed runs from ``folder`` (see :data:`STALE_TEMP_AGE`);
    how many were removed. Files another process holds locked are left alone."""
    limit = (time.time() if now is None else now) - STALE_TEMP_AGE
    try:
        folder_fd = os.open(folder, O_FOLDER)
    except OSError:
        return 0  # not there (yet), or not a folder: nothing to clean
    removed = 0
    try:
        with os.scandir(folder_fd) as entries:
            names = [
                e.name
                for e in entries
                if _TEMP_NAME.fullmatch(e.name)
                and e.is_file(follow_symlinks=False)
                and e.stat(follow_symlinks=False).st_mtime < limit
            ]
        for name in names:
            removed += remove_unlocked(folder_fd, name)
    except OSError:
        pass  # an unreadable folder: the downloads into it report their own errors
    finally:
        os.close(folder_fd)
    return removed


def remove_unlocked(folder_fd: int, name: str) -> int:
    # O_NONBLOCK: a named pipe of that name would otherwise hold the open until a writer came.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, dir_fd=folder_fd)
    except OSError:
        return 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0  # not a download of ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # a live run is writing it
        os.unlink(name, dir_fd=folder_fd)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


class CreatedFolders:
    """The folders a run created under its output folder, so that a download that fails can
    remove those it leaves empty (shared by the run's threads); and the one way folders under
    ``root`` are opened for writing: component by component, never through a symbolic link.

    ``root`` is the resolved output folder (``None``: the file system root). Names were checked
    against it before the request was sent; ``root`` is opened once and held until
    :meth:`close`, and each folder under it is opened with ``O_NOFOLLOW`` relative to its
    parent, so a folder swapped for a symlink since then is refused rather than followed out of
    ``root``. ``root`` itself is not removed while held: when this run created it, :meth:`close`
    removes it if it is still empty.
    """

    def __init__(self, root: str | None = None) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self.root = (root or "/").rstrip("/") or "/"
        self._root_fd: int | None = None
        self._file_mode: int | None = None

    def file_mode(self) -> int:
        """:func:`file_mode`, read once for the run rather than once per file (a read of
        ``/proc/self/status`` each): the files of one run all get the same mode."""
        mode = self._file_mode
        if mode is None:
            mode = self._file_mode = file_mode()
        return mode

    def close(self) -> None:
        """Let go of ``root``; remove it (and its parents) if this run created them and they
        are empty."""
        with self._lock:
            fd, self._root_fd = self._root_fd, None
        if fd is not None:
            os.close(fd)
        self._remove_created(self.root, stop=None)

    def hold(self) -> None:
        """Open ``root`` now if it exists, so that what later happens to its path (renamed,
        replaced by a symlink) does not change where bodies go."""
        with self._lock:
            if self._root_fd is None:
                with contextlib.suppress(OSError):
                    self._root_fd = os.open(self.root, O_FOLDER)

    def _root(self) -> int:
        with self._lock:
            if self._root_fd is None:
                try:
                    self._root_fd = os.open(self.root, O_FOLDER)
                except FileNotFoundError:
                    self._make(self.root)
                    self._root_fd = os.open(self.root, O_FOLDER)
            return self._root_fd

    def open(self, folder: str) -> int:
        """A descriptor of ``folder`` (absolute, under :attr:`root`), creating missing folders.

        Raises :class:`UnsafePathError` when a folder on the way is now a symlink or not a
        folder, and ``OSError`` for what the system refuses.
        """
        root = self.root
        if folder == root:
            parts: list[str] = []
        elif folder.startswith(root if root == "/" else root + "/"):
            parts = folder[len(root) :].strip("/").split("/")
        else:
            raise UnsafePathError(f"refusing to write in {folder}: it is outside {root}")
        fd = os.dup(self._root())  # (closed by the caller, like the folders below)
        current = root.rstrip("/")
        try:
            for part in parts:
                current = f"{current}/{part}"
                child = self._open_child(fd, part, current)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_child(self, parent_fd: int, name: str, path: str) -> int:
        for _ in range(TEMP_ATTEMPTS):
            try:
                return os.open(name, O_FOLDER, dir_fd=parent_fd)
            except FileNotFoundError:
                with self._lock:
                    try:
                        os.mkdir(name, dir_fd=parent_fd)
                        self._names.add(path)
                    except FileExistsError:
                        pass  # made meanwhile by another download of the run
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"refusing to write under {path}: it is no longer a folder"
                        " (a symbolic link or a file took its place)"
                    ) from exc
                raise
        raise FileNotFoundError(errno.ENOENT, "removed while being created", path)

    def _make(self, folder: str) -> None:
        """Create ``folder`` and its missing parents, remembering each one created here (the
        caller holds the lock)."""
        missing: list[str] = []
        current = folder
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for name in reversed(missing):
            try:
                os.mkdir(name)
            except FileExistsError:
                continue  # made meanwhile by another process
            self._names.add(name)

    def remove_empty(self, folder: str) -> None:
        """Remove the folders this run created among ``folder`` and its parents below ``root``,
        deepest first, as long as they are empty."""
        self._remove_created(folder, stop=self.root)

    def _remove_created(self, folder: str, *, stop: str | None) -> None:
        with self._lock:
            if not self._names:
                return
            current = folder
            while current != stop:
                if current in self._names:
                    try:
                        os.rmdir(current)
                    except OSError:
                        return  # not empty: another download uses it
                    self._names.discard(current)
                parent = os.path.dirname(current)
                if parent == current:
                    return
                current = parent
