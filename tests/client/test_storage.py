"""Tests of webclient/_storage.py: the SQLite index and content-addressed bodies on disk."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from webclient import Client, ClientConfig, ClientResponse
from webclient._cache import Cache, cache_key
from webclient._storage import BATCH_SECONDS, BODIES, INDEX_NAME, TEMP_STALE, TMP, Storage
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


def store(cache: Cache, url: str, body: bytes) -> bool:
    """Store a fresh response through the cache's policy, as a client does."""
    writer = cache.begin()
    writer.write(body)
    headers = [("Cache-Control", "max-age=600"), ("Content-Length", str(len(body)))]
    now = time.time()
    return cache.store(url, [], 200, "OK", headers, writer, request_time=now, response_time=now)


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
        from webclient import ClientRequest

        for round_no in range(2):
            with Client(ClientConfig(cache_dir=Path(cache), pipeline=4)) as client:
                results = client.request_all([ClientRequest("GET", u) for u in urls])
                assert all(isinstance(r, ClientResponse) for r in results)
                bodies = [r.body for r in results if isinstance(r, ClientResponse)]
                assert bodies == [b"%d" % i * 10 for i in range(30)]
                received = sum(r.bytes_received for r in results if isinstance(r, ClientResponse))
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


# -- disk faults: only damage rebuilds -------------------------------------------------------------


def _fail_writes_under(
    monkeypatch: pytest.MonkeyPatch, folder: Path, code: int = errno.EROFS
) -> None:
    """Make every write under ``folder`` fail with ``code``, as a read-only (or full) file system
    does: at the OS calls the cache makes, and SQLite opens its files read-only. (The tests run
    as root, for whom ``chmod`` takes no write away.)"""
    inside = os.fspath(folder)

    def refusing(call: Any, is_write: Callable[..., bool] = lambda *a, **k: True) -> Any:
        def refused(path: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(path).startswith(inside) and is_write(*args, **kwargs):
                raise OSError(code, os.strerror(code), os.fspath(path))
            return call(path, *args, **kwargs)

        return refused

    for name in ("mkdir", "unlink", "rmdir", "replace", "rename"):
        monkeypatch.setattr(os, name, refusing(getattr(os, name)))
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    monkeypatch.setattr(os, "open", refusing(os.open, lambda flags, *a, **k: flags & writes))
    connect = sqlite3.connect

    def read_only_connect(database: Any, *args: Any, uri: bool = False, **kwargs: Any) -> Any:
        if not uri and os.fspath(database).startswith(inside):
            database, uri = f"file:{quote(os.fspath(database))}?mode=ro", True
        return connect(database, *args, uri=uri, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only_connect)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(INDEX_NAME)
    }


