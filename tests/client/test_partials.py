"""Tests of webclient/_partials.py and the ``.part`` files _outputs.py writes: resuming interrupted
downloads (``<name>.part``), against our server, nginx and ``python -m http.server``, through a
relay that cuts the first response short.

(Path safety, temporary files and folders are tested through the CLI in test_batch.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from webclient import Client, ClientConfig, ProtocolError
from webclient._partials import (
    META_SUFFIX,
    PART_MAX_AGE,
    PART_SUFFIX,
    content_range_start,
    if_range_validator,
)
from webclient.cli import main
from webclient.config import human_size
from webserver import Server

from .conftest import CLIENT_TIMEOUT, BadServer, ListeningThreads

pytestmark = pytest.mark.timeout(30)

#: Body bytes the relay lets through before it cuts the first response.
CUT = 300_000
SIZE = 1 << 20


class CuttingRelay(ListeningThreads):
    """A TCP relay to ``127.0.0.1:upstream`` that closes (or with ``stall``, holds) the first
    ``cuts`` connections after ``after`` bytes of response body, and keeps the bytes each
    connection's client sent."""

    def __init__(
        self, upstream: int, *, after: int = CUT, cuts: int = 1, stall: bool = False
    ) -> None:
        super().__init__()
        self.upstream = upstream
        self.after = after
        self.cuts = cuts
        #: At the cut, send nothing more until the relay stops, instead of closing.
        self.stall = stall
        #: What the client sent, one bytearray per connection, in the order accepted.
        self.requests: list[bytearray] = []
        self._sockets: list[socket.socket] = []

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        super().__exit__(*exc_info)
        for sock in self._sockets:
            sock.close()

    def _accepted(self, conn: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.upstream), timeout=CLIENT_TIMEOUT)
        self._sockets += [conn, up]
        cut = self.cuts > 0
        self.cuts -= cut
        record = bytearray()
        self.requests.append(record)
        self._spawn(self._requests, conn, up, record)
        self._spawn(self._responses, up, conn, cut)

    def _requests(self, conn: socket.socket, up: socket.socket, record: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                record += data
                up.sendall(data)
        with contextlib.suppress(OSError):
            up.shutdown(socket.SHUT_WR)

    def _responses(self, up: socket.socket, conn: socket.socket, cut: bool) -> None:
        seen = b""
        limit: int | None = None
        sent = 0
        with contextlib.suppress(OSError):
            while data := up.recv(65536):
                if cut and limit is None:
                    seen += data
                    if b"\r\n\r\n" in seen:
                        limit = seen.index(b"\r\n\r\n") + 4 + self.after
                if limit is not None:
                    data = data[: max(0, limit - sent)]
                conn.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    if self.stall:
                        self._stop.wait()
                    break
        # Cut (or done): close both sides, as a server killed mid-body would.
        for sock in (conn, up):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def big(www: Path) -> bytes:
    """A served file of random bytes, dated an hour back (so its Last-Modified is strong)."""
    data = os.urandom(SIZE)
    (www / "big.bin").write_bytes(data)
    hour_ago = time.time() - 3600
    os.utime(www / "big.bin", (hour_ago, hour_ago))
    return data


def _get(url: str, *, retries: int = 0) -> Result:
    """One ``get -o big.bin``; without retries by default, so a cut ends the run (and the
    next run resumes)."""
    args = ["get", url, "-o", "big.bin", "--timeout", "5", "--retries", str(retries)]
    return CliRunner().invoke(main, args)


def _interrupted(relay: CuttingRelay, work: Path, data: bytes) -> dict[str, str]:
    """Run a download the relay cuts; check what it leaves; the .part's record."""
    first = _get(relay.url + "big.bin")
    assert first.exit_code == 1, first.output
    assert "closed the connection mid-response" in first.stderr
    assert not (work / "big.bin").exists()
    part = work / ("big.bin" + PART_SUFFIX)
    assert part.read_bytes() == data[:CUT]
    assert stat.S_IMODE(part.stat().st_mode) == 0o600
    record: dict[str, str] = json.loads((work / ("big.bin" + META_SUFFIX)).read_text())
    assert record["url"].endswith("/big.bin")
    return record


def _headers(raw: bytearray) -> dict[str, str]:
    head = bytes(raw).split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


@pytest.mark.parametrize("peer", ["ours", "nginx"])
def test_an_interrupted_download_resumes_where_it_stopped(
    request: pytest.FixtureRequest, peer: str, www: Path, work: Path, big: bytes
) -> None:
    """A GET cut midway keeps big.bin.part (0600) and its validator; the next run asks for the
    rest with Range + If-Range, appends the 206, and the file is byte-exact."""
    if peer == "ours":
        server: Server = request.getfixturevalue("static_server")
        port = server.listen()[1]
    else:
        port = request.getfixturevalue("nginx")
    with CuttingRelay(port) as relay:
        record = _interrupted(relay, work, big)
        second = _get(relay.url + "big.bin")
        assert second.exit_code == 0, second.output
        sent = _headers(relay.requests[-1])
    assert (work / "big.bin").read_bytes() == big
    assert sent["range"] == f"bytes={CUT}-"
    assert sent["if-range"] == record["validator"]
    assert record["validator"].startswith('"')  # both send a strong ETag
    assert "resumed after 293.0 KiB" in second.stderr and "1.0 MiB saved" in second.stderr
    assert sorted(p.name for p in work.iterdir()) == ["big.bin"]


def test_a_run_killed_midway_is_resumed_by_the_next(
    static_server: Server, work: Path, big: bytes
) -> None:
    """A ``webclient get`` killed (SIGKILL) in the middle of a body leaves big.bin.part and its
    record; the next run resumes from there, the file is byte-exact and nothing else is left."""
    port = static_server.listen()[1]
    part = work / ("big.bin" + PART_SUFFIX)
    with CuttingRelay(port, stall=True) as relay:
        args = ["get", relay.url + "big.bin", "-o", "big.bin", "--timeout", "5"]
        proc = subprocess.Popen(
            [Path(sys.executable).parent / "webclient", *args],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + CLIENT_TIMEOUT
            while not (part.exists() and part.stat().st_size == CUT):
                assert time.monotonic() < deadline, "the body never reached the .part"
                time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait()
        second = _get(relay.url + "big.bin")  # the same URL: the relay lets this one through
    assert second.exit_code == 0, second.output
    assert f"resumed after {human_size(CUT)}" in second.stderr
    assert (work / "big.bin").read_bytes() == big
    assert sorted(p.name for p in work.iterdir()) == ["big.bin"]


def test_a_cut_download_is_retried_within_the_run(
    static_server: Server, work: Path, big: bytes
) -> None:
    """With retries (the default), a GET cut midway is sent again in the same run: the file
    is byte-exact and no .part is left."""
    port = static_server.listen()[1]
    with CuttingRelay(port) as relay:
        result = _get(relay.url + "big.bin", retries=2)
        assert len(relay.requests) == 2
    assert result.exit_code == 0, result.output
    assert (work / "big.bin").read_bytes() == big
    assert sorted(p.name for p in work.iterdir()) == ["big.bin"]


def test_json_reports_where_a_download_resumed(
    static_server: Server, work: Path, big: bytes
) -> None:
    """With --json, a resumed download says how many bytes the .part held and how many came
    now."""
    with CuttingRelay(static_server.listen()[1]) as relay:
        _interrupted(relay, work, big)
        second = CliRunner().invoke(main, ["get", relay.url + "big.bin", "-o", "big.bin", "--json"])
    assert second.exit_code == 0, second.output
    record = json.loads(second.stdout.splitlines()[0])
    assert record["resumed"] == CUT and record["size"] == SIZE - CUT
    assert record["status"] == 206 and record["saved"] == str(work / "big.bin")
    assert (work / "big.bin").read_bytes() == big


def test_a_changed_file_restarts_cleanly(
    static_server: Server, www: Path, work: Path, big: bytes
) -> None:
    """When the file changed since the cut, If-Range fails, the server sends it all (200) and
    that is what is saved, with nothing of the old .part."""
    with CuttingRelay(static_server.listen()[1]) as relay:
        _interrupted(relay, work, big)
        new = os.urandom(SIZE // 2)
        (www / "big.bin").write_bytes(new)
        second = _get(relay.url + "big.bin")
    assert second.exit_code == 0, second.output
    assert (work / "big.bin").read_bytes() == new
    assert "resumed" not in second.stderr
    assert sorted(p.name for p in work.iterdir()) == ["big.bin"]


def test_a_server_without_ranges_restarts_cleanly(http_server: int, work: Path, big: bytes) -> None:
    """python -m http.server ignores Range: its 200 restarts the download from the start (its
    validator is the Last-Modified date, strong because the file is an hour old)."""
    with CuttingRelay(http_server) as relay:
        record = _interrupted(relay, work, big)
        second = _get(relay.url + "big.bin")
        sent = _headers(relay.requests[-1])
    assert second.exit_code == 0, second.output
    assert not record["validator"].startswith('"')  # a date
    assert sent["range"] == f"bytes={CUT}-" and sent["if-range"] == record["validator"]
    assert (work / "big.bin").read_bytes() == big
    assert "resumed" not in second.stderr
    assert sorted(p.name for p in work.iterdir()) == ["big.bin"]


def _plant(work: Path, url: str, body: bytes, validator: str, *, age: float = 0) -> None:
    """A .part and its record as an interrupted run would have left them."""
    part = work / ("x.bin" + PART_SUFFIX)
    meta = work / ("x.bin" + META_SUFFIX)
    part.write_bytes(body)
    meta.write_text(json.dumps({"url": url, "validator": validator}))
    if age:
        then = time.time() - age
        for path in (part, meta):
            os.utime(path, (then, then))


def test_a_416_restarts_without_the_range(static_server: Server, work: Path, big: bytes) -> None:
    """A .part longer than the file gets 416 for its range: the download starts afresh, in
    the same run, with a request without Range."""
    with CuttingRelay(static_server.listen()[1], cuts=0) as relay:
        url = relay.url + "big.bin"
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as r:
            etag = r.headers["ETag"]
        _plant(work, _command_url(url), b"x" * (SIZE + 10), etag)
        result = CliRunner().invoke(main, ["get", url, "-o", "x.bin"])
        sent = b"".join(relay.requests[1:]).lower()
    assert result.exit_code == 0, result.output
    assert (work / "x.bin").read_bytes() == big
    assert sorted(p.name for p in work.iterdir()) == ["x.bin"]
    assert "416" not in result.stderr and "1 ok, 0 failed" in result.stderr
    first, second = sent.split(b"get /big.bin")[1:]
    assert f"range: bytes={SIZE + 10}-".encode() in first and b"range:" not in second


def test_a_206_for_another_range_is_an_error_and_not_saved(
    bad_server: Callable[..., BadServer], work: Path
) -> None:
    """A 206 that does not start where the .part ends fails the command: nothing is saved
    and the .part is dropped (the next run starts afresh)."""
    reply = (
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/10\r\n"
        b"Content-Length: 10\r\n\r\n0123456789"
    )
    server = bad_server(reply)
    url = f"http://127.0.0.1:{server.port}/x.bin"
    _plant(work, f"http://127.0.0.1:{server.port}/x.bin", b"01234", '"e"')
    result = CliRunner().invoke(main, ["get", url, "-o", "x.bin", "--no-cache"])
    assert result.exit_code == 1
    assert "206 Partial Content for bytes 0- (bytes 0-9/10) to a request for bytes 5-" in (
        result.stderr
    )
    assert list(work.iterdir()) == []
    assert b"range: bytes=5-" in server.requests[0].lower()


def test_a_206_to_a_request_without_range_is_never_saved(
    bad_server: Callable[..., BadServer], work: Path
) -> None:
    """A 206 answering a plain GET fails the command; no file and no .part are left."""
    reply = (
        b'HTTP/1.1 206 Partial Content\r\nETag: "e"\r\nContent-Range: bytes 0-9/20\r\n'
        b"Content-Length: 10\r\n\r\n0123456789"
    )
    server = bad_server(reply)
    result = CliRunner().invoke(main, ["get", server.url + "x.bin", "-o", "x.bin"])
    assert result.exit_code == 1
    assert "206 Partial Content to a request that asked for no range" in result.stderr
    assert list(work.iterdir()) == []


def test_client_refuses_a_206_it_did_not_ask_for(bad_server: Callable[..., BadServer]) -> None:
    """The library raises ProtocolError for a 206 to a request without Range."""
    server = bad_server(
        b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/9\r\nContent-Length: 2\r\n\r\nab"
    )
    with Client(ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT)) as client:
        with pytest.raises(ProtocolError, match="asked for no range"):
            client.get(server.url)
        # With a Range asked, the 206 is the answer.
        assert client.get(server.url, headers=[("Range", "bytes=0-1")]).body == b"ab"


@pytest.mark.timeout(10)
def test_parts_older_than_a_day_are_removed_not_resumed(
    static_server: Server, www: Path, work: Path, big: bytes
) -> None:
    """A .part (with its record) older than a day is removed and the file fetched whole; a
    younger one of another file, a user's own .part and a named pipe are left alone."""
    port = static_server.listen()[1]
    url = f"http://127.0.0.1:{port}/big.bin"
    (work / "old.bin.part").write_bytes(b"x")
    (work / "old.bin.part.meta").write_text(json.dumps({"url": url, "validator": '"e"'}))
    for name in ("old.bin.part", "old.bin.part.meta"):
        then = time.time() - PART_MAX_AGE - 60
        os.utime(work / name, (then, then))
    (work / "young.bin.part").write_bytes(b"y")
    (work / "young.bin.part.meta").write_text(json.dumps({"url": url, "validator": '"e"'}))
    (work / "notes.part").write_bytes(b"mine")
    os.utime(work / "notes.part", (0, 0))
    os.mkfifo(work / "pipe.bin.part")  # opening it to check its lock must not wait for a writer
    (work / "pipe.bin.part.meta").write_text(json.dumps({"url": url, "validator": '"e"'}))
    then = time.time() - PART_MAX_AGE - 60
    for name in ("pipe.bin.part", "pipe.bin.part.meta"):
        os.utime(work / name, (then, then))
    result = CliRunner().invoke(main, ["get", url, "-o", "old.bin"])
    assert result.exit_code == 0, result.output
    assert "removed 2 interrupted downloads (.part) older than a day from ." in result.stderr
    assert (work / "old.bin").read_bytes() == big
    assert "resumed" not in result.stderr
    assert sorted(p.name for p in work.iterdir()) == [
        "notes.part",
        "old.bin",
        "pipe.bin.part",  # not a regular file: its record goes, the pipe is not ours to remove
        "young.bin.part",
        "young.bin.part.meta",
    ]


def test_a_part_for_another_url_is_not_used(static_server: Server, work: Path, big: bytes) -> None:
    """A .part whose record names another URL is neither resumed nor sent a Range for."""
    with CuttingRelay(static_server.listen()[1], cuts=0) as relay:
        url = relay.url + "big.bin"
        _plant(work, _command_url(url) + "?other", b"x" * 10, '"e"')
        result = CliRunner().invoke(main, ["get", url, "-o", "x.bin"])
        sent = bytes(relay.requests[0]).lower()
    assert result.exit_code == 0, result.output
    assert (work / "x.bin").read_bytes() == big and "resumed" not in result.stderr
    assert b"range:" not in sent


def test_a_part_that_is_a_symlink_is_never_followed(
    static_server: Server, work: Path, tmp_path: Path, big: bytes
) -> None:
    """A symlink named like the .part (pointing elsewhere) is neither resumed nor written
    through: the download goes to a temporary file and the link's target is unchanged."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/big.bin"
    target = tmp_path / "precious.txt"
    target.write_bytes(b"keep me")
    (work / ("x.bin" + PART_SUFFIX)).symlink_to(target)
    (work / ("x.bin" + META_SUFFIX)).write_text(json.dumps({"url": url, "validator": '"e"'}))
    result = CliRunner().invoke(main, ["get", url, "-o", "x.bin"])
    assert result.exit_code == 0, result.output
    assert (work / "x.bin").read_bytes() == big and "resumed" not in result.stderr
    assert target.read_bytes() == b"keep me"


def test_a_record_with_a_broken_validator_is_not_used(
    static_server: Server, work: Path, big: bytes
) -> None:
    """A record whose validator could not be sent (a CR LF in it: a damaged or forged file) is
    ignored: the download starts afresh and succeeds, instead of failing on every run."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/big.bin"
    _plant(work, _command_url(url), b"x" * 10, '"e"\r\nX-Evil: 1')
    result = CliRunner().invoke(main, ["get", url, "-o", "x.bin"])
    assert result.exit_code == 0, result.output
    assert (work / "x.bin").read_bytes() == big and "resumed" not in result.stderr


@pytest.mark.parametrize("taken", [PART_SUFFIX, META_SUFFIX])
def test_a_folder_in_place_of_the_part_does_not_fail_the_download(
    static_server: Server, work: Path, big: bytes, taken: str
) -> None:
    """A folder named like the .part or its record (not ours to remove) makes the download go
    to a plain temporary file: it succeeds, and the folder stays."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/big.bin"
    (work / ("x.bin" + taken)).mkdir()
    result = CliRunner().invoke(main, ["get", url, "-o", "x.bin"])
    assert result.exit_code == 0, result.output
    assert (work / "x.bin").read_bytes() == big
    assert (work / ("x.bin" + taken)).is_dir()
    assert sorted(p.name for p in work.iterdir()) == ["x.bin", "x.bin" + taken]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("taken", [PART_SUFFIX, META_SUFFIX])
def test_a_named_pipe_in_place_of_the_part_does_not_hang_the_run(
    static_server: Server, work: Path, big: bytes, taken: str
) -> None:
    """A named pipe named like the .part or its record (opening one for writing or reading
    waits for the other end for ever) is never waited on: the download goes to a plain
    temporary file and succeeds, and the pipe stays."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/big.bin"
    os.mkfifo(work / ("x.bin" + taken))
    result = CliRunner().invoke(main, ["get", url, "-o", "x.bin"])
    assert result.exit_code == 0, result.output
    assert (work / "x.bin").read_bytes() == big
    assert stat.S_ISFIFO((work / ("x.bin" + taken)).lstat().st_mode)


def test_commands_sharing_a_name_do_not_resume(
    static_server: Server, work: Path, big: bytes
) -> None:
    """Two commands saving to one name take turns through temporary files: neither asks for a
    range, and the file left is whole."""
    with CuttingRelay(static_server.listen()[1], cuts=0) as relay:
        url = relay.url + "big.bin"
        (work / "big.bin.part").write_bytes(b"x" * 10)
        record = {"url": _command_url(url), "validator": '"e"'}
        (work / "big.bin.part.meta").write_text(json.dumps(record))
        (work / "cmds.txt").write_text(f"GET {url}\nGET {url}\n")
        result = CliRunner().invoke(main, ["batch", "cmds.txt", "--no-print", "--no-cache"])
        sent = b"".join(relay.requests).lower()
    assert result.exit_code == 0, result.output
    assert b"range:" not in sent and sent.count(b"get /big.bin") == 2
    assert (work / "big.bin").read_bytes() == big


def test_a_body_over_max_size_drops_the_part(static_server: Server, work: Path, big: bytes) -> None:
    """When the file is now larger than --max-size, the command fails and its .part goes too."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/big.bin"
    _plant(work, url, b"x" * 10, '"e"')
    result = CliRunner().invoke(main, ["get", url, "-o", "x.bin", "--max-size", "512K"])
    assert result.exit_code == 1
    assert "more than the limit of 512.0 KiB" in result.stderr
    assert list(work.iterdir()) == []


def _command_url(url: str) -> str:
    """The URL as a command names it (the port always written)."""
    from webclient.commands import command_for_url

    return command_for_url("GET", url).url


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("ETag", '"abc"')], '"abc"'),
        ([("ETag", 'W/"abc"')], None),
        (
            [
                ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Date", "Sun, 06 Nov 1994 08:49:38 GMT"),
            ],
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ),
        (
            [
                ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ],
            None,
        ),
        ([("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")], None),
        (
            [
                ("ETag", 'W/"a"'),
                ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Date", "Mon, 07 Nov 1994 08:49:37 GMT"),
            ],
            "Sun, 06 Nov 1994 08:49:37 GMT",
        ),
        ([], None),
    ],
)
def test_if_range_takes_only_strong_validators(
    headers: list[tuple[str, str]], expected: str | None
) -> None:
    """A strong ETag, else a Last-Modified a second or more before Date (RFC 9110 §13.1.5)."""
    assert if_range_validator(headers) == expected


@pytest.mark.parametrize(
    ("value", "start"),
    [
        ("bytes 100-199/200", 100),
        ("bytes 0-0/*", 0),
        (" bytes 5-9/10 ", 5),
        ("bytes 9-5/10", None),
        ("bytes */10", None),
        ("items 0-1/2", None),
        ("bytes 1-2", None),
        (None, None),
    ],
)
def test_content_range_start(value: str | None, start: int | None) -> None:
    """The first position of a satisfied byte range; None for anything else."""
    assert content_range_start(value) == start
