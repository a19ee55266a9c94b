"""The cache on disk: an SQLite index and content-addressed body files.

Layout of the cache folder::

    CACHEDIR.TAG          marks the folder as a cache (backup tools skip it)
    index.sqlite3         one row per stored response (WAL mode, shared by processes)
    bodies/ab/abcdef...   bodies, named by the SHA-256 of their bytes
    tmp/                  bodies being received

Rules: a body streams into ``tmp/`` and is renamed into ``bodies/`` only when complete, inside
the same write transaction that inserts its row, so no reader ever sees a half-written body and
garbage collection (which also runs under the write lock) cannot delete a body a concurrent commit
is about to reference. Only these names are ever deleted. An index that is not SQLite, belongs to
another program, has another schema version or fails its integrity check is reported and rebuilt.

Faults are told apart, and only real damage rebuilds (:func:`_fault`): a full disk (ENOSPC,
EDQUOT, ``SQLITE_FULL``) means the response at hand is not stored, with one warning, and every
entry is kept; a folder or index that cannot be written (EROFS, EACCES, ``SQLITE_READONLY``) is
used read-only, with one warning: hits are served, nothing is stored, and what would have been
deleted is hidden for the rest of the run instead. A row that cannot be read (invalid JSON, a
status that is not an integer, a body name that is not a SHA-256) and a body file that cannot be
read or is not the size of its row are dropped with a warning, never raised; a body file that
cannot be removed (a folder in its place, EACCES) is left with a warning. :meth:`Storage.check`
verifies every row and body at once.

Temporaries: a body being written holds an exclusive ``flock`` on its file in ``tmp/`` until it
is renamed or discarded. Opening the cache removes ``tmp/body-*`` files older than
:data:`TEMP_STALE` whose lock can be taken (left by a killed run); live writers keep theirs.

Batches (:meth:`Storage.batch`, used for a whole run of requests): the writes of many entries
share one transaction, each inside its own savepoint, so an entry is in the index whole or not at
all; the transaction commits at the end of the batch (also when it ends with an error: what was
complete is kept), when it holds :data:`BATCH_ENTRIES` writes, and at the latest
:data:`BATCH_SECONDS` after it began (from a timer, so other processes never wait long for the
write lock). Index rows for many keys can be read in one query beforehand (:meth:`prefetch`).

Durability: bodies are not flushed to the disk one by one (no fsync) and the index runs with
``synchronous=NORMAL``. After a power failure the latest entries may be lost, or point to a body
that is missing or shorter than recorded; such an entry is found out by its size when next used,
dropped, and fetched again: a cache miss, never a wrong answer from a half-written body.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from ._freshness import VaryKey
from .errors import CacheError

#: Written into the SQLite header, so a database of another program is recognised as foreign.
APPLICATION_ID = 0x57434331  # "WCC1"
SCHEMA_VERSION = 1
INDEX_NAME = "index.sqlite3"
BODIES = "bodies"
TMP = "tmp"
TAG_NAME = "CACHEDIR.TAG"
TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file marks the folder as the cache of webclient; it can be deleted at any time.\n"
)
#: Seconds SQLite waits for another process's write lock before reporting the cache busy.
LOCK_TIMEOUT = 10.0
#: Seconds to keep retrying the switch to WAL while another process opens a new index too.
WAL_SWITCH_WAIT = 5.0
#: A batch commits once it holds this many writes...
BATCH_ENTRIES = 500
#: ...or this many seconds after its first write, whichever comes first.
BATCH_SECONDS = 0.25
#: Keys per query when prefetching index rows (below SQLite's limit on parameters).
_PREFETCH_CHUNK = 500
#: Seconds after its last write a temporary body of a dead run is removed: a live writer holds
#: its lock anyway, the age only spares a file created a moment ago and not locked yet.
TEMP_STALE = 300.0
#: Bytes read at a time when a stored body is hashed.
_HASH_CHUNK = 1024 * 1024
#: A body's name: the SHA-256 of its bytes; anything else in a row is never used as a path.
_SHA_NAME = re.compile(r"[0-9a-f]{64}\Z")


class _Fault(enum.Enum):
    """What a failed disk or SQLite operation means for the cache."""

    FULL = "full"
    READ_ONLY = "read-only"
    BUSY = "busy"
    DAMAGED = "damaged"
    OTHER = "other"


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: SQLite primary result codes (the low byte of the extended code).
_SQLITE_FAULTS = {
    5: _Fault.BUSY,  # SQLITE_BUSY
    6: _Fault.BUSY,  # SQLITE_LOCKED
    8: _Fault.READ_ONLY,  # SQLITE_READONLY
    11: _Fault.DAMAGED,  # SQLITE_CORRUPT
    13: _Fault.FULL,  # SQLITE_FULL
    26: _Fault.DAMAGED,  # SQLITE_NOTADB
}


#: SQLITE_IOERR, SQLITE_CANTOPEN.
_SQLITE_TRY_READING = frozenset({10, 14})


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _fault(exc: BaseException) -> _Fault:
    """Classify an error, so that only real damage leads to a rebuild."""
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return _Fault.FULL
        return _Fault.READ_ONLY if exc.errno in _READ_ONLY_ERRNOS else _Fault.OTHER
    code = _sqlite_code(exc)
    if code is not None:
        return _SQLITE_FAULTS.get(code, _Fault.OTHER)
    text = str(exc)
    if "locked" in text or "busy" in text:
        return _Fault.BUSY
    return _Fault.DAMAGED if "not a database" in text or "malformed" in text else _Fault.OTHER


class _Unwritable(CacheError):
    """A write that the disk refused (full, or read-only); already reported with a warning."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    vary TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    headers TEXT NOT NULL,
    body_sha TEXT NOT NULL,
    body_size INTEGER NOT NULL,
    request_time REAL NOT NULL,
    response_time REAL NOT NULL,
    last_used REAL NOT NULL,
    UNIQUE (key, vary)
);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries (last_used);
CREATE INDEX IF NOT EXISTS entries_by_body ON entries (body_sha);
"""


class Entry:
    """One stored response."""

    __slots__ = (
        "body_sha",
        "body_size",
        "headers",
        "id",
        "key",
        "reason",
        "request_time",
        "response_time",
        "status",
        "vary",
    )

    def __init__(
        self,
        *,
        id: int,
        key: str,
        vary: VaryKey,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...],
        body_sha: str,
        body_size: int,
        request_time: float,
        response_time: float,
    ) -> None:
        self.id = id
        self.key = key
        self.vary = vary
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body_sha = body_sha
        self.body_size = body_size
        self.request_time = request_time
        self.response_time = response_time

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Entry(id={self.id!r}, key={self.key!r}, status={self.status!r})"


@dataclass(frozen=True, slots=True)
class CacheInfo:
    folder: Path
    entries: int
    bodies: int
    size: int
    #: Files in ``tmp/``: bodies being received, or left by a run that was killed.
    temp_files: int = 0
    temp_size: int = 0
    #: The cache could not be written when opened (see the module docstring).
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What :meth:`Storage.check` verified and what it dropped."""

    rows: int
    bodies: int
    dropped_rows: int
    removed_files: int
    problems: tuple[str, ...]