def test_full_disk_while_writing_a_body_stores_nothing_and_keeps_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while a body is written: that response is not stored, one warning for the run,
    and every stored entry stays."""
    folder = tmp_path / "c"
    warnings: list[str] = []
    cache = Cache(folder, max_size=10**6, warn=warnings.append)
    assert store(cache, "http://h/kept", b"kept")
    write = os.write
    tmp = os.fspath(folder / TMP)

    def full(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(tmp):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", full)
    assert not store(cache, "http://h/new", b"new body")
    assert not store(cache, "http://h/other", b"other body")
    assert len(warnings) == 1 and "is full" in warnings[0]
    assert [e.key for e in cache.storage.entries(cache_key("http://h/kept"))]
    assert cache.info().entries == 1
    assert list((folder / TMP).iterdir()) == []


def test_full_index_stores_nothing_and_keeps_entries(tmp_path: Path) -> None:
    """SQLite answering "database or disk is full" is not damage: the row and its body are
    not stored, one warning, the other entries stay and the next store is tried again."""
    folder = tmp_path / "c"
    warnings: list[str] = []
    storage = Storage(folder, warn=warnings.append)
    put(storage, "kept", b"kept")
    assert storage._db is not None
    pages = storage._db.execute("PRAGMA page_count").fetchone()[0]
    storage._db.execute(f"PRAGMA max_page_count={pages}")  # a disk with no room left
    writer = storage.new_body(10**9)
    writer.write(b"new body")
    writer.finish()
    stored = storage.insert(
        key="new",
        vary=(),
        status=200,
        reason="OK",
        headers=[("X-Big", "x" * 100_000)],
        body=writer,
        request_time=1.0,
        response_time=1.0,
        now=1.0,
    )
    assert stored is False
    assert len(warnings) == 1 and "is full" in warnings[0]
    assert [e.key for e in storage.entries("kept")] == ["kept"]
    assert storage.info().entries == 1
    assert not storage.body_path(hashlib.sha256(b"new body").hexdigest()).exists()
    storage._db.execute("PRAGMA max_page_count=1073741823")  # room again
    put(storage, "new", b"new body")
    assert storage.info().entries == 2


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (13, "read-only"),  # SQLITE_FULL
        (8, "read-only"),  # SQLITE_READONLY
        (10, "read-only"),  # SQLITE_IOERR: its shared-memory file cannot grow (a full disk)
        (14, "read-only"),  # SQLITE_CANTOPEN: its journal cannot be made beside it
        (7, "unavailable"),  # SQLITE_NOMEM
        (26, "rebuilt"),  # SQLITE_NOTADB
        (11, "rebuilt"),  # SQLITE_CORRUPT
    ],
)
def test_only_damage_rebuilds_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, outcome: str
) -> None:
    """An index that cannot be opened for writing is rebuilt only when SQLite says it is
    damaged; a full or read-only disk, or an index whose journal cannot be made or grown,
    keeps every entry (used read-only); another failure leaves the files alone and works
    without the cache."""
    folder = tmp_path / "c"
    storage = Storage(folder)
    put(storage, "k", b"body")
    storage.close()
    before = _files(folder)
    connect = sqlite3.connect

    def failing_connect(database: Any, *args: Any, uri: bool = False, **kwargs: Any) -> Any:
        if not uri:  # the read-write open; a read-only one (a URI) works
            error = sqlite3.OperationalError(f"injected SQLite error {code}")
            error.sqlite_errorcode = code
            raise error
        return connect(database, *args, uri=uri, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", failing_connect)
    warnings: list[str] = []
    if outcome == "unavailable":
        with pytest.raises(CacheError, match="cannot open"):
            Storage(folder, warn=warnings.append)
        assert _files(folder) == before
        return
    if outcome == "rebuilt":
        monkeypatch.setattr(sqlite3, "connect", connect)
        (folder / INDEX_NAME).write_bytes(b"damaged" * 1000)
        rebuilt = Storage(folder, warn=warnings.append)
        assert rebuilt.info().entries == 0 and "damaged" in warnings[0]
        return
    reopened = Storage(folder, warn=warnings.append)
    assert reopened.read_only and len(warnings) == 1 and "read-only" in warnings[0]
    (entry,) = reopened.entries("k")
    assert reopened.read_body(entry) == b"body"
    assert _files(folder) == before


def test_read_only_cache_serves_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache on a read-only file system is used read-only with one warning: stored bodies
    are read, new ones are not stored, deletions only hide entries for the run, nothing on
    disk changes."""
    folder = tmp_path / "c"
    filled = Cache(folder, max_size=10**6)
    assert store(filled, "http://h/a", b"a body")
    assert store(filled, "http://h/b", b"b body")
    filled.close()
    before = _files(folder)
    _fail_writes_under(monkeypatch, folder)
    warnings: list[str] = []
    cache = Cache(folder, max_size=10**6, warn=warnings.append)
    assert cache.storage.read_only
    lookup = cache.lookup("http://h/a", [])
    assert lookup is not None and cache.use(lookup) == b"a body"
    assert not cache.wants("GET", 200, [("Cache-Control", "max-age=60")], [])
    assert not store(cache, "http://h/c", b"c body")
    assert cache.invalidate("POST", "http://h/b", 200, []) == 0
    assert cache.lookup("http://h/b", []) is None
    with pytest.raises(CacheError, match="cannot be written"):
        cache.clear()
    info = cache.info()
    assert (info.entries, info.read_only) == (2, True)
    cache.close()
    assert len(warnings) == 1 and "read-only" in warnings[0]
    assert _files(folder) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_read_only_folder_for_real(tmp_path: Path) -> None:
    """The same with the permissions of a shared cache the user may only read."""
    folder = tmp_path / "c"
    filled = Cache(folder, max_size=10**6)
    assert store(filled, "http://h/a", b"a body")
    filled.close()
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for path in modes:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        warnings: list[str] = []
        cache = Cache(folder, max_size=10**6, warn=warnings.append)
        lookup = cache.lookup("http://h/a", [])
        assert lookup is not None and cache.use(lookup) == b"a body"
        assert not store(cache, "http://h/b", b"b body")
        cache.close()
        assert len(warnings) == 1 and "read-only" in warnings[0]
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


