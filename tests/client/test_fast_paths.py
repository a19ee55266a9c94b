"""Tests of the fast paths: each one must give exactly what the general path gives.

Pipelined responses read from one buffer, the run's destination resolver against
:func:`destination`, the IMF-fixdate reader against :mod:`email.utils`, and batched cache writes
against a crash or an error midway.
"""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webclient import Client, ClientConfig, Response
from webclient._batch import Destinations, destination
from webclient._connection import Connection, WireRequest
from webclient._freshness import parse_http_date
from webclient._storage import BATCH_SECONDS, Storage
from webclient.errors import CacheError, UnsafePathError

from .conftest import BadServer
from .test_storage import put

pytestmark = pytest.mark.timeout(60)

# -- responses that arrive together -------------------------------------------------------------


def test_pipelined_responses_in_one_buffer() -> None:
    """Several responses arriving in one read are split at their Content-Length, and the
    connection tells that the next one is already there (so the lane reads it before writing)."""
    reply = b"".join(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in (b"a", b"bc", b"")
    )
    with BadServer(reply, hang=True) as server:
        conn = Connection("127.0.0.1", server.port, timeout=2)
        try:
            request = WireRequest("GET", "/x", [("Host", "h")])
            bodies = []
            for _ in range(3):
                conn.send(request)
            for _ in range(3):
                head = conn.receive_head(request)
                assert head.status == 200
                bodies.append(b"".join(conn.iter_body()))
                assert conn.reusable
                assert conn.has_buffered() is (len(bodies) < 3)
            assert bodies == [b"a", b"bc", b""]
            assert conn.answered == 3
        finally:
            conn.close()


# -- the run's destinations are destination()'s ----------------------------------------------------


def test_destinations_agree_with_destination(tmp_path: Path) -> None:
    """Same path, or the same refusal, for plain names, odd names and names through symlinks."""
    out = tmp_path / "out"
    (out / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "link-out").symlink_to(tmp_path / "elsewhere")
    (out / "link-in").symlink_to(out / "sub")
    (out / "file-link").symlink_to(tmp_path / "secret")
    (out / "sub" / "back").symlink_to(out)
    names = [
        "a.txt",
        "sub/b.txt",
        "sub/deeper/c.txt",
        "new/dir/d.txt",
        "link-out/x",
        "link-in/x",
        "file-link",
        "sub/back/x",
        "sub/back",
        "../x",
        "a/../../x",
        "./a",
        "a//b",
        "sub/",
        "/etc/passwd",
        "",
        "tab\there",
        ".",
        "..",
        "sub/..",
    ]
    fast = Destinations(out)
    for name in names * 2:
        try:
            expected: object = destination(out, name)
        except UnsafePathError as exc:
            expected = str(exc)
        try:
            got: object = fast(name)
        except UnsafePathError as exc:
            got = str(exc)
        assert got == expected, name


# -- IMF-fixdate read directly gives email.utils' answer -------------------------------------------


@settings(max_examples=300)
@given(
    day=st.integers(0, 39),
    month=st.sampled_from(["Jan", "Feb", "Mar", "Apr", "Jun", "Sep", "Dec"]),
    year=st.integers(1000, 9999),
    hms=st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
    weekday=st.sampled_from(["Mon", "Sun"]),
)
def test_fixdate_agrees_with_email_utils(
    day: int, month: str, year: int, hms: tuple[int, int, int], weekday: str
) -> None:
    text = f"{weekday}, {day:02d} {month} {year} {hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d} GMT"
    parsed = email.utils.parsedate_tz(text)
    assert parsed is not None
    assert parse_http_date(text) == float(email.utils.mktime_tz(parsed))


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
                    replaces=[],
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
