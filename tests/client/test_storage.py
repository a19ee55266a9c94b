"""Tests of webclient/_storage.py: the SQLite index and content-addressed bodies on disk."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from webclient._storage import BODIES, INDEX_NAME, TMP, Storage
from webclient.errors import CacheError

pytestmark = pytest.mark.timeout(30)


def put(storage: Storage, key: str, body: bytes, *, now: float = 1.0) -> None:
    writer = storage.new_body(10**9)
    writer.write(body)
    writer.finish()
    storage.insert(
        key=key,
        vary=(),
        status=200,
        reason="OK",
        headers=[("ETag", '"x"')],
        body=writer,
        request_time=now,
        response_time=now,
        now=now,
        replaces=[],
    )


def test_bodies_are_content_addressed_and_shared(tmp_path: Path) -> None:
    """A body is stored once under its SHA-256, however many entries use it."""
    storage = Storage(tmp_path / "c")
    put(storage, "k1", b"same body")
    put(storage, "k2", b"same body")
    sha = hashlib.sha256(b"same body").hexdigest()
    assert storage.body_path(sha).read_bytes() == b"same body"
    info = storage.info()
    assert (info.entries, info.bodies, info.size) == (2, 1, 9)
    storage.delete_keys(["k1"])
    assert storage.body_path(sha).exists()
    storage.delete_keys(["k2"])
    assert not storage.body_path(sha).exists()
    assert list((tmp_path / "c" / TMP).iterdir()) == []


def test_corrupt_index_is_reported_and_rebuilt(tmp_path: Path) -> None:
    """An index that is not a database is replaced by an empty one, with a warning."""
    folder = tmp_path / "c"
    storage = Storage(folder)
    put(storage, "k", b"body")
    storage.close()
    (folder / INDEX_NAME).write_bytes(b"this is not sqlite" * 100)
    warnings: list[str] = []
    rebuilt = Storage(folder, warn=warnings.append)
    assert rebuilt.info().entries == 0
    assert len(warnings) == 1
    assert "damaged" in warnings[0]
    assert list((folder / BODIES).iterdir()) == []
    put(rebuilt, "k", b"body again")
    assert rebuilt.info().entries == 1


def test_foreign_database_is_replaced_but_other_files_kept(tmp_path: Path) -> None:
    """Another program's database at our index name is rebuilt; unrelated files stay."""
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with sqlite3.connect(folder / INDEX_NAME) as db:
        db.execute("CREATE TABLE other (x)")
    db.close()
    warnings: list[str] = []
    storage = Storage(folder, warn=warnings.append)
    assert "another program" in warnings[0]
    assert storage.info().entries == 0
    assert (folder / "notes.txt").read_text() == "mine"


def test_cache_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    """A file where the folder should be is a CacheError, never a crash."""
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(CacheError, match="is a file"):
        Storage(path)


def test_missing_body_is_detected(tmp_path: Path) -> None:
    """A body deleted behind our back is reported as a CacheError when opened."""
    storage = Storage(tmp_path / "c")
    put(storage, "k", b"body")
    (entry,) = storage.entries("k")
    storage.body_path(entry.body_sha).unlink()
    assert not storage.body_ok(entry)
    with pytest.raises(CacheError, match="missing"):
        storage.open_body(entry)


def test_eviction_is_least_recently_used(tmp_path: Path) -> None:
    """Eviction drops entries by last use until the bodies fit."""
    storage = Storage(tmp_path / "c")
    put(storage, "old", b"a" * 100, now=1)
    put(storage, "mid", b"b" * 100, now=2)
    put(storage, "new", b"c" * 100, now=3)
    (old,) = storage.entries("old")
    storage.touch(old.id, now=4)
    assert storage.evict(250) == 1
    assert storage.entries("mid") == []
    assert storage.evict(250) == 0
    assert storage.clear() == 2
    assert storage.info().size == 0


def test_processes_share_one_cache(tmp_path: Path) -> None:
    """Two processes writing the same cache at once lose nothing and corrupt nothing."""
    folder = tmp_path / "shared"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from tests.client.test_storage import put
        from webclient._storage import Storage
        storage = Storage(Path({str(folder)!r}))
        for i in range(25):
            put(storage, f"{{sys.argv[1]}}-{{i}}", f"{{sys.argv[1]}}{{i}}".encode() * 50)
        """
    )
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, name], cwd=root) for name in ("p", "q")
    ]
    assert [p.wait(timeout=25) for p in procs] == [0, 0]
    storage = Storage(folder)
    info = storage.info()
    assert (info.entries, info.bodies) == (50, 50)
    for name in ("p", "q"):
        (entry,) = storage.entries(f"{name}-7")
        with storage.open_body(entry) as body:
            assert body.read() == f"{name}7".encode() * 50