# -- rows and files that cannot be read or removed -------------------------------------------------


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


@pytest.mark.parametrize("obstacle", ["folder", "EACCES"])
def test_a_body_that_cannot_be_removed_is_left_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, obstacle: str
) -> None:
    """Eviction meeting a body it cannot delete (a folder in its place, a file of another user
    in a shared cache) drops the row, leaves the file and warns once; never a traceback."""
    folder = tmp_path / "c"
    warnings: list[str] = []
    storage = Storage(folder, warn=warnings.append)
    put(storage, "a", b"a" * 100, now=1)
    put(storage, "b", b"b" * 100, now=2)
    put(storage, "c", b"c" * 100, now=3)
    paths = [storage.body_path(hashlib.sha256(x * 100).hexdigest()) for x in (b"a", b"b")]
    if obstacle == "folder":
        for path in paths:
            path.unlink()
            (path / "inside").mkdir(parents=True)
    else:
        unlink = os.unlink

        def refused(path: Any, *args: Any, **kwargs: Any) -> None:
            if Path(path) in paths:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", refused)
    assert storage.evict(100) == 2
    assert [e.key for e in storage.entries("c")] == ["c"]
    assert storage.info().entries == 1
    assert all(path.exists() for path in paths)
    assert len(warnings) == 1 and "cannot remove" in warnings[0]


# -- temporaries of killed runs --------------------------------------------------------------------


def test_leftover_temporaries_are_removed_at_start(tmp_path: Path) -> None:
    """Opening the cache removes ``tmp/body-*`` files of dead runs: old and not locked; a file
    a live writer holds (locked), a recent one and other names stay, and are counted."""
    folder = tmp_path / "c"
    Storage(folder).close()
    tmp = folder / TMP
    old = time.time() - TEMP_STALE - 60
    for name in ("body-dead", "body-recent", "body-held", "notes"):
        (tmp / name).write_bytes(b"x" * 10)
        if name != "body-recent":
            os.utime(tmp / name, (old, old))
    held = os.open(tmp / "body-held", os.O_RDONLY)
    live = None
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        live = Storage(folder).new_body(10**6)  # a run writing a body right now...
        live.write(b"partial")
        os.utime(live.path, (old, old))  # ...whose server has been silent for a while
        assert not (tmp / "body-dead").exists()
        (tmp / "body-dead").write_bytes(b"x" * 10)
        os.utime(tmp / "body-dead", (old, old))
        storage = Storage(folder)
        assert sorted(p.name for p in tmp.iterdir()) == sorted(
            ["body-recent", "body-held", "notes", live.path.name]
        )
        info = storage.info()
        assert (info.temp_files, info.temp_size) == (4, 37)
    finally:
        os.close(held)
        if live is not None:
            live.discard()
