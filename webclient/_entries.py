"""The entries of one cache key and their bodies: look up, read, insert, update, touch, delete.

:class:`EntryStore` adds to the SQLite mechanics of :class:`~webclient._index.Index` the
operations a request makes on the cache, and :class:`~webclient._storage.Storage` adds to it the
operations on the whole cache (evict, clear, check, info). The rules they keep together are in
:mod:`webclient._storage`'s docstring; the ones kept here: a body is renamed into ``bodies/``
inside the write transaction that inserts its row, and deleted only when no row names it any
more (under the same lock); a row or body that cannot be read is dropped with one warning, never
raised; while the cache is read-only, what would be deleted is hidden for the rest of the run.
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

from ._bodies import BODIES, TMP, BodyWriter, body_file, file_sha256, size_problem
from ._faults import Fault, Unwritable, classify
from ._freshness import VaryKey
from ._index import Index
from ._rows import COLUMNS, ORDER, SELECT_BY_KEY, BadRow, Entry, delete_rows, is_replaced, row_entry
from .errors import CacheError

#: Keys per query when prefetching index rows (below SQLite's limit on parameters).
_PREFETCH_CHUNK = 500

#: How stored bodies are opened: O_NONBLOCK so that a named pipe put in a body's place is
#: opened at once (and then found not to be a file) instead of waiting for a writer for ever.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class EntryStore(Index):
    """The cache's entries and bodies, key by key: what a request reads and writes; every method
    is safe from several threads and processes at once."""

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
            file = os.fdopen(os.open(path, _READ_FLAGS), "rb")  # the caller closes it
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
            fd = os.open(self._body_file(sha), _READ_FLAGS)
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
            with os.fdopen(os.open(path, _READ_FLAGS), "rb") as file:
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
