"""Tests of webclient/_pipeline.py: ordering, pipelining depth, POST barriers and retries."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from webclient import (
    Client,
    ClientConfig,
    ClientRequest,
    ClientResponse,
    ConnectionClosed,
    ResponseTooLarge,
)
from webserver import Response as ServerResponse
from webserver import Server

from .conftest import CLIENT_TIMEOUT, BadServer, Origin
from .probe import Probe

pytestmark = pytest.mark.timeout(20)


def make_client(tmp_path: Path, pipeline: int, retries: int = 0) -> Client:
    """One connection per origin, without the client's own retries: the lane alone is seen."""
    config = ClientConfig(
        use_cache=False, pipeline=pipeline, timeout=CLIENT_TIMEOUT, retries=retries, connections=1
    )
    return Client(config)


def gets(base: str, *names: str) -> list[ClientRequest]:
    return [ClientRequest("GET", base + name) for name in names]


def test_requests_are_written_ahead_up_to_the_depth(tmp_path: Path) -> None:
    """After the first response proves keep-alive, up to N requests arrive before any answer."""
    with Probe() as probe, make_client(tmp_path, pipeline=3) as client:
        results = client.request_all(gets(probe.url, *"abcdefg"))
    assert [r.text for r in results if isinstance(r, ClientResponse)] == [
        f"GET /{n} HTTP/1.1" for n in "abcdefg"
    ]
    (batches,) = probe.batches
    assert [len(batch) for batch in batches] == [1, 3, 3]


def test_no_pipelining_without_the_option(tmp_path: Path) -> None:
    """With the default depth of 1, every request waits for the previous response."""
    with Probe(window=0.05) as probe, make_client(tmp_path, pipeline=1) as client:
        client.request_all(gets(probe.url, "a", "b", "c"))
    assert [len(batch) for batch in probe.batches[0]] == [1, 1, 1]


@pytest.mark.parametrize("depth", [4, 16])
def test_nothing_is_pipelined_around_a_post(tmp_path: Path, depth: int) -> None:
    """A POST waits for earlier responses, and nothing is written behind it."""
    upload = tmp_path / "up.txt"
    upload.write_bytes(b"payload")
    requests = [
        *gets("", "a", "b"),
        ClientRequest("POST", "up.txt", body=upload),
        *gets("", "c", "d"),
    ]
    with Probe() as probe, make_client(tmp_path, pipeline=depth) as client:
        results = client.request_all(
            [ClientRequest(r.method, probe.url + r.url, body=r.body) for r in requests]
        )
    assert all(isinstance(r, ClientResponse) and r.ok for r in results)
    assert probe.batches[0] == [
        ["GET /a HTTP/1.1"],
        ["GET /b HTTP/1.1"],
        ["POST /up.txt HTTP/1.1"],
        ["GET /c HTTP/1.1", "GET /d HTTP/1.1"],
    ]


def test_unanswered_gets_are_retried_once_on_a_new_connection(tmp_path: Path) -> None:
    """A kept-alive connection closed without answers: GETs go again on a new connection."""
    with Probe(close_after=1) as probe, make_client(tmp_path, pipeline=2) as client:
        results = client.request_all(gets(probe.url, "a", "b", "c"))
    assert [r.text for r in results if isinstance(r, ClientResponse)] == [
        "GET /a HTTP/1.1",
        "GET /b HTTP/1.1",
        "GET /c HTTP/1.1",
    ]
    assert len(probe.batches) >= 2
    assert client.connections_opened == len(probe.batches)


def test_a_pipeline_lost_mid_way_is_sent_again_one_at_a_time(tmp_path: Path) -> None:
    """A server dropping every connection after one answer still answers all, unpipelined."""
    with Probe(close_after=1, close_all=True) as probe, make_client(tmp_path, pipeline=2) as c:
        results = c.request_all(gets(probe.url, "a", "b", "c", "d"))
    assert [r.text for r in results if isinstance(r, ClientResponse)] == [
        f"GET /{n} HTTP/1.1" for n in "abcd"
    ]
    # The first connection saw b and c written ahead together; after its loss, never again.
    assert probe.batches[0] == [["GET /a HTTP/1.1"], ["GET /b HTTP/1.1", "GET /c HTTP/1.1"]]
    assert all(len(batch) == 1 for batches in probe.batches[1:] for batch in batches)


