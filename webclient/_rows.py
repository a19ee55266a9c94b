"""The cache's rows: what one stored response is, read back from the index with every field
checked, and the SQL that selects, deletes and sizes rows.

Rules: SQLite keeps whatever type was written into a column, so a row becomes an :class:`Entry`
only when every field is what this program writes (:class:`BadRow` says which is not); header
fields and Vary values are JSON lists of name/value pairs; a body name is taken for a file only
when it is a SHA-256 in hexadecimal; rows of a key are read newest first; the cache's size is the
sum of its distinct bodies.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._bodies import SHA_NAME
from ._freshness import VaryKey


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


class BadRow(Exception):
    """A row of the index that cannot be read; the message says which field."""


#: What a response that varies on nothing stores as its Vary values (most rows).
_NO_PAIRS = "[]"


def _pairs(text: object, field: str, *, optional: bool = False) -> tuple[tuple[str, str], ...]:
    """A JSON list of ``[name, value]`` pairs of strings (``value`` may be null when optional)."""
    if text == _NO_PAIRS:
        return ()
    try:
        items = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        items = None
    if not isinstance(items, list):
        raise BadRow(f"{field} is not a JSON list")
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and (isinstance(item[1], str) or (optional and item[1] is None))
        ):
            raise BadRow(f"{field} holds something other than name/value pairs")
    return tuple((n, v) for n, v in items)


def _number(value: object, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise BadRow(f"{field} is not a number")


def row_entry(row: tuple[object, ...]) -> Entry:
    """The row as an Entry; BadRow when any field is not what this program writes.

    SQLite keeps whatever type was written into a column, so every value is checked here, and
    a body name is used as a path only once it is a SHA-256 in hexadecimal.
    """
    (id_, key, vary, status, reason, headers, sha, size, req_t, resp_t) = row
    if type(status) is not int or not 100 <= status <= 999:
        raise BadRow("its status is not a three-digit integer")
    if type(size) is not int or size < 0:
        raise BadRow("its body size is not a whole number")
    if not isinstance(sha, str) or not SHA_NAME.match(sha):
        raise BadRow("its body name is not a SHA-256")
    if not isinstance(key, str) or not isinstance(reason, str):
        raise BadRow("its key or reason is not text")
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


COLUMNS = (
    "SELECT id, key, vary, status, reason, headers, body_sha, body_size, request_time,"
    " response_time FROM entries"
)
ORDER = " ORDER BY response_time DESC, id DESC"
SELECT_BY_KEY = COLUMNS + " WHERE key = ?" + ORDER


def is_replaced(row: tuple[object, ...], replaces: Callable[[Entry], bool] | None) -> bool:
    """Whether a row of the key being stored goes: ``replaces`` says so, or it is unreadable."""
    try:
        entry = row_entry(row)
    except BadRow:
        return True
    return replaces is not None and replaces(entry)


def total_size(db: sqlite3.Connection) -> int:
    row = db.execute(
        "SELECT coalesce(sum(body_size), 0) FROM (SELECT DISTINCT body_sha, body_size FROM entries)"
    ).fetchone()
    return int(row[0])


def delete_rows(db: sqlite3.Connection, ids: list[int]) -> dict[str, int]:
    """Delete rows; the bodies they referenced (maybe still used by other rows), with their
    sizes. A body name that is not a SHA-256 is never taken for a file."""
    shas: dict[str, int] = {}
    for entry_id in ids:
        row = db.execute(
            "SELECT body_sha, body_size FROM entries WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is not None:
            sha, size = row
            if isinstance(sha, str) and SHA_NAME.match(sha):
                shas[sha] = size if type(size) is int and size > 0 else 0
            db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
    return shas
