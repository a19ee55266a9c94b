"""Where GET bodies go: names checked against the output folder, folders opened without following
symbolic links, bodies written to temporary files and renamed into place once complete.

Rules: a name that resolves outside the output folder is refused before anything is sent; each
folder on the way is opened component by component with ``O_NOFOLLOW`` relative to its parent, and
the temporary file is created (``O_EXCL``, mode 0600, locked while written) and renamed relative to
that descriptor, so a folder swapped for a symlink meanwhile cannot redirect a body; a body that
does not arrive whole leaves neither its temporary file nor the folders created for it (when
empty); a complete body gets the mode any new file gets (``0o666 & ~umask``); temporary files of
killed runs (older than :data:`STALE_TEMP_AGE`, unlocked) are removed by the next run.

Resuming: a download from the network of :data:`RESUME_MIN_SIZE` bytes or more (by its
Content-Length) whose response carries a validator ``If-Range`` may use (a strong ETag, else a
Last-Modified at least a second older than its Date) is written to
``<name>.part`` beside its destination (mode 0600, locked while written) with the URL and the
validator in ``<name>.part.meta``, written first; when the body does not arrive whole both stay,
and the next run asks for the rest (``Range`` + ``If-Range``). A ``.part`` is only ever touched
when its ``.meta`` names the same URL (a user's own ``notes.part`` is not ours), and one older than
:data:`PART_MAX_AGE` is removed instead of resumed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._freshness import HeaderList, header_value
from ._shared.httpdate import parse_http_date
from .errors import LocalFileError, UnsafePathError


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


#: A control character, which no output name may hold.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
#: Distinguishes the temporary files of this process from those of others.
_TEMP_TAG = f"{os.getpid():x}{os.urandom(3).hex()}"
_temp_numbers = itertools.count()
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


#: Opens one folder of a path, never through a symbolic link.
_O_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
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
    for _ in range(100):
        name = f"{prefix}{_TEMP_TAG}{next(_temp_numbers):x}.part"
        try:
            fd = os.open(name, _O_CREATE, 0o600, dir_fd=folder_fd)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # a file system without locks: the age still protects
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, name
    raise FileExistsError("no unused temporary name")


def remove_stale_temps(folder: str, *, now: float | None = None) -> int:
    """Remove the temporary files of killed runs from ``folder`` (see :data:`STALE_TEMP_AGE`);
    how many were removed. Files another process holds locked are left alone."""
    limit = (time.time() if now is None else now) - STALE_TEMP_AGE
    try:
        folder_fd = os.open(folder, _O_FOLDER)
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
            removed += _remove_unlocked(folder_fd, name)
    except OSError:
        pass  # an unreadable folder: the downloads into it report their own errors
    finally:
        os.close(folder_fd)
    return removed


def _remove_unlocked(folder_fd: int, name: str) -> int:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=folder_fd
        )
    except OSError:
        return 0
    try:
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
                    self._root_fd = os.open(self.root, _O_FOLDER)

    def _root(self) -> int:
        with self._lock:
            if self._root_fd is None:
                try:
                    self._root_fd = os.open(self.root, _O_FOLDER)
                except FileNotFoundError:
                    self._make(self.root)
                    self._root_fd = os.open(self.root, _O_FOLDER)
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
        for _ in range(_TEMP_ATTEMPTS):
            try:
                return os.open(name, _O_FOLDER, dir_fd=parent_fd)
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


#: An interrupted download older than this is removed rather than resumed: a day is enough to
#: come back to a failed batch, and short enough not to hoard disk space for one never rerun.
PART_MAX_AGE = 24 * 60 * 60
#: Smallest body written where a later run can resume it: a smaller one costs about as much to
#: fetch again as to resume, and each resumable body costs its record (create, write, unlink),
#: measurable in a batch of many small files.
RESUME_MIN_SIZE = 1024 * 1024
#: ``<name>.part`` holds the body so far; ``<name>.part.meta`` its URL and validator.
PART_SUFFIX = ".part"
META_SUFFIX = ".part.meta"
#: Largest metadata record read: a URL and a validator, never near this.
_META_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Partial:
    """An interrupted download found beside its destination: ``size`` bytes, and the
    validator of the response they came from (for ``If-Range``)."""

    size: int
    validator: str

    def request_headers(self) -> tuple[tuple[str, str], ...]:
        """What asks for the rest, only if the resource is still the same (RFC 9110 §14.2,
        §13.1.5): otherwise the server sends all of it with a 200."""
        return (("Range", f"bytes={self.size}-"), ("If-Range", self.validator))


@dataclass(frozen=True)
class Resume:
    """How an :class:`OutputFile` uses ``<name>.part``: ``offset`` bytes of it are kept (0: it
    starts afresh); ``validator`` (None: the response has none) lets a later run resume it."""

    url: str
    validator: str | None
    offset: int = 0


def if_range_validator(headers: HeaderList) -> str | None:
    """The validator ``If-Range`` may carry for a response: a strong ETag, else a
    Last-Modified that is strong because it is a second or more older than the Date
    (RFC 9110 §13.1.5, §8.8.2.2); None when there is neither."""
    etag = header_value(headers, "etag")
    if etag is not None and etag.strip().startswith('"'):
        return etag.strip()
    modified = header_value(headers, "last-modified")
    date = header_value(headers, "date")
    now = time.time()
    modified_at = parse_http_date(modified, now)
    date_at = parse_http_date(date, now)
    if modified is None or modified_at is None or date_at is None or date_at - modified_at < 1:
        return None
    return modified.strip()


def content_range_start(value: str | None) -> int | None:
    """The first byte position of ``Content-Range: bytes FIRST-LAST/LENGTH``; None otherwise."""
    match = re.fullmatch(r"\s*bytes\s+([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)\s*", value or "")
    if match is None or int(match.group(2)) < int(match.group(1)):
        return None
    return int(match.group(1))


def has_partials(folder: str) -> bool:
    """Whether ``folder`` holds any ``.part.meta`` record: one listing spares a batch of many
    files a lookup per file when there is nothing to resume (the usual case)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.name.endswith(META_SUFFIX) for e in entries)
    except OSError:
        return False  # not there (yet), or unreadable: nothing to resume from it


