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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored response."""

    id: int
    key: str
    vary: VaryKey
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body_sha: str
    body_size: int
    request_time: float
    response_time: float


@dataclass(frozen=True, slots=True)
class CacheInfo:
    folder: Path
    entries: int
    bodies: int
    size: int


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
            fd, name = tempfile.mkstemp(prefix="body-", dir=folder)
        except OSError as exc:
            raise CacheError(f"cannot write to the cache folder: {exc}") from exc
        self.path = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self._file is None or self.dropped:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.discard()
            self.dropped = True
            return
        self._hash.update(data)
        try:
            self._file.write(data)
        except OSError:
            # A full disk must not fail the download; the response just is not stored.
            self.discard()
            self.dropped = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        """Flush the bytes to disk so the rename that publishes them never exposes a hole."""
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
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


_SELECT_BY_KEY = (
    "SELECT id, key, vary, status, reason, headers, body_sha, body_size, request_time,"
    " response_time FROM entries WHERE key = ? ORDER BY response_time DESC, id DESC"
)


class Storage:
    """The cache folder; every method is safe from several threads and processes at once.

    ``warn`` receives one sentence for each problem that was repaired (a rebuilt index).
    """

    def __init__(self, folder: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self._warn = warn or (lambda message: None)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
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
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
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
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
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
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # -- transactions ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if db is None:
                raise CacheError("the cache is closed")
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise CacheError(f"the cache index failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- bodies ----------------------------------------------------------------------------------

    def body_path(self, sha: str) -> Path:
        return self.folder / BODIES / sha[:2] / sha

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

    def body_ok(self, entry: Entry) -> bool:
        try:
            return self.body_path(entry.body_sha).stat().st_size == entry.body_size
        except OSError:
            return False

    # -- entries ---------------------------------------------------------------------------------

    def entries(self, key: str) -> list[Entry]:
        """Every stored response for a cache key, newest first."""
        with self._transaction(write=False) as db:
            rows = db.execute(_SELECT_BY_KEY, (key,)).fetchall()
        return [_entry(row) for row in rows]

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
        replaces: list[int],
    ) -> None:
        """Publish a completed body and its row in one transaction; ``replaces`` rows go away."""
        sha = body.sha256
        target = self.body_path(sha)
        with self._transaction(write=True) as db:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(body.path, target)
            except OSError as exc:
                raise CacheError(f"cannot store a body in the cache: {exc.strerror}") from exc
            stale = self._delete_rows(db, replaces)
            db.execute(
                "INSERT OR REPLACE INTO entries (key, vary, status, reason, headers, body_sha,"
                " body_size, request_time, response_time, last_used)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    json.dumps([list(item) for item in vary]),
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
            self._collect(db, stale - {sha})

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
        """Mark an entry used, for least-recently-used eviction."""
        with self._transaction(write=True) as db:
            db.execute("UPDATE entries SET last_used = ? WHERE id = ?", (now, entry_id))

    def delete(self, ids: list[int]) -> None:
        with self._transaction(write=True) as db:
            self._collect(db, self._delete_rows(db, ids))

    def delete_keys(self, keys: list[str]) -> int:
        """Drop every stored response for these keys; how many there were."""
        with self._transaction(write=True) as db:
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
        with self._transaction(write=True) as db:
            total = self._total_size(db)
            if total <= max_size:
                return 0
            rows = db.execute("SELECT id FROM entries ORDER BY last_used, id").fetchall()
            for (entry_id,) in rows:
                self._collect(db, self._delete_rows(db, [int(entry_id)]))
                dropped += 1
                total = self._total_size(db)
                if total <= max_size:
                    break
        return dropped

    def clear(self) -> int:
        """Drop everything; how many entries there were."""
        with self._transaction(write=True) as db:
            count = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
            db.execute("DELETE FROM entries")
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
    def _delete_rows(db: sqlite3.Connection, ids: list[int]) -> set[str]:
        """Delete rows; the bodies they referenced (maybe still used by other rows)."""
        shas: set[str] = set()
        for entry_id in ids:
            row = db.execute("SELECT body_sha FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is not None:
                shas.add(str(row[0]))
                db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        return shas

    def _collect(self, db: sqlite3.Connection, shas: set[str]) -> None:
        """Delete the body files no row references any more (caller holds the write lock)."""
        for sha in shas:
            if db.execute("SELECT 1 FROM entries WHERE body_sha = ? LIMIT 1", (sha,)).fetchone():
                continue
            with contextlib.suppress(FileNotFoundError):
                self.body_path(sha).unlink()
