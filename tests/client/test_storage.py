"""Tests of webclient/_storage.py: the SQLite index and content-addressed bodies on disk."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from webclient import Client, ClientConfig, Response
from webclient._storage import BATCH_SECONDS, BODIES, INDEX_NAME, TMP, Storage
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


# -- batched cache writes --------------------------------------------------------------------------


def test_batch_keeps_entries_written_before_an_error(tmp_path: Path) -> None:
    """An entry that fails midway leaves nothing; the ones before and after it are kept whole."""
    folder = tmp_path / "c"
    storage = Storage(folder)

    def run_that_stops() -> None:
        with storage.batch():
            put(storage, "k1", b"one")
            writer = storage.new_body(10**9)
            writer.write(b"lost")
            writer.finish()
            os.unlink(writer.path)  # the rename into bodies/ fails: CacheError inside the entry
            try:
                storage.insert(
                    key="k2",
                    vary=(),
                    status=200,
                    reason="OK",
                    headers=[],
                    body=writer,
                    request_time=1,
                    response_time=1,
                    now=1,
                )
            except CacheError:
                pass
            else:
                raise AssertionError("the insert should have failed")
            put(storage, "k3", b"three")
            raise RuntimeError("the run stops")

    with pytest.raises(RuntimeError, match="the run stops"):
        run_that_stops()
    storage.close()
    again = Storage(folder)
    assert again.info().entries == 2
    assert again.entries("k2") == []
    for key, body in (("k1", b"one"), ("k3", b"three")):
        (entry,) = again.entries(key)
        assert again.read_body(entry) == body


def test_batch_is_visible_to_others_within_its_time_limit(tmp_path: Path) -> None:
    """A batch left open (a slow server) still commits from its timer: others see its entries."""
    folder = tmp_path / "c"
    writer, reader = Storage(folder), Storage(folder)
    with writer.batch():
        put(writer, "k", b"body")
        deadline = time.monotonic() + BATCH_SECONDS * 20
        while not reader.entries("k") and time.monotonic() < deadline:
            time.sleep(BATCH_SECONDS / 5)
        assert len(reader.entries("k")) == 1
        put(writer, "k2", b"body2")
    assert len(reader.entries("k2")) == 1


def test_crash_in_a_batch_leaves_only_whole_entries(tmp_path: Path) -> None:
    """A process killed with a batch open leaves no entry, or only whole ones, never a partial."""
    folder = tmp_path / "crash"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from tests.client.test_storage import put
        from webclient._storage import Storage
        storage = Storage(Path({str(folder)!r}))
        with storage.batch():
            for i in range(50):
                put(storage, f"k{{i}}", f"body {{i}}".encode() * 20)
            os._exit(3)
        """
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", script], cwd=root, check=False).returncode == 3
    storage = Storage(folder)
    for i in range(50):
        for entry in storage.entries(f"k{i}"):
            assert storage.read_body(entry) == f"body {i}".encode() * 20
    put(storage, "after", b"still works")
    assert len(storage.entries("after")) == 1


def test_second_run_reads_from_prefetched_rows(tmp_path: Path) -> None:
    """Rows read ahead answer lookups; a write to a key drops its read-ahead rows."""
    storage = Storage(tmp_path / "c")
    put(storage, "k", b"v1")
    with storage.batch():
        storage.prefetch(["k", "missing"])
        assert storage.entries("missing") == []
        (first,) = storage.entries("k")
        put(storage, "k", b"v2", now=2)
        (second,) = storage.entries("k")
        assert storage.read_body(second) == b"v2"
        assert second != first


def test_many_requests_one_cache_batch(tmp_path: Path) -> None:
    """A run's responses are all stored and all served from the cache on the next run."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(30):
        (site / f"f{i}.txt").write_bytes(b"%d" % i * 10)
    from webserver.testing import running_server

    with running_server(root=site) as server, tempfile.TemporaryDirectory() as cache:
        urls = [server.url + f"f{i}.txt" for i in range(30)]
        from webclient import Request

        for round_no in range(2):
            with Client(ClientConfig(cache_dir=Path(cache), pipeline=4)) as client:
                results = client.request_all([Request("GET", u) for u in urls])
                assert all(isinstance(r, Response) for r in results)
                bodies = [r.body for r in results if isinstance(r, Response)]
                assert bodies == [b"%d" % i * 10 for i in range(30)]
                received = sum(r.bytes_received for r in results if isinstance(r, Response))
                assert (received == 0) is (round_no == 1)
                info = client.cache_info()
                assert info is not None and info.entries == 30


def test_two_opens_of_a_new_cache_at_once_rebuild_nothing(tmp_path: Path) -> None:
    """Two processes (here threads) opening a cache folder that does not exist yet both end up
    with the same index; neither takes the other's half-made index for a foreign or damaged one
    and "rebuilds" it away."""
    import threading

    for attempt in range(50):
        folder = tmp_path / f"new-{attempt}"
        warnings: list[str] = []
        start = threading.Barrier(2, timeout=10)
        opened: list[Storage] = []

        def open_it(
            folder: Path = folder,
            warnings: list[str] = warnings,
            start: threading.Barrier = start,
            opened: list[Storage] = opened,
        ) -> None:
            start.wait()
            opened.append(Storage(folder, warn=warnings.append))

        threads = [threading.Thread(target=open_it) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        for storage in opened:
            storage.close()
        assert len(opened) == 2
        assert warnings == []