#: Distinguishes the temporary files of this process from those of others.
_TEMP_TAG = f"{os.getpid():x}{os.urandom(3).hex()}"
_temp_numbers = iter(range(1 << 62))
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """Turn on WAL, waiting out another process that has the new index open at that moment.

    The switch needs the index to itself, and SQLite answers "locked" at once rather than
    waiting when another connection reads it; retrying briefly is the documented remedy.
    """
    deadline = time.monotonic() + WAL_SWITCH_WAIT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _disk_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has no block left (for a clearer warning)."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


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
        self._hash = hashlib.sha256()
        try:
            self._fd: int | None = None
            for _ in range(100):
                name = f"{folder}/body-{_TEMP_TAG}{next(_temp_numbers):x}"
                try:
                    self._fd = os.open(name, _O_CREATE, 0o600)
                    break
                except FileExistsError:
                    continue
            else:
                raise FileExistsError(f"no unused temporary name in {folder}")
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
        writer._hash = hashlib.sha256()
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


class _BadRow(Exception):
    """A row of the index that cannot be read; the message says which field."""


def _pairs(text: object, field: str, *, optional: bool = False) -> tuple[tuple[str, str], ...]:
    """A JSON list of ``[name, value]`` pairs of strings (``value`` may be null when optional)."""
    try:
        items = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        items = None
    if not isinstance(items, list):
        raise _BadRow(f"{field} is not a JSON list")
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and (isinstance(item[1], str) or (optional and item[1] is None))
        ):
            raise _BadRow(f"{field} holds something other than name/value pairs")
    return tuple((n, v) for n, v in items)


