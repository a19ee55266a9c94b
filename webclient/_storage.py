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
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


class BodyWriter:
    """A body on its way into the cache: hashed and counted while written to ``tmp/``.

    ``limit`` is the largest body worth keeping; past it the writer gives up quietly (``dropped``)
    instead of filling the disk with something that would be evicted at once.
    """

    def __init__(self, folder: Path, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.dropped = False
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
        except OSError as exc:
            raise CacheError(f"cannot write to the cache folder: {exc}") from exc
        self.path = Path(name)

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
        except OSError:
            # A full disk must not fail the download; the response just is not stored.
            self.discard()
            self.dropped = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        """Close the file; it is complete. (Not flushed to disk: see the module docstring.)"""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.path.unlink()


def _entry(row: tuple[object, ...]) -> Entry:
    (id_, key, vary, status, reason, headers, sha, size, req_t, resp_t) = row
    return Entry(
        id=int(id_),  # type: ignore[call-overload]
        key=str(key),
        vary=tuple((str(n), None if v is None else str(v)) for n, v in json.loads(str(vary))),
        status=int(status),  # type: ignore[call-overload]
        reason=str(reason),
        headers=tuple((str(n), str(v)) for n, v in json.loads(str(headers))),
        body_sha=str(sha),
        body_size=int(size),  # type: ignore[call-overload]
        request_time=float(req_t),  # type: ignore[arg-type]
        response_time=float(resp_t),  # type: ignore[arg-type]
    )


_COLUMNS = (
    "SELECT id, key, vary, status, reason, headers, body_sha, body_size, request_time,"
    " response_time FROM entries"
)
_ORDER = " ORDER BY response_time DESC, id DESC"
_SELECT_BY_KEY = _COLUMNS + " WHERE key = ?" + _ORDER


class Storage:
    """The cache folder; every method is safe from several threads and processes at once.

    ``warn`` receives one sentence for each problem that was repaired (a rebuilt index).
    """

    def __init__(self, folder: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self._bodies = os.path.join(folder, BODIES)
        self._warn = warn or (lambda message: None)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
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

    # -- opening, checking, rebuilding -----------------------------------------------------------

    def _open(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise CacheError(f"the cache folder {self.folder} is a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        problem = self._connect()
        if problem is not None:
            self._warn(f"the cache in {self.folder} {problem}; rebuilding it")
            self._rebuild()
            problem = self._connect()
            if problem is not None:
                raise CacheError(f"the cache in {self.folder} {problem}, even after a rebuild")
        for name in (BODIES, TMP):
            path = self.folder / name
            if path.exists() and not path.is_dir():
                path.unlink()
            path.mkdir(exist_ok=True)
        tag = self.folder / TAG_NAME
        if not tag.exists():
            tag.write_text(TAG_TEXT, encoding="ascii")

    def _connect(self) -> str | None:
        """Open the index; a sentence saying what is wrong with it, or None when it is usable."""
        index = self.folder / INDEX_NAME
        if index.exists() and not index.is_file():
            return "has a folder where its index should be"
        try:
            db = sqlite3.connect(
                index, timeout=LOCK_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            return f"has an index that cannot be opened ({exc})"
        try:
            # One read transaction, so the three answers describe the same moment: read apart,
            # another process creating the index in between looked like a foreign database
            # (tables, but no application id yet) and was "rebuilt" under its feet.
            db.execute("BEGIN")
            try:
                app_id = db.execute("PRAGMA application_id").fetchone()[0]
                version = db.execute("PRAGMA user_version").fetchone()[0]
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                db.execute("COMMIT")
            if app_id == 0 and tables == 0:
                self._create(db)
            elif app_id != APPLICATION_ID:
                db.close()
                return "has an index that belongs to another program"
            elif version != SCHEMA_VERSION:
                db.close()
                return f"has an index of another version ({version})"
            elif db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                db.close()
                return "has a damaged index"
            _switch_to_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                # Another process holds it: that is no damage, and rebuilding would wreck it.
                raise CacheError(f"the cache index in {self.folder} is busy: {exc}") from exc
            return f"has a damaged index ({exc})"
        except sqlite3.DatabaseError as exc:
            db.close()
            return f"has a damaged index ({exc})"
        self._db = db
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
                    db.execute("ROLLBACK")
                    raise
                self._size = None
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise CacheError(f"the cache index failed: {exc}") from exc

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
            raise CacheError(f"the cache index failed: {exc}") from exc

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
                self._commit_batch(db)

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
            raise CacheError(f"the cache index failed: {exc}") from exc

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
        return BodyWriter(self.folder / TMP, limit)

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
        try:
            return os.stat(self._body_file(entry.body_sha)).st_size == entry.body_size
        except OSError:
            return False

    # -- entries ---------------------------------------------------------------------------------

    def entries(self, key: str) -> list[Entry]:
        """Every stored response for a cache key, newest first."""
        with self._lock:
            found = self._prefetched.get(key)
            if found is not None:
                return list(found)
            with self._transaction(write=False) as db:
                rows = db.execute(_SELECT_BY_KEY, (key,)).fetchall()
        return [_entry(row) for row in rows]

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the rows of many keys in a few queries; :meth:`entries` answers from them until
        the batch ends or the key is written. Only inside :meth:`batch`."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        with self._lock:
            if not self._batches:
                return
            found: dict[str, list[Entry]] = {key: [] for key in wanted}
            with self._transaction(write=False) as db:
                for start in range(0, len(wanted), _PREFETCH_CHUNK):
                    chunk = wanted[start : start + _PREFETCH_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    query = f"{_COLUMNS} WHERE key IN ({marks}){_ORDER}"
                    for row in db.execute(query, chunk):
                        found[str(row[1])].append(_entry(row))
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
    ) -> None:
        """Publish a completed body and its row in one transaction.

        The rows the new one replaces are read inside that write transaction, so rows another
        process stored meanwhile are seen too: the row with the same key and Vary values, and
        every row of the key for which ``replaces`` says yes. Their bodies are deleted when no
        other row uses them.
        """
        sha = body.sha256
        vary_text = json.dumps([list(item) for item in vary])
        target = self.body_path(sha)
        with self._transaction(write=True) as db:
            self._forget([key])
            try:
                try:
                    os.replace(body.path, target)
                except FileNotFoundError:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(body.path, target)
            except OSError as exc:
                raise CacheError(f"cannot store a body in the cache: {exc.strerror}") from exc
            if (
                self._size is not None
                and not db.execute(
                    "SELECT 1 FROM entries WHERE body_sha = ? LIMIT 1", (sha,)
                ).fetchone()
            ):
                self._size += body.size
            replaced = [
                int(row[0])
                for row in db.execute(_SELECT_BY_KEY, (key,)).fetchall()
                if row[2] == vary_text or (replaces is not None and replaces(_entry(row)))
            ]
            stale = self._delete_rows(db, replaced)
            db.execute(
                "INSERT INTO entries (key, vary, status, reason, headers, body_sha,"
                " body_size, request_time, response_time, last_used)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    vary_text,
                    status,
                    reason,
                    json.dumps([list(item) for item in headers]),
                    sha,
                    body.size,
                    request_time,
                    response_time,
                    now,
                ),
            )
            self._collect(db, {k: v for k, v in stale.items() if k != sha})

    def update(
        self,
        entry_id: int,
        *,
        headers: list[tuple[str, str]],
        request_time: float,
        response_time: float,
        now: float,
    ) -> None:
        """Freshen a stored response after a 304."""
        with self._transaction(write=True) as db:
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
            if self._batches:
                self._touched[entry_id] = now
                return
        with self._transaction(write=True) as db:
            db.execute("UPDATE entries SET last_used = ? WHERE id = ?", (now, entry_id))

    def delete(self, ids: list[int]) -> None:
        with self._transaction(write=True) as db:
            self._prefetched.clear()
            self._collect(db, self._delete_rows(db, ids))

    def delete_keys(self, keys: list[str]) -> int:
        """Drop every stored response for these keys; how many there were."""
        with self._transaction(write=True) as db:
            self._forget(keys)
            ids = [
                int(row[0])
                for key in keys
                for row in db.execute("SELECT id FROM entries WHERE key = ?", (key,))
            ]
            self._collect(db, self._delete_rows(db, ids))
        return len(ids)

    def evict(self, max_size: int) -> int:
        """Drop least recently used entries until the bodies fit in ``max_size``; how many."""
        dropped = 0
        with self._lock:
            if self._size is not None and self._size <= max_size:
                return 0
            with self._transaction(write=True) as db:
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
        return CacheInfo(self.folder, entries, bodies, size)

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
        sizes."""
        shas: dict[str, int] = {}
        for entry_id in ids:
            row = db.execute(
                "SELECT body_sha, body_size FROM entries WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is not None:
                shas[str(row[0])] = int(row[1])
                db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        return shas

    def _collect(self, db: sqlite3.Connection, shas: dict[str, int]) -> None:
        """Delete the body files no row references any more (caller holds the write lock)."""
        for sha, size in shas.items():
            if db.execute("SELECT 1 FROM entries WHERE body_sha = ? LIMIT 1", (sha,)).fetchone():
                continue
            if self._size is not None:
                self._size -= size
            with contextlib.suppress(FileNotFoundError):
                self.body_path(sha).unlink()
