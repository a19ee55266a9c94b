"""Tests of webclient/_entries.py: each key's entries and bodies, read and written."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from webclient._storage import BODIES, INDEX_NAME, Storage
from webclient.errors import CacheError

from .conftest import put

pytestmark = pytest.mark.timeout(30)


def test_insert_replaces_the_row_another_process_stored_meanwhile(tmp_path: Path) -> None:
    """A row another process stored after this one looked is replaced, and its body deleted."""
    folder = tmp_path / "c"
    mine, theirs = Storage(folder), Storage(folder)
    with mine.batch():
        mine.prefetch(["k"])
        assert mine.entries("k") == []
        put(theirs, "k", b"their body")
        put(mine, "k", b"my body")
    (entry,) = mine.entries("k")
    assert mine.read_body(entry) == b"my body"
    assert not theirs.body_path(hashlib.sha256(b"their body").hexdigest()).exists()
    info = mine.info()
    assert (info.entries, info.bodies, info.size) == (1, 1, len(b"my body"))
    assert [p.name for p in (folder / BODIES).rglob("*") if p.is_file()] == [entry.body_sha]
    mine.close()
    theirs.close()


def test_missing_body_is_detected(tmp_path: Path) -> None:
    """A body deleted behind our back is reported as a CacheError when opened."""
    storage = Storage(tmp_path / "c")
    put(storage, "k", b"body")
    (entry,) = storage.entries("k")
    storage.body_path(entry.body_sha).unlink()
    assert not storage.body_ok(entry)
    with pytest.raises(CacheError, match="missing"):
        storage.open_body(entry)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("vary", "not json"),
        ("headers", "[1, 2]"),
        ("headers", '{"a": "b"}'),
        ("status", "abc"),
        ("status", 200.5),
        ("status", b"\x01"),
        ("reason", b"OK"),
        ("body_size", "big"),
        ("body_size", -1),
        ("body_sha", "../outside"),  # bodies/../../outside: the file beside the cache
        ("request_time", "soon"),
    ],
)
def test_an_unreadable_row_is_dropped_with_one_warning(
    tmp_path: Path, column: str, value: object
) -> None:
    """A row with a field this program never writes is dropped with a warning, in lookups and
    prefetches alike; the other rows are served, and no body name is used as a path unchecked."""
    folder = tmp_path / "c"
    storage = Storage(folder)
    put(storage, "bad", b"bad body")
    put(storage, "bad2", b"bad body 2")
    put(storage, "good", b"good body")
    storage.close()
    outside = tmp_path / "outside"
    outside.write_text("not the cache's")
    with sqlite3.connect(folder / INDEX_NAME) as db:
        query = f"UPDATE entries SET {column} = ? WHERE key LIKE 'bad%'"  # noqa: S608 - a test's column
        db.execute(query, (value,))
    db.close()
    warnings: list[str] = []
    storage = Storage(folder, warn=warnings.append)
    assert storage.entries("bad") == []
    with storage.batch():
        storage.prefetch(["bad2", "good"])
        assert storage.entries("bad2") == []
        (good,) = storage.entries("good")
    assert storage.read_body(good) == b"good body"
    assert len(warnings) == 1 and "unreadable entry" in warnings[0]
    assert storage.info().entries == 1
    assert outside.read_text() == "not the cache's"
