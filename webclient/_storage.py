"""The cache on disk: an SQLite index and content-addressed body files.

The mechanics are in three modules, and :class:`Storage` joins them: :mod:`webclient._index` (the
SQLite index: opening, checking, rebuilding, transactions and batches), :mod:`webclient._bodies`
(the body files and the writer that brings one in) and :mod:`webclient._rows` (what a row holds,
read back with every field checked); this module holds the operations on both -- look up,
insert, update, delete, evict, clear, check -- and the rules that keep them consistent.

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

Faults are told apart, and only real damage rebuilds (``_index.classify``): a full disk (ENOSPC,
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
import errno
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from ._bodies import (
    BODIES,
    TEMP_STALE,
    TMP,
    BodyWriter,
    body_file,
    body_files,
    file_sha256,
    size_problem,
    temporaries,
)
from ._freshness import VaryKey
from ._index import (
    BATCH_ENTRIES,
    BATCH_SECONDS,
    INDEX_NAME,
    Fault,
    Index,
    Unwritable,
    classify,
)
from ._rows import (
    COLUMNS,
    ORDER,
    SELECT_BY_KEY,
    BadRow,
    CacheInfo,
    CheckReport,
    Entry,
    delete_rows,
    is_replaced,
    row_entry,
    total_size,
)
from .errors import CacheError

__all__ = [
    "BATCH_ENTRIES",
    "BATCH_SECONDS",
    "BODIES",
    "INDEX_NAME",
    "TEMP_STALE",
    "TMP",
    "BodyWriter",
    "CacheInfo",
    "CheckReport",
    "Entry",
    "Storage",
]

#: Keys per query when prefetching index rows (below SQLite's limit on parameters).
_PREFETCH_CHUNK = 500


class Storage(Index):
    """The cache folder: its index (:class:`~webclient._index.Index`) with the operations on
    rows and bodies; every method is safe from several threads and processes at once.

    ``warn`` receives one sentence for each kind of problem that was repaired or worked around
    (a rebuilt index, a dropped row, a full disk, a read-only folder), once per kind.
    """

    def __init__(self, folder: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self._bodies = os.path.join(folder, BODIES)
        #: Rows and keys deleted while read-only: hidden from lookups for the rest of the run.
        self._hidden_ids: set[int] = set()
        self._hidden_keys: set[str] = set()
        super().__init__(folder, warn=warn)

    # -- bodies ----------------------------------------------------------------------------------

    def body_path(self, sha: str) -> Path:
        return Path(self._body_file(sha))

    def _body_file(self, sha: str) -> str:
        return body_file(self._bodies, sha)

    def new_body(self, limit: int) -> BodyWriter:
        """A writer into ``tmp/``; one already dropped (``fault`` set) when the disk refuses."""
        if self.read_only:
            return BodyWriter.refused(OSError(errno.EROFS, os.strerror(errno.EROFS)))
        try:
            return BodyWriter(self.folder / TMP, limit)
        except CacheError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and classify(cause) in (Fault.FULL, Fault.READ_ONLY):
                return BodyWriter.refused(cause)
            raise

    def write_failed(self, fault: OSError) -> None:
        """Report (once per kind) why a body could not be written into ``tmp/``."""
        error = self._failed(fault)
        if not isinstance(error, Unwritable):
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
                return size_problem(os.stat(path), entry.body_size)
            with open(path, "rb") as file:
                problem = size_problem(os.fstat(file.fileno()), entry.body_size)
                if problem is None and file_sha256(file) != entry.body_sha:
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
                    rows = db.execute(SELECT_BY_KEY, (key,)).fetchall()
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
                entries.append(row_entry(row))
            except BadRow as exc:
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
                    rows += db.execute(f"{COLUMNS} WHERE key IN ({marks}){ORDER}", chunk)
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
        except Unwritable:
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
            for old in db.execute(SELECT_BY_KEY, (key,)).fetchall()
            if old[2] == vary_text or is_replaced(old, replaces)
        ]
        stale = delete_rows(db, replaced)
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
        with contextlib.suppress(Unwritable), self._transaction(write=True) as db:
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
        with contextlib.suppress(Unwritable), self._transaction(write=True) as db:
            db.execute("UPDATE entries SET last_used = ? WHERE id = ?", (now, entry_id))

    def delete(self, ids: list[int]) -> None:
        with self._lock:
            if self.read_only:
                self._hidden_ids.update(ids)
                return
        with self._transaction(write=True) as db:
            self._prefetched.clear()
            self._collect(db, delete_rows(db, ids))

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
                self._collect(db, delete_rows(db, ids))
        except Unwritable:
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
            with contextlib.suppress(Unwritable), self._transaction(write=True) as db:
                if self._size is None:
                    self._size = total_size(db)
                if self._size <= max_size:
                    return 0
                self._prefetched.clear()
                self._write_touched(db)
                rows = db.execute("SELECT id FROM entries ORDER BY last_used, id").fetchall()
                for (entry_id,) in rows:
                    self._collect(db, delete_rows(db, [int(entry_id)]))
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
            size = total_size(db)
        temp_files, temp_size = temporaries(self.folder / TMP)
        return CacheInfo(
            self.folder, entries, bodies, size, temp_files, temp_size, read_only=self.read_only
        )

    def check(self, *, verify: bool = True) -> CheckReport:
        """Read every row and body: drop the rows that cannot be read or whose body is missing,
        not its recorded size or (``verify``) not its SHA-256, and remove body files that no row
        names (left by a crash). Read-only: only reports."""
        with self._transaction(write=False) as db:
            rows = db.execute(COLUMNS).fetchall()
        problems: list[str] = []
        bad: list[int] = []
        bodies: dict[tuple[str, int], str | None] = {}
        for row in rows:
            try:
                entry = row_entry(row)
            except BadRow as exc:
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
            for path in body_files(self._bodies):
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