def test_requests_a_server_ignores_when_pipelined_are_sent_again_alone(tmp_path: Path) -> None:
    """A server that answers one request per read: what it ignored goes again, unpipelined."""
    config = ClientConfig(use_cache=False, pipeline=16, timeout=0.5, retries=0, connections=1)
    with Probe(window=0.05, first_only=True) as probe, Client(config) as client:
        results = client.request_all(gets(probe.url, "a", "b", "c", "d"))
    assert [r.text for r in results if isinstance(r, ClientResponse)] == [
        f"GET /{n} HTTP/1.1" for n in "abcd"
    ]
    assert probe.batches[0][1] == ["GET /b HTTP/1.1", "GET /c HTTP/1.1", "GET /d HTTP/1.1"]
    assert all(len(batch) == 1 for batches in probe.batches[1:] for batch in batches)
    assert client.connections_opened == 2


def test_a_silent_first_request_is_not_sent_again(tmp_path: Path) -> None:
    """A timeout on a request not written ahead fails it: pipelining is not to blame."""
    config = ClientConfig(use_cache=False, pipeline=16, timeout=0.3, retries=0, connections=1)
    with BadServer(hang=True) as server, Client(config) as client:
        results = client.request_all(gets(server.url, "a"))
    assert [type(r).__name__ for r in results] == ["ReadTimeout"]
    assert len(server.requests) == 1


def test_pipelining_is_the_default(tmp_path: Path) -> None:
    """Without options, requests are written ahead 16 deep once keep-alive is proven."""
    assert ClientConfig().pipeline == 16
    config = ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT, connections=1)
    names = [str(i) for i in range(20)]
    with Probe() as probe, Client(config) as client:
        results = client.request_all(gets(probe.url, *names))
    assert [r.text for r in results if isinstance(r, ClientResponse)] == [
        f"GET /{n} HTTP/1.1" for n in names
    ]
    (batches,) = probe.batches
    assert [len(batch) for batch in batches] == [1, 16, 3]


@pytest.mark.parametrize("peer", ["ours", "nginx"])
def test_default_pipelining_against_real_servers(
    peer: str, request: pytest.FixtureRequest, www: Path
) -> None:
    """With the defaults, many GETs and HEADs to our server and to nginx each get their answer."""
    if peer == "ours":
        server = request.getfixturevalue("static_server")
        base = server.url
    else:
        base = f"http://127.0.0.1:{request.getfixturevalue('nginx')}/"
    expected = {"hello.txt": (www / "hello.txt").read_bytes()}
    expected["data.bin"] = (www / "data.bin").read_bytes()
    names = [*expected] * 40
    requests = [
        ClientRequest("HEAD" if i % 5 == 4 else "GET", base + n) for i, n in enumerate(names)
    ]
    config = ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT, connections=1)
    with Client(config) as client:
        results = client.request_all(requests)
        assert client.connections_opened == 1
    for req, name, result in zip(requests, names, results, strict=True):
        assert isinstance(result, ClientResponse) and result.status == 200
        assert result.body == (b"" if req.method == "HEAD" else expected[name])


def test_post_is_not_retried(tmp_path: Path) -> None:
    """A POST left unanswered by a closing server fails instead of being sent twice."""
    upload = tmp_path / "up.txt"
    upload.write_bytes(b"payload")
    with Probe(close_after=1) as probe, make_client(tmp_path, pipeline=1) as client:
        results = client.request_all(
            [
                ClientRequest("GET", probe.url + "a"),
                ClientRequest("POST", probe.url + "up", body=upload),
            ]
        )
    assert isinstance(results[0], ClientResponse)
    assert isinstance(results[1], ConnectionClosed)
    posts = [line for batches in probe.batches for b in batches for line in b if "POST" in line]
    assert posts == ["POST /up HTTP/1.1"]


def test_one_connection_per_origin(origin: tuple[object, Origin], tmp_path: Path) -> None:
    """Many requests to one origin share one kept-alive connection, pipelined or not."""
    server, handler = origin
    handler.script("/x", (200, [], b"x"))
    for depth in (1, 4):
        before = len(handler.connections)
        with make_client(tmp_path, pipeline=depth) as client:
            results = client.request_all(gets(server.url, *(["x"] * 12)))  # type: ignore[attr-defined]
        assert all(isinstance(r, ClientResponse) and r.body == b"x" for r in results)
        assert len(handler.connections) == before + 1
        assert client.connections_opened == 1


@pytest.mark.parametrize("depth", [4, 16])
def test_http10_server_closing_each_time_is_not_a_failure(
    http_server: int, tmp_path: Path, depth: int
) -> None:
    """A server that closes after every response (HTTP/1.0) still answers every request."""
    base = f"http://127.0.0.1:{http_server}/"
    with make_client(tmp_path, pipeline=depth) as client:
        results = client.request_all(
            gets(base, "hello.txt", "data.bin", "sub/page.html", "hello.txt")
        )
    assert [r.status for r in results if isinstance(r, ClientResponse)] == [200, 200, 200, 200]
    assert client.connections_opened == 4


