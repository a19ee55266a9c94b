"""The cache on disk: an SQLite index and content-addressed body files.

The mechanics are in three modules: :mod:`webclient._index` (the SQLite index: opening,
checking, rebuilding, transactions and batches), :mod:`webclient._bodies` (the body files and the
writer that brings one in) and :mod:`webclient._rows` (what a row holds, read back with every
field checked). :mod:`webclient._entries` holds what a request does with them (look up, read a
body, insert, update, touch, delete); this module, :class:`Storage`, adds what is done to the
whole cache (drop keys, evict, clear, info, check) and states the rules all of them keep.

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

Faults are told apart, and only real damage rebuilds (``_faults.classify``): a full disk (ENOSPC,
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
import os

from ._bodies import BODIES, TEMP_STALE, TMP, BodyWriter, body_files, temporaries
from ._entries import EntryStore
from ._faults import Unwritable
from ._index import BATCH_ENTRIES, BATCH_SECONDS, INDEX_NAME
from ._rows import (
    COLUMNS,
    BadRow,
    CacheInfo,
    CheckReport,
    Entry,
    delete_rows,
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


class Storage(EntryStore):
    """The cache folder: its index (:class:`~webclient._index.Index`), the operations on each
    key's entries (:class:`~webclient._entries.EntryStore`) and those on the whole cache; every
    method is safe from several threads and processes at once.

    ``warn`` receives one sentence for each kind of problem that was repaired or worked around
    (a rebuilt index, a dropped row, a full disk, a read-only folder), once per kind.
    """

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
