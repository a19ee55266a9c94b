"""The cache's bodies: content-addressed files, and the writer that brings one in.

Rules: a body is named by the SHA-256 of its bytes (``bodies/ab/abcdef...``), so two responses
with the same body share one file; a name that is not a SHA-256 in hexadecimal is never used as a
path; a body streams into ``tmp/`` (a new file, created exclusively, mode 0600, locked with
``flock`` until it is renamed or discarded) and is renamed into ``bodies/`` only when complete,
by :mod:`webclient._storage` inside the write transaction that inserts its row; a writer past its
size limit, or on a disk that refuses a write, drops the body quietly (``dropped``, ``fault``);
temporary bodies of killed runs -- older than :data:`TEMP_STALE` and not locked -- are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ._shared.tempfiles import create_private
from .errors import CacheError

if TYPE_CHECKING:
    import hashlib

BODIES = "bodies"
TMP = "tmp"
#: Seconds after its last write a temporary body of a dead run is removed: a live writer holds
#: its lock anyway, the age only spares a file created a moment ago and not locked yet.
TEMP_STALE = 300.0
#: Bytes read at a time when a stored body is hashed.
_HASH_CHUNK = 1024 * 1024
#: A body's name: the SHA-256 of its bytes; anything else in a row is never used as a path.
SHA_NAME = re.compile(r"[0-9a-f]{64}\Z")


def _remove_if_abandoned(item: os.DirEntry[str], now: float) -> None:
    """Delete a temporary body left by a dead run: older than TEMP_STALE and not locked."""
    info = item.stat(follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < TEMP_STALE:
        return
    fd = os.open(item.path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a live writer holds it
        if os.fstat(fd).st_ino == info.st_ino:
            os.unlink(item.path)
    finally:
        os.close(fd)


def tidy_temporaries(tmp: Path, now: float) -> None:
    """Remove the temporary bodies of killed runs: old, and not locked by a live writer."""
    with contextlib.suppress(OSError), os.scandir(tmp) as found:
        for item in found:
            if item.name.startswith("body-"):
                with contextlib.suppress(OSError):
                    _remove_if_abandoned(item, now)


def temporaries(tmp: Path) -> tuple[int, int]:
    """How many files ``tmp/`` holds, and their size."""
    count = size = 0
    with contextlib.suppress(OSError), os.scandir(tmp) as found:
        for item in found:
            with contextlib.suppress(OSError):
                size += item.stat(follow_symlinks=False).st_size
                count += 1
    return count, size


def body_file(bodies: str, sha: str) -> str:
    """Where the body of this SHA-256 lives (``bodies/ab/abcdef...``)."""
    return f"{bodies}/{sha[:2]}/{sha}"


class BodyWriter:
    """A body on its way into the cache: hashed and counted while written to ``tmp/``.

    ``limit`` is the largest body worth keeping; past it the writer gives up quietly (``dropped``)
    instead of filling the disk with something that would be evicted at once. A disk that fails
    a write drops the body too, and ``fault`` says why. The file is locked (``flock``) from its
    creation until :meth:`release`, so that no other process takes it for a leftover.
    """

    def __init__(self, folder: Path, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.dropped = False
        self.fault: OSError | None = None
        self._hash = _sha256()
        self._fd: int | None = None
        name = ""
        try:
            self._fd, name = create_private(os.fspath(folder), "body-")
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if self._fd is not None:
                os.close(self._fd)
                with contextlib.suppress(OSError):
                    os.unlink(name)
            raise CacheError(f"cannot write to the cache folder: {exc}") from exc
        self.path = Path(name)
        self._named = True

    @classmethod
    def refused(cls, fault: OSError) -> BodyWriter:
        """A writer that stores nothing, for a disk that refused to create the file."""
        writer = cls.__new__(cls)
        writer.limit = 0
        writer.size = 0
        writer.dropped = True
        writer.fault = fault
        writer._hash = _sha256()
        writer._fd = None
        writer.path = Path(os.devnull)
        writer._named = False
        return writer

    def write(self, data: bytes) -> None:
        if self._fd is None or self.dropped:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.discard()
            self.dropped = True
            return
        self._hash.update(data)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # A full disk must not fail the download; the response just is not stored.
            self.fault = exc
            self.discard()
            self.dropped = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        """The body is complete. (Not flushed to disk: see the module docstring; the file stays
        open and locked until it is renamed into ``bodies/`` or discarded.)"""

    def release(self) -> None:
        """Close the file and so drop its lock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        if self._named:
            # Unlinked before the lock goes, so no cleaner ever sees it unlocked.
            self._named = False
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.release()


def size_problem(info: os.stat_result, size: int) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "is not a file"
    if info.st_size != size:
        return f"is {info.st_size} bytes, not the {size} recorded"
    return None


def _sha256() -> hashlib._Hash:
    """A new SHA-256 (hashlib, a few ms to import, is loaded only by a run that stores or
    verifies a body: one served from the cache needs only its size checked)."""
    import hashlib

    return hashlib.sha256()


def file_sha256(file: BinaryIO) -> str:
    digest = _sha256()
    while chunk := file.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def body_files(bodies: str) -> Iterator[str]:
    """The paths in ``bodies/`` named as this program names bodies (``ab/abcdef...``)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(bodies) as shelves:
        for shelf in shelves:
            if len(shelf.name) != 2 or not shelf.is_dir(follow_symlinks=False):
                continue
            with os.scandir(shelf.path) as files:
                for item in files:
                    if (
                        SHA_NAME.match(item.name)
                        and item.name.startswith(shelf.name)
                        and item.is_file(follow_symlinks=False)
                    ):
                        yield item.path