def find_partial(destination: Path, url: str, *, now: float | None = None) -> Partial | None:
    """The interrupted download of ``url`` beside ``destination``, if there is a usable one."""
    folder, name = os.path.dirname(destination), destination.name
    meta = _read_meta(os.path.join(folder, name + META_SUFFIX))
    validator = None if meta is None else meta.get("validator")
    if meta is None or meta.get("url") != url or not isinstance(validator, str):
        return None
    try:
        st = os.stat(os.path.join(folder, name + PART_SUFFIX), follow_symlinks=False)
    except OSError:
        return None
    limit = (time.time() if now is None else now) - PART_MAX_AGE
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_mtime < limit:
        return None
    return Partial(st.st_size, validator)


def _read_meta(path: str, folder_fd: int | None = None) -> dict[str, object] | None:
    import json

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as file:
            data = json.loads(file.read(_META_LIMIT))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def forget_partial(destination: Path) -> None:
    """Remove the ``.part`` of ``destination`` and its record (a download that restarted)."""
    folder, name = os.path.dirname(destination), destination.name
    for suffix in (PART_SUFFIX, META_SUFFIX):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name + suffix))


def remove_stale_parts(folder: str, *, now: float | None = None) -> int:
    """Remove the interrupted downloads in ``folder`` older than :data:`PART_MAX_AGE` (those
    with a ``.part.meta`` record, and not locked by a live run); how many were removed."""
    limit = (time.time() if now is None else now) - PART_MAX_AGE
    try:
        folder_fd = os.open(folder, _O_FOLDER)
    except OSError:
        return 0
    removed = 0
    try:
        with os.scandir(folder_fd) as entries:
            metas = [e.name for e in entries if e.name.endswith(META_SUFFIX) and e.is_file()]
        for meta in metas:
            removed += _remove_stale_part(folder_fd, meta, limit)
    except OSError:
        pass  # an unreadable folder: the downloads into it report their own errors
    finally:
        os.close(folder_fd)
    return removed


def _remove_stale_part(folder_fd: int, meta: str, limit: float) -> int:
    part = meta[: -len(META_SUFFIX)] + PART_SUFFIX
    try:
        times = [os.stat(meta, dir_fd=folder_fd, follow_symlinks=False).st_mtime]
        with contextlib.suppress(FileNotFoundError):
            times.append(os.stat(part, dir_fd=folder_fd, follow_symlinks=False).st_mtime)
    except OSError:
        return 0
    if max(times) >= limit:
        return 0
    removed = _remove_unlocked(folder_fd, part)
    with contextlib.suppress(OSError):
        os.unlink(meta, dir_fd=folder_fd)
    return removed or 1


#: Attempts at creating a temporary file whose folder another failed download may remove.
_TEMP_ATTEMPTS = 5


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
            for attempt in range(_TEMP_ATTEMPTS):
                self._folder_fd = self._folders.open(self._folder)
                try:
                    self._fd, self._temp = self._open_part(self._folder_fd, prefix)
                    break
                except FileNotFoundError:
                    # Another failed download of the run removed the folder it had created.
                    os.close(self._folder_fd)
                    self._folder_fd = -1
                    if attempt == _TEMP_ATTEMPTS - 1:
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
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o600, dir_fd=folder_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            fd = -1  # a symlink in its place is never followed (nor removed)
        try:
            if fd < 0:
                raise BlockingIOError
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if fd >= 0:
                os.close(fd)  # another run is writing it: this one goes its own way
            self._resume = None
            self.size = 0
            return create_temp(folder_fd, prefix)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < resume.offset:
                raise OSError(errno.ESTALE, f"{name} changed since the request was sent")
            self._write_meta(folder_fd, resume)
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, resume.offset)
            os.lseek(fd, resume.offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd, name

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
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(meta, flags, 0o600, dir_fd=folder_fd)
        try:
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