def _number(value: object, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise _BadRow(f"{field} is not a number")


def _entry(row: tuple[object, ...]) -> Entry:
    """The row as an Entry; _BadRow when any field is not what this program writes.

    SQLite keeps whatever type was written into a column, so every value is checked here, and
    a body name is used as a path only once it is a SHA-256 in hexadecimal.
    """
    (id_, key, vary, status, reason, headers, sha, size, req_t, resp_t) = row
    if type(status) is not int or not 100 <= status <= 999:
        raise _BadRow("its status is not a three-digit integer")
    if type(size) is not int or size < 0:
        raise _BadRow("its body size is not a whole number")
    if not isinstance(sha, str) or not _SHA_NAME.match(sha):
        raise _BadRow("its body name is not a SHA-256")
    if not isinstance(key, str) or not isinstance(reason, str):
        raise _BadRow("its key or reason is not text")
    return Entry(
        id=int(id_),  # type: ignore[call-overload]
        key=key,
        vary=_pairs(vary, "its Vary values", optional=True),
        status=status,
        reason=reason,
        headers=_pairs(headers, "its header fields"),
        body_sha=sha,
        body_size=size,
        request_time=_number(req_t, "its request time"),
        response_time=_number(resp_t, "its response time"),
    )


_COLUMNS = (
    "SELECT id, key, vary, status, reason, headers, body_sha, body_size, request_time,"
    " response_time FROM entries"
)
_ORDER = " ORDER BY response_time DESC, id DESC"
_SELECT_BY_KEY = _COLUMNS + " WHERE key = ?" + _ORDER


class Storage:
    """The cache folder; every method is safe from several threads and processes at once.

    ``warn`` receives one sentence for each kind of problem that was repaired or worked around
    (a rebuilt index, a dropped row, a full disk, a read-only folder), once per kind.
    """

    def __init__(self, folder: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self._bodies = os.path.join(folder, BODIES)
        self._warn_callback = warn or (lambda message: None)
        self._warned: set[str] = set()
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        #: Nothing is written: the folder or its index refused a write (see the module docstring).
        self.read_only = False
        #: Rows and keys deleted while read-only: hidden from lookups for the rest of the run.
        self._hidden_ids: set[int] = set()
        self._hidden_keys: set[str] = set()
        #: Open batches (nested ``batch()`` calls); writes share a transaction while above 0.
        self._batches = 0
        #: Writes in the open batch transaction, when it began, and its commit timer.
        self._batch_writes = 0
        self._batch_started = 0.0
        self._timer: threading.Timer | None = None
        #: Total body size, known while a write transaction is open (None: ask the index).
        self._size: int | None = None
        #: Rows read ahead by ``prefetch``, by key; dropped for a key when it is written.
        self._prefetched: dict[str, list[Entry]] = {}
        #: last_used values not written yet (applied with the next write, or at the end).
        self._touched: dict[int, float] = {}
        try:
            self._open()
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open the cache index in {folder}: {exc}") from exc
        except OSError as exc:
            raise CacheError(f"cannot use the cache folder {folder}: {exc.strerror}") from exc

    def _warn_once(self, kind: str, message: str) -> None:
        """One warning per kind of problem: a thousand bad rows are one line, not a thousand."""
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        self._warn_callback(message)

    # -- opening, checking, rebuilding -----------------------------------------------------------

    def _open(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise CacheError(f"the cache folder {self.folder} is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        problem = self._connect()
        if problem is not None:
            self._warn_once("rebuilt", f"the cache in {self.folder} {problem}; rebuilding it")
            self._rebuild()
            problem = self._connect()
            if problem is not None:
                raise CacheError(f"the cache in {self.folder} {problem}, even after a rebuild")
        if self.read_only:
            return
        try:
            for name in (BODIES, TMP):
                path = self.folder / name
                if path.exists() and not path.is_dir():
                    path.unlink()
                path.mkdir(exist_ok=True)
            tag = self.folder / TAG_NAME
            if not tag.exists():
                tag.write_text(TAG_TEXT, encoding="ascii")
        except OSError as exc:
            if _fault(exc) not in (_Fault.READ_ONLY, _Fault.FULL):
                raise
            self._become_read_only(exc)
            return
        self._tidy_temporaries(time.time())

    def _connect(self) -> str | None:
        """Open the index; a sentence saying what is wrong with it, or None when it is usable.

        Only damage is a sentence (the caller rebuilds); a disk that is full or cannot be written
        opens the index read-only, and anything else is a CacheError that leaves the files alone.
        """
        index = self.folder / INDEX_NAME
        if index.exists() and not index.is_file():
            return "has a folder where its index should be"
        try:
            db = sqlite3.connect(
                index, timeout=LOCK_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            return self._open_failed(exc)
        try:
            problem = self._check_index(db, write=True)
        except sqlite3.Error as exc:
            db.close()
            return self._open_failed(exc)
        if problem is not None:
            db.close()
            return problem
        self._db = db
        return None

    def _open_failed(self, exc: sqlite3.Error) -> str | None:
        fault = _fault(exc)
        if fault is _Fault.DAMAGED:
            return f"has a damaged index ({exc})"
        if fault is _Fault.BUSY:
            # Another process holds it: that is no damage, and rebuilding would wreck it.
            raise CacheError(f"the cache index in {self.folder} is busy: {exc}") from exc
        if fault in (_Fault.READ_ONLY, _Fault.FULL) or (
            # An existing index whose journal or shared-memory file cannot be created or grown
            # (an unwritable folder, a full disk): reading it may still work.
            _sqlite_code(exc) in _SQLITE_TRY_READING and (self.folder / INDEX_NAME).is_file()
        ):
            return self._connect_read_only(exc)
        raise CacheError(f"cannot open the cache index in {self.folder}: {exc}") from exc

    def _connect_read_only(self, cause: BaseException) -> str | None:
        """Open the index without writing to it: read-only mode, else as an immutable file (a
        WAL index on read-only media, whose shared-memory file cannot be made)."""
        index = quote(os.fspath(self.folder / INDEX_NAME))
        last: sqlite3.Error | None = None
        for mode in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(
                    f"file:{index}?{mode}",
                    uri=True,
                    timeout=LOCK_TIMEOUT,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                last = exc
                continue
            try:
                problem = self._check_index(db, write=False)
            except sqlite3.Error as exc:
                db.close()
                last = exc
                continue
            if problem is not None:
                db.close()
                # Damaged, but it cannot be rebuilt here: there is no cache to use.
                raise CacheError(f"the cache in {self.folder} {problem} and cannot be written")
            self._db = db
            self._become_read_only(cause)
            return None
        raise CacheError(f"cannot open the cache index in {self.folder}: {last}") from cause

    def _check_index(self, db: sqlite3.Connection, *, write: bool) -> str | None:
        """Create a new index, or check an existing one: a sentence when it must be rebuilt."""
        # One read transaction, so the three answers describe the same moment: read apart,
        # another process creating the index in between looked like a foreign database
        # (tables, but no application id yet) and was "rebuilt" under its feet.
        db.execute("BEGIN")
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            # A failed read may have ended the transaction already; the error says why.
            if db.in_transaction:
                db.execute("COMMIT")
        if app_id == 0 and tables == 0:
            if not write:
                return "has no index yet"
            self._create(db)
        elif app_id != APPLICATION_ID:
            return "has an index that belongs to another program"
        elif version != SCHEMA_VERSION:
            return f"has an index of another version ({version})"
        elif db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            return "has a damaged index"
        if write:
            _switch_to_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            # A write that changes nothing: SQLite opens a file it may not write without a word
            # and says "readonly" only at the first write, so ask now rather than mid-run.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        return None

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it between our check and taking the lock.
            if db.execute("PRAGMA application_id").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _become_read_only(self, cause: BaseException) -> None:
        self.read_only = True
        if _fault(cause) is _Fault.FULL or _disk_full(self.folder):
            reason = "its disk is full"
        else:
            reason = f"it cannot be written: {getattr(cause, 'strerror', None) or cause}"
        self._warn_once(
            "read-only",
            f"the cache in {self.folder} is used read-only ({reason}); nothing will be stored",
        )

    def _tidy_temporaries(self, now: float) -> None:
        """Remove the temporary bodies of killed runs: old, and not locked by a live writer."""
        with contextlib.suppress(OSError), os.scandir(self.folder / TMP) as found:
            for item in found:
                if item.name.startswith("body-"):
                    with contextlib.suppress(OSError):
                        _remove_if_abandoned(item, now)

    def _temporaries(self) -> tuple[int, int]:
        """How many files ``tmp/`` holds, and their size."""
        count = size = 0
        with contextlib.suppress(OSError), os.scandir(self.folder / TMP) as found:
            for item in found:
                with contextlib.suppress(OSError):
                    size += item.stat(follow_symlinks=False).st_size
                    count += 1
        return count, size

    def _rebuild(self) -> None:
        """Delete our own files (and nothing else) so the next open starts empty."""
        index_files = [INDEX_NAME + suffix for suffix in ("", "-wal", "-shm", "-journal")]
        for name in [*index_files, BODIES, TMP]:
            path = self.folder / name
            if path.is_dir() and not path.is_symlink():
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- transactions ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        """A read or write transaction; inside a batch, a write is a savepoint of the batch's."""
        with self._lock:
            db = self._db
            if db is None:
                raise CacheError("the cache is closed")
            if self._batches and (write or db.in_transaction):
                yield from self._in_batch(db, write)
                return
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    if write:
                        self._write_touched(db)
                    yield db
                except BaseException:
                    self._size = None
                    # SQLite may have rolled back by itself (a full disk).
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                self._size = None
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def _in_batch(self, db: sqlite3.Connection, write: bool) -> Iterator[sqlite3.Connection]:
        if not write:
            yield db
            return
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
                self._size = None
                self._batch_writes = 0
                self._batch_started = time.monotonic()
                self._start_timer()
            db.execute("SAVEPOINT entry")
            try:
                yield db
            except BaseException:
                self._size = None
                # SQLite may have rolled back the whole transaction by itself (a full disk).
                if db.in_transaction:
                    db.execute("ROLLBACK TO entry")
                    db.execute("RELEASE entry")
                raise
            db.execute("RELEASE entry")
            self._batch_writes += 1
            if (
                self._batch_writes >= BATCH_ENTRIES
                or time.monotonic() - self._batch_started >= BATCH_SECONDS
            ):
                self._commit_batch(db)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> CacheError:
        """The error to raise for a failed index or file operation (see the module docstring):
        a full or read-only disk is warned about once and raised as :class:`_Unwritable`, which
        the write methods turn into "not stored"."""
        fault = _fault(exc)
        if fault is _Fault.FULL:
            self._warn_once(
                "full",
                f"the disk of the cache in {self.folder} is full; responses are not stored"
                " until there is room (stored ones are kept)",
            )
            return _Unwritable(f"the disk of the cache in {self.folder} is full")
        if fault is _Fault.READ_ONLY:
            self._become_read_only(exc)
            return _Unwritable(f"the cache in {self.folder} cannot be written")
        if isinstance(exc, OSError):
            return CacheError(f"the cache folder failed: {exc.strerror or exc}")
        return CacheError(f"the cache index failed: {exc}")

    def _start_timer(self) -> None:
        timer = threading.Timer(BATCH_SECONDS, self._commit_from_timer)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _commit_from_timer(self) -> None:
        with self._lock:
            db = self._db
            if db is None or not db.in_transaction or self._timer is None:
                return
            with contextlib.suppress(sqlite3.Error):
                try:
                    self._commit_batch(db)
                except sqlite3.Error as exc:
                    self._failed(exc)  # warns once when the disk is full or read-only
                    raise

    def _commit_batch(self, db: sqlite3.Connection) -> None:
        """Commit the batch transaction (the caller holds the lock)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._size = None
        if db.in_transaction:
            self._write_touched(db)
            db.execute("COMMIT")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Writes share transactions until the end (see the module docstring).

        Whatever happens inside, every write that completed is committed at the end; a failure
        of the final commit is reported as a CacheError.
        """
        with self._lock:
            self._batches += 1
        try:
            yield
        finally:
            with self._lock:
                self._batches -= 1
                if self._batches == 0:
                    self._prefetched.clear()
                    self._flush_batch()

    def _flush_batch(self) -> None:
        db = self._db
        if db is None:
            return
        try:
            if db.in_transaction:
                self._commit_batch(db)
            elif self._touched:
                db.execute("BEGIN IMMEDIATE")
                try:
                    self._write_touched(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            error = self._failed(exc)
            if not isinstance(error, _Unwritable):
                raise error from exc

    def _write_touched(self, db: sqlite3.Connection) -> None:
        if self._touched:
            touched, self._touched = self._touched, {}
            db.executemany(
                "UPDATE entries SET last_used = ? WHERE id = ?",
                [(now, entry_id) for entry_id, now in touched.items()],
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._flush_batch()
                except CacheError:
                    pass
                finally:
                    if self._timer is not None:
                        self._timer.cancel()
                        self._timer = None
                    self._db.close()
                    self._db = None

    # -- bodies ----------------------------------------------------------------------------------

    def body_path(self, sha: str) -> Path:
        return Path(self._body_file(sha))

    def _body_file(self, sha: str) -> str:
        return f"{self._bodies}/{sha[:2]}/{sha}"

    def new_body(self, limit: int) -> BodyWriter:
        """A writer into ``tmp/``; one already dropped (``fault`` set) when the disk refuses."""
        if self.read_only:
            return BodyWriter.refused(OSError(errno.EROFS, os.strerror(errno.EROFS)))
        try:
            return BodyWriter(self.folder / TMP, limit)
        except CacheError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and _fault(cause) in (_Fault.FULL, _Fault.READ_ONLY):
                return BodyWriter.refused(cause)
            raise

    def write_failed(self, fault: OSError) -> None:
        """Report (once per kind) why a body could not be written into ``tmp/``."""
        error = self._failed(fault)
        if not isinstance(error, _Unwritable):
            self._warn_once("body-write", f"cannot write a body into the cache: {error}")

    def open_body(self, entry: Entry) -> BinaryIO:
        """The stored body; CacheError when it is gone or not the size recorded."""
        path = self.body_path(entry.body_sha)
        try:
            file = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        except OSError as exc:
            raise CacheError(f"a stored body is missing: {path.name}") from exc
        if os.fstat(file.fileno()).st_size != entry.body_size:
            file.close()
            raise CacheError(f"a stored body has the wrong size: {path.name}")
        return file

    def read_body(self, entry: Entry) -> bytes:
        """The whole stored body (for small ones); CacheError when it is gone or not the size
        recorded."""
        sha = entry.body_sha
        try:
            fd = os.open(self._body_file(sha), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise CacheError(f"a stored body is missing: {sha}") from exc
        try:
            data = os.read(fd, entry.body_size + 1)
        except OSError as exc:
            raise CacheError(f"a stored body cannot be read: {sha}") from exc
        finally:
            os.close(fd)
        if len(data) != entry.body_size:
            raise CacheError(f"a stored body has the wrong size: {sha}")
        return data

    def body_ok(self, entry: Entry) -> bool:
        return self.body_problem(entry) is None

    def body_problem(self, entry: Entry, *, verify: bool = False) -> str | None:
        """What is wrong with an entry's body file, or None: it must be a regular file of the
        recorded size and, with ``verify``, have the SHA-256 it is named by."""
        path = self._body_file(entry.body_sha)
        try:
            if not verify:
                return _size_problem(os.stat(path), entry.body_size)
            with open(path, "rb") as file:
                problem = _size_problem(os.fstat(file.fileno()), entry.body_size)
                if problem is None and _file_sha256(file) != entry.body_sha:
                    problem = "does not match its SHA-256 (it was changed on disk)"
                return problem
        except FileNotFoundError:
            return "is missing"
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"

    def drop_damaged(self, entry: Entry, problem: str) -> None:
        """Drop an entry whose body cannot be served, with a warning (once per run)."""
        self._warn_once(
            "damaged-body",
            f"a body in the cache {problem}; dropped its entry ({entry.key})",
        )
        self._drop([entry.id])

    def _drop(self, ids: list[int]) -> None:
        """Delete rows, or hide them for this run when they cannot be deleted."""
        try:
            self.delete(ids)
        except CacheError:
            with self._lock:
                self._hidden_ids.update(ids)

    # -- entries ---------------------------------------------------------------------------------

    def entries(self, key: str) -> list[Entry]:
        """Every stored response for a cache key, newest first."""
        with self._lock:
            found = self._prefetched.get(key)
            if found is None:
                with self._transaction(write=False) as db:
                    rows = db.execute(_SELECT_BY_KEY, (key,)).fetchall()
                found = self._readable(rows)
            return [entry for entry in found if self._visible(entry)]

    def _visible(self, entry: Entry) -> bool:
        return entry.id not in self._hidden_ids and entry.key not in self._hidden_keys

    def _readable(self, rows: list[tuple[object, ...]]) -> list[Entry]:
        """The rows as entries; a row that cannot be read is dropped with a warning."""
        entries: list[Entry] = []
        bad: list[int] = []
        for row in rows:
            try:
                entries.append(_entry(row))
            except _BadRow as exc:
                self._warn_once(
                    "bad-row",
                    f"the cache in {self.folder} has an unreadable entry (row {row[0]}: {exc});"
                    " dropped it",
                )
                bad.append(int(row[0]))  # type: ignore[call-overload]
        if bad:
            self._drop(bad)
        return entries

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the rows of many keys in a few queries; :meth:`entries` answers from them until
        the batch ends or the key is written. Only inside :meth:`batch`."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        with self._lock:
            if not self._batches:
                return
            rows: list[tuple[object, ...]] = []
            with self._transaction(write=False) as db:
                for start in range(0, len(wanted), _PREFETCH_CHUNK):
                    chunk = wanted[start : start + _PREFETCH_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows += db.execute(f"{_COLUMNS} WHERE key IN ({marks}){_ORDER}", chunk)
            found: dict[str, list[Entry]] = {key: [] for key in wanted}
            for entry in self._readable(rows):
                found[entry.key].append(entry)
            self._prefetched.update(found)

    def _forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._prefetched.pop(key, None)

    def insert(
        self,
        *,
        key: str,
        vary: VaryKey,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: BodyWriter,
        request_time: float,
        response_time: float,
        now: float,
        replaces: Callable[[Entry], bool] | None = None,
    ) -> bool:
        """Publish a completed body and its row in one transaction; False when the disk refused
        it (full or read-only: already reported).

        The rows the new one replaces are read inside that write transaction, so rows another
        process stored meanwhile are seen too: the row with the same key and Vary values, every
        row of the key for which ``replaces`` says yes, and every row of the key that cannot be
        read. Their bodies are deleted when no other row uses them.
        """
        if self.read_only:
            body.discard()
            return False
        row = (
            key,
            json.dumps([list(item) for item in vary]),
            status,
            reason,
            json.dumps([list(item) for item in headers]),
            body.sha256,
            body.size,
            request_time,
            response_time,
            now,
        )
        try:
            with self._transaction(write=True) as db:
                self._forget([key])
                fresh = self._publish(db, body)
                try:
                    self._add_row(db, row, replaces)
                except BaseException:
                    # Still under the write lock: no other process can have named it meanwhile.
                    if fresh is not None:
                        with contextlib.suppress(OSError):
                            os.unlink(fresh)
                    raise
        except _Unwritable:
            return False
        finally:
            body.release()
        return True

    def _add_row(
        self,
        db: sqlite3.Connection,
        row: tuple[object, ...],
        replaces: Callable[[Entry], bool] | None,
    ) -> None:
        key, vary_text, sha = row[0], row[1], row[5]
        replaced = [
            int(old[0])
            for old in db.execute(_SELECT_BY_KEY, (key,)).fetchall()
            if old[2] == vary_text or _replaced(old, replaces)
        ]
        stale = self._delete_rows(db, replaced)
        db.execute(
            "INSERT INTO entries (key, vary, status, reason, headers, body_sha,"
            " body_size, request_time, response_time, last_used)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        self._collect(db, {k: v for k, v in stale.items() if k != sha})

    def _publish(self, db: sqlite3.Connection, body: BodyWriter) -> str | None:
        """Rename a body into ``bodies/`` (inside the write transaction); its path when no row
        named it before (to be removed again if the row is not added), else None."""
        sha = body.sha256
        target = self._body_file(sha)
        known = db.execute("SELECT 1 FROM entries WHERE body_sha = ? LIMIT 1", (sha,)).fetchone()
        try:
            try:
                os.replace(body.path, target)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(body.path, target)
        except OSError as exc:
            raise self._failed(exc) from exc
        if known is not None:
            return None
        if self._size is not None:
            self._size += body.size
        return target

    def update(
        self,
        entry_id: int,
        *,
        headers: list[tuple[str, str]],
        request_time: float,
        response_time: float,
        now: float,
    ) -> None:
        """Freshen a stored response after a 304 (not kept when the disk refuses)."""
        if self.read_only:
            return
        with contextlib.suppress(_Unwritable), self._transaction(write=True) as db:
            self._prefetched.clear()
            db.execute(
                "UPDATE entries SET headers = ?, request_time = ?, response_time = ?,"
                " last_used = ? WHERE id = ?",
                (
                    json.dumps([list(h) for h in headers]),
                    request_time,
                    response_time,
                    now,
                    entry_id,
                ),
            )

    def touch(self, entry_id: int, now: float) -> None:
        """Mark an entry used, for least-recently-used eviction (inside a batch, with the
        batch's next write)."""
        with self._lock:
            if self.read_only:
                return
            if self._batches:
                self._touched[entry_id] = now
                return
        with contextlib.suppress(_Unwritable), self._transaction(write=True) as db:
            db.execute("UPDATE entries SET last_used = ? WHERE id = ?", (now, entry_id))

    def delete(self, ids: list[int]) -> None:
        with self._lock:
            if self.read_only:
                self._hidden_ids.update(ids)
                return
        with self._transaction(write=True) as db:
            self._prefetched.clear()
            self._collect(db, self._delete_rows(db, ids))

    def delete_keys(self, keys: list[str]) -> int:
        """Drop every stored response for these keys; how many there were. (Read-only: they are
        hidden for the rest of the run instead.)"""
        with self._lock:
            if self.read_only:
                self._hidden_keys.update(keys)
                self._forget(keys)
                return 0
        try:
            with self._transaction(write=True) as db:
                self._forget(keys)
                ids = [
                    int(row[0])
                    for key in keys
                    for row in db.execute("SELECT id FROM entries WHERE key = ?", (key,))
                ]
                self._collect(db, self._delete_rows(db, ids))
        except _Unwritable:
            with self._lock:
                self._hidden_keys.update(keys)
            return 0
        return len(ids)

    def evict(self, max_size: int) -> int:
        """Drop least recently used entries until the bodies fit in ``max_size``; how many."""
        dropped = 0
        with self._lock:
            if self.read_only or (self._size is not None and self._size <= max_size):
                return 0
            with contextlib.suppress(_Unwritable), self._transaction(write=True) as db:
                if self._size is None:
                    self._size = self._total_size(db)
                if self._size <= max_size:
                    return 0
                self._prefetched.clear()
                self._write_touched(db)
                rows = db.execute("SELECT id FROM entries ORDER BY last_used, id").fetchall()
                for (entry_id,) in rows:
                    self._collect(db, self._delete_rows(db, [int(entry_id)]))
                    dropped += 1
                    if self._size <= max_size:
                        break
        return dropped

    def clear(self) -> int:
        """Drop everything; how many entries there were."""
        import shutil

        if self.read_only:
            raise CacheError(f"the cache in {self.folder} cannot be written; nothing was cleared")
        with self._transaction(write=True) as db:
            self._prefetched.clear()
            self._touched.clear()
            count = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
            db.execute("DELETE FROM entries")
            self._size = 0
            for name in (BODIES, TMP):
                shutil.rmtree(self.folder / name, ignore_errors=True)
                (self.folder / name).mkdir(exist_ok=True)
        return count

    def info(self) -> CacheInfo:
        with self._transaction(write=False) as db:
            entries = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
            bodies = int(db.execute("SELECT count(DISTINCT body_sha) FROM entries").fetchone()[0])
            size = self._total_size(db)
        temp_files, temp_size = self._temporaries()
        return CacheInfo(
            self.folder, entries, bodies, size, temp_files, temp_size, read_only=self.read_only
        )

    def check(self, *, verify: bool = True) -> CheckReport:
        """Read every row and body: drop the rows that cannot be read or whose body is missing,
        not its recorded size or (``verify``) not its SHA-256, and remove body files that no row
        names (left by a crash). Read-only: only reports."""
        with self._transaction(write=False) as db:
            rows = db.execute(_COLUMNS).fetchall()
        problems: list[str] = []
        bad: list[int] = []
        bodies: dict[tuple[str, int], str | None] = {}
        for row in rows:
            try:
                entry = _entry(row)
            except _BadRow as exc:
                bad.append(int(row[0]))
                problems.append(f"row {row[0]}: {exc}")
                continue
            body = (entry.body_sha, entry.body_size)
            if body not in bodies:
                bodies[body] = self.body_problem(entry, verify=verify)
            problem = bodies[body]
            if problem is not None:
                bad.append(entry.id)
                problems.append(f"row {entry.id} ({entry.key}): its body {problem}")
        if self.read_only:
            return CheckReport(len(rows), len(bodies), 0, 0, tuple(problems))
        if bad:
            self.delete(bad)
        removed = self._remove_unnamed_bodies()
        return CheckReport(len(rows), len(bodies), len(bad), removed, tuple(problems))

    def _remove_unnamed_bodies(self) -> int:
        """Delete the files in ``bodies/`` that no row names (under the write lock, so no body
        being published is taken for one); how many."""
        removed = 0
        with self._transaction(write=True) as db:
            named = {row[0] for row in db.execute("SELECT DISTINCT body_sha FROM entries")}
            for path in _body_files(self._bodies):
                if os.path.basename(path) in named:
                    continue
                try:
                    os.unlink(path)
                    removed += 1
                except OSError as exc:
                    self._cannot_remove(path, exc)
        return removed

    def _cannot_remove(self, path: str, exc: OSError) -> None:
        self._warn_once(
            "unremovable",
            f"cannot remove {path} from the cache ({exc.strerror or exc}); left it in place",
        )

    @staticmethod
    def _total_size(db: sqlite3.Connection) -> int:
        row = db.execute(
            "SELECT coalesce(sum(body_size), 0) FROM"
            " (SELECT DISTINCT body_sha, body_size FROM entries)"
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _delete_rows(db: sqlite3.Connection, ids: list[int]) -> dict[str, int]:
        """Delete rows; the bodies they referenced (maybe still used by other rows), with their
        sizes. A body name that is not a SHA-256 is never taken for a file."""
        shas: dict[str, int] = {}
        for entry_id in ids:
            row = db.execute(
                "SELECT body_sha, body_size FROM entries WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is not None:
                sha, size = row
                if isinstance(sha, str) and _SHA_NAME.match(sha):
                    shas[sha] = size if type(size) is int and size > 0 else 0
                db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        return shas

    def _collect(self, db: sqlite3.Connection, shas: dict[str, int]) -> None:
        """Delete the body files no row references any more (caller holds the write lock); one
        that cannot be removed is left, with a warning."""
        for sha, size in shas.items():
            if db.execute("SELECT 1 FROM entries WHERE body_sha = ? LIMIT 1", (sha,)).fetchone():
                continue
            if self._size is not None:
                self._size -= size
            path = self._body_file(sha)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._cannot_remove(path, exc)


def _replaced(row: tuple[object, ...], replaces: Callable[[Entry], bool] | None) -> bool:
    """Whether a row of the key being stored goes: ``replaces`` says so, or it is unreadable."""
    try:
        entry = _entry(row)
    except _BadRow:
        return True
    return replaces is not None and replaces(entry)


def _size_problem(info: os.stat_result, size: int) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "is not a file"
    if info.st_size != size:
        return f"is {info.st_size} bytes, not the {size} recorded"
    return None


def _file_sha256(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _body_files(bodies: str) -> Iterator[str]:
    """The paths in ``bodies/`` named as this program names bodies (``ab/abcdef...``)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(bodies) as shelves:
        for shelf in shelves:
            if len(shelf.name) != 2 or not shelf.is_dir(follow_symlinks=False):
                continue
            with os.scandir(shelf.path) as files:
                for item in files:
                    if (
                        _SHA_NAME.match(item.name)
                        and item.name.startswith(shelf.name)
                        and item.is_file(follow_symlinks=False)
                    ):
                        yield item.path