class _WaitForServerClose:
    """A body sink whose ``close`` returns only once the server has closed the connection."""

    def __init__(self, closed: threading.Event) -> None:
        self.closed = closed

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        assert self.closed.wait(CLIENT_TIMEOUT)

    def abort(self) -> None:
        pass


def test_post_after_idle_close_goes_on_a_new_connection(tmp_path: Path) -> None:
    """A POST is not written on a kept-alive connection the server has already closed."""
    closed = threading.Event()
    seen: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(CLIENT_TIMEOUT)
    port = listener.getsockname()[1]

    def serve() -> None:
        for number in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(CLIENT_TIMEOUT)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                seen.append(data.split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if number == 0:
                    # The keep-alive timer fired: the server closes without announcing it.
                    conn.shutdown(socket.SHUT_WR)
                    closed.set()
                    with contextlib.suppress(OSError):
                        while conn.recv(65536):
                            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    upload = tmp_path / "up.txt"
    upload.write_bytes(b"payload")
    base = f"http://127.0.0.1:{port}/"
    try:
        with make_client(tmp_path, pipeline=1) as client:
            results = client.request_all(
                [
                    ClientRequest("GET", base + "a", sink=lambda _r: _WaitForServerClose(closed)),
                    ClientRequest("POST", base + "up", body=upload),
                ]
            )
        assert [getattr(r, "status", r) for r in results] == [200, 200]
        assert seen == [b"GET /a HTTP/1.1", b"POST /up HTTP/1.1"]
    finally:
        listener.close()
        thread.join(5)


class _Sink:
    """A body sink that runs ``on_write`` for each piece of the body."""

    def __init__(self, on_write: Callable[[bytes], None]) -> None:
        self.write = on_write

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_next_request_travels_while_a_complete_response_is_handled(
    origin: tuple[Server, Origin], tmp_path: Path
) -> None:
    """Without pipelining, the next GET is written as soon as the previous response has fully
    arrived, before it is handled: the server sees /b while the client still writes /a's body."""
    server, handler = origin
    b_arrived = threading.Event()
    handler.script("/a", (200, [], b"a"))

    def answer_b(_request: object) -> ServerResponse:
        b_arrived.set()
        return ServerResponse(200, [], b"b")

    handler.script("/b", answer_b)
    seen_while_handling_a: list[bool] = []

    def wait_for_b(data: bytes) -> None:
        seen_while_handling_a.append(b_arrived.wait(CLIENT_TIMEOUT))

    with make_client(tmp_path, pipeline=1) as client:
        results = client.request_all(
            [
                ClientRequest("GET", server.url + "a", sink=lambda r: _Sink(wait_for_b)),
                ClientRequest("GET", server.url + "b"),
            ]
        )
    assert seen_while_handling_a == [True]
    assert [r.status for r in results if isinstance(r, ClientResponse)] == [200, 200]


def test_bytes_beyond_a_complete_response_are_not_read_as_the_next_one(tmp_path: Path) -> None:
    """A server that sends more than the response (here: stray bytes after the body) gets the
    next request on a new connection, as before; nothing is sent ahead on the old one."""
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\naaaSTRAY"
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbbb"
    with BadServer(first, second, hang=True) as server, make_client(tmp_path, 1) as client:
        results = client.request_all(gets(server.url, "a", "b"))
    assert [r.body for r in results if isinstance(r, ClientResponse)] == [b"aaa", b"bbb"]
    assert len(server.requests) == 2  # one per connection


def test_a_failure_handling_a_response_is_not_the_next_requests(
    origin: tuple[Server, Origin], tmp_path: Path
) -> None:
    """When the sink of a complete response fails, the request sent ahead meanwhile is answered
    on the same connection, once."""
    server, handler = origin
    handler.script("/a", (200, [], b"a"))
    handler.script("/b", (200, [], b"b"))

    def refuse(data: bytes) -> None:
        raise ResponseTooLarge("refused by the sink")

    with make_client(tmp_path, pipeline=1) as client:
        results = client.request_all(
            [
                ClientRequest("GET", server.url + "a", sink=lambda r: _Sink(refuse)),
                ClientRequest("GET", server.url + "b"),
            ]
        )
    assert isinstance(results[0], ResponseTooLarge)
    assert isinstance(results[1], ClientResponse)
    assert results[1].body == b"b"
    assert [seen.path for seen in handler.seen] == ["/a", "/b"]
