"""The cache's SQLite index: one row per stored response, shared by threads and processes.

Rules: the index runs in WAL mode with ``synchronous=NORMAL``; it is opened, checked (application
id, schema version, ``quick_check``) and, when it is damaged or another program's, rebuilt --
deleting only this program's own files; faults are told apart
(:func:`~webclient._faults.classify`) so that only real damage rebuilds: a full disk or a folder
that cannot be written opens it read-only, with one warning, and a write the disk refuses raises
:class:`~webclient._faults.Unwritable`, which the writers turn into "not stored". Writes happen
in transactions; inside a batch they share one transaction, each in its own savepoint, committed
at the end, after :data:`BATCH_ENTRIES` writes, or :data:`BATCH_SECONDS` after the first (from a
timer). What a batch defers -- the ``last_used`` of entries served, rows read ahead, the total
body size -- is kept here with the transaction.
See :mod:`webclient._storage` for the layout of the folder.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ._bodies import BODIES, TMP, tidy_temporaries
from ._faults import SQLITE_TRY_READING, Fault, Unwritable, classify, disk_full, sqlite_code
from .errors import CacheError

if TYPE_CHECKING:
    from ._rows import Entry

#: Written into the SQLite header, so a database of another program is recognised as foreign.
APPLICATION_ID = 0x57434331  # "WCC1"
SCHEMA_VERSION = 1
INDEX_NAME = "index.sqlite3"
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


SCHEMA = """
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


def switch_to_wal(db: sqlite3.Connection) -> None:
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


class Index:
    """The cache folder's SQLite index: opening, checking, rebuilding, transactions, batches.

    Every method is safe from several threads and processes at once;
    :class:`~webclient._entries.EntryStore` adds the operations on rows and bodies.

    ``warn`` receives one sentence for each kind of problem that was repaired or worked around
    (a rebuilt index, a dropped row, a full disk, a read-only folder), once per kind.
    """

    def __init__(self, folder: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.folder = folder
        self._warn_callback = warn or (lambda message: None)
        self._warned: set[str] = set()
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        #: Nothing is written: the folder or its index refused a write (see the module docstring).
        self.read_only = False
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
            if classify(exc) not in (Fault.READ_ONLY, Fault.FULL):
                raise
            self._become_read_only(exc)
            return
        tidy_temporaries(self.folder / TMP, time.time())

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
        fault = classify(exc)
        if fault is Fault.DAMAGED:
            return f"has a damaged index ({exc})"
        if fault is Fault.BUSY:
            # Another process holds it: that is no damage, and rebuilding would wreck it.
            raise CacheError(f"the cache index in {self.folder} is busy: {exc}") from exc
        if fault in (Fault.READ_ONLY, Fault.FULL) or (
            # An existing index whose journal or shared-memory file cannot be created or grown
            # (an unwritable folder, a full disk): reading it may still work.
            sqlite_code(exc) in SQLITE_TRY_READING and (self.folder / INDEX_NAME).is_file()
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
            switch_to_wal(db)
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
                for statement in SCHEMA.split(";"):
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
        if classify(cause) is Fault.FULL or disk_full(self.folder):
            reason = "its disk is full"
        else:
            reason = f"it cannot be written: {getattr(cause, 'strerror', None) or cause}"
        self._warn_once(
            "read-only",
            f"the cache in {self.folder} is used read-only ({reason}); nothing will be stored",
        )

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
        a full or read-only disk is warned about once and raised as :class:`Unwritable`, which
        the write methods turn into "not stored"."""
        fault = classify(exc)
        if fault is Fault.FULL:
            self._warn_once(
                "full",
                f"the disk of the cache in {self.folder} is full; responses are not stored"
                " until there is room (stored ones are kept)",
            )
            return Unwritable(f"the disk of the cache in {self.folder} is full")
        if fault is Fault.READ_ONLY:
            self._become_read_only(exc)
            return Unwritable(f"the cache in {self.folder} cannot be written")
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
            if not isinstance(error, Unwritable):
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
