"""The request/response loop: keep-alive, pipelining, HTTP/1.0, errors, and fuzzed input."""

from __future__ import annotations

import contextlib
import enum
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver import Handler, Request, Response, Server, ServerConfig
from webserver._connection import Connection, Mode
from webserver._exchange import INLINE_REQUESTS, NeedsWorker, Outcome, serve_ready
from webserver.testing import running_server

from .conftest import NET_TIMEOUT, connect, recv_until_closed
from .wire import WireReader, send_in_pieces, split_ways


def get(path: str, *, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"


def test_keep_alive_reuses_connection(server: Server) -> None:
    """Several requests, one after another, on one connection."""
    with connect(server) as sock:
        reader = WireReader(sock)
        for _ in range(5):
            sock.sendall(get("/hello.txt"))
            response = reader.read()
            assert (response.status, response.body) == (200, b"hello, world\n")
            assert response.header("Connection") is None


def test_100_pipelined_in_order(server: Server, www: Path) -> None:
    """100 pipelined GETs sent in one write are answered in order."""
    for i in range(100):
        (www / f"f{i}.txt").write_bytes(f"file {i}\n".encode())
    with connect(server) as sock:
        sock.sendall(b"".join(get(f"/f{i}.txt") for i in range(100)))
        reader = WireReader(sock)
        bodies = [reader.read().body for _ in range(100)]
    assert bodies == [f"file {i}\n".encode() for i in range(100)]


def test_pipeline_mixing_get_and_post(server: Server, www: Path) -> None:
    """GET, POST, GET of the uploaded file, HEAD and a 404 in one write, answered in order."""
    pipeline = (
        get("/hello.txt")
        + b"POST /up.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nupload"
        + get("/up.txt")
        + b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        + get("/missing")
    )
    with connect(server) as sock:
        sock.sendall(pipeline)
        reader = WireReader(sock)
        answers = [
            reader.read(),
            reader.read(),
            reader.read(),
            reader.read(head_only=True),
            reader.read(),
        ]
    assert [a.status for a in answers] == [200, 201, 200, 200, 404]
    assert answers[2].body == b"upload"


def test_http10_is_answered_and_closed(server: Server) -> None:
    """An HTTP/1.0 request gets its answer, then the server closes the connection."""
    with connect(server) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nhello, world\n")
    assert b"Connection: close" in data


def test_connection_close_is_honoured(server: Server) -> None:
    """Connection: close gets the answer and a close; a pipelined request after it is ignored."""
    with connect(server) as sock:
        sock.sendall(get("/hello.txt", extra=b"Connection: close\r\n") + get("/data.bin"))
        data = recv_until_closed(sock)
    assert data.count(b"HTTP/1.1 ") == 1


def test_every_response_has_a_reason_phrase(server: Server) -> None:
    """Status lines carry the standard reason phrase."""
    with connect(server) as sock:
        sock.sendall(get("/hello.txt") + get("/nope") + b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = WireReader(sock)
        reasons = [(r.status, r.reason) for r in (reader.read(), reader.read(), reader.read())]
    assert reasons == [(200, "OK"), (404, "Not Found"), (501, "Not Implemented")]


def test_method_not_allowed_lists_allow(server: Server) -> None:
    """DELETE on the file tree is 405 with Allow."""
    with connect(server) as sock:
        sock.sendall(b"DELETE /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        response = WireReader(sock).read()
    assert response.status == 405
    assert response.header("Allow") == "GET, HEAD, OPTIONS, POST, PUT"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host in HTTP/1.1
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_malformed_requests_get_4xx_and_close(server: Server, raw: bytes, status: int) -> None:
    """Malformed requests are answered with a precise status and the connection is closed."""
    with connect(server) as sock:
        sock.sendall(raw)
        reader = WireReader(sock)
        response = reader.read()
        assert response.status == status
        assert response.header("Connection") == "close"
        assert reader.at_eof()


def test_bad_path_is_400_and_connection_survives(server: Server) -> None:
    """A path that is not UTF-8 is 400; its framing was sound, so the connection carries on."""
    with connect(server) as sock:
        sock.sendall(b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n" + get("/hello.txt"))
        reader = WireReader(sock)
        assert [reader.read().status, reader.read().status] == [400, 200]


def test_absolute_form_target(server: Server) -> None:
    """An absolute-form target is served by its path (RFC 9112 §3.2.2)."""
    with connect(server) as sock:
        sock.sendall(b"GET http://example.com/hello.txt HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert WireReader(sock).read().body == b"hello, world\n"


class Boom(Handler):
    def get(self, request: Request) -> Response:
        raise RuntimeError("handler bug")


class Stream(Handler):
    def get(self, request: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], (b"part%d;" % i for i in range(3)))


class BrokenStream(Handler):
    def get(self, request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"start"
            raise RuntimeError("stream bug")

        return Response(200, [], chunks())


@pytest.fixture
def app_server(www: Path) -> Iterator[Server]:
    def setup(srv: Server) -> None:
        srv.route("/boom", Boom)
        srv.route("/stream", Stream)
        srv.route("/broken", BrokenStream)

    with running_server(root=www, access_log=False, setup=setup) as srv:
        yield srv


def test_handler_exception_is_500_and_server_survives(
    app_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler gets 500 with its traceback logged; others are still served."""
    with connect(app_server) as sock:
        sock.sendall(get("/boom"))
        assert WireReader(sock).read().status == 500
    assert "handler bug" in caplog.text
    with connect(app_server) as sock:
        sock.sendall(get("/hello.txt"))
        assert WireReader(sock).read().status == 200


def test_streamed_body_is_chunked(app_server: Server) -> None:
    """An iterable body goes out chunked to HTTP/1.1 and close-delimited to HTTP/1.0."""
    with connect(app_server) as sock:
        sock.sendall(get("/stream"))
        response = WireReader(sock).read()
        assert response.header("Transfer-Encoding") == "chunked"
        assert response.body == b"part0;part1;part2;"
    with connect(app_server) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        assert recv_until_closed(sock).endswith(b"\r\n\r\npart0;part1;part2;")


def test_exception_mid_stream_closes(app_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A body that fails midway is cut off (no false end of message) and logged."""
    with connect(app_server) as sock:
        sock.sendall(get("/broken"))
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert not data.endswith(b"0\r\n\r\n")
    assert "stream bug" in caplog.text


REQUEST_PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /hello.txt HTTP/1.1\r\n",
    b"POST /u HTTP/1.1\r\n",
    b"HEAD /docs/ HTTP/1.0\r\n",
    b"Host: x\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n",
    b"abc",
    b"3\r\nabc\r\n0\r\n\r\n",
    b"\n",
    b"\x00",
    b" ",
    b":",
    b"\xff",
]


def _answers(server: Server, stream: bytes, cuts: list[int]) -> list[tuple[int, str | None]]:
    """Status and ``Connection`` of each final answer to ``stream`` sent cut at ``cuts``."""
    answers = []
    with connect(server) as sock:
        sock.settimeout(3.0)
        send_in_pieces(sock, stream, cuts)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        reader = WireReader(sock)
        while True:
            try:
                response = reader.read()
            except (EOFError, ConnectionResetError):
                break
            assert 100 <= response.status <= 599
            assert response.version == "HTTP/1.1"
            if response.status >= 200:  # a 100 Continue depends on when the body arrives
                answers.append((response.status, response.header("Connection")))
    return answers


@given(
    pieces=st.lists(
        st.one_of(st.sampled_from(REQUEST_PIECES), st.binary(max_size=20)), max_size=12
    ),
    data=st.data(),
)
def test_fuzzed_request_stream(server: Server, pieces: list[bytes], data: st.DataObject) -> None:
    """Arbitrary or mutated request bytes get well-formed responses or a close, never a hang;
    the same answers whether the stream is sent whole, byte by byte or in random pieces."""
    stream = b"".join(pieces)
    random_cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))
    answers = [_answers(server, stream, cuts) for cuts in split_ways(stream, random_cuts)]
    assert answers[0] == answers[1] == answers[2]
    # The server still answers a normal request afterwards.
    with connect(server) as sock:
        sock.settimeout(NET_TIMEOUT)
        sock.sendall(get("/hello.txt"))
        assert WireReader(sock).read().status == 200


class OwnDate(Handler):
    def get(self, request: Request) -> Response:
        return Response(
            200, [("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), ("Server", "origin")], b"x"
        )


def test_handler_may_set_date_and_server(www: Path) -> None:
    """A Date or Server set by the handler is sent once, instead of the server's own."""
    with (
        running_server(root=www, access_log=False, setup=lambda s: s.route("/d", OwnDate)) as srv,
        connect(srv) as sock,
    ):
        sock.sendall(get("/d"))
        response = WireReader(sock).read()
    dates = [v for n, v in response.headers if n.lower() == "date"]
    servers = [v for n, v in response.headers if n.lower() == "server"]
    assert dates == ["Sun, 06 Nov 1994 08:49:37 GMT"]
    assert servers == ["origin"]


def test_empty_line_before_a_request_is_ignored(server: Server) -> None:
    """An extra CRLF after a POST body, or before the first request, is skipped (RFC 9112
    §2.2), and the requests around it are answered."""
    with connect(server) as sock:
        sock.sendall(
            b"\r\n"
            + get("/hello.txt")
            + b"POST /crlf.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok\r\n"
            + get("/crlf.txt")
        )
        reader = WireReader(sock)
        answers = [reader.read() for _ in range(3)]
    assert [a.status for a in answers] == [200, 201, 200]
    assert answers[2].body == b"ok"


@pytest.mark.parametrize("blank", [b"\r\n", b"\r\n\r\n\r\n"], ids=["one", "three"])
@pytest.mark.parametrize(
    "before",
    [
        get("/hello.txt"),
        b"POST /crlf2.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok",  # via h11
    ],
    ids=["after-get", "after-post"],
)
def test_empty_lines_after_a_request_keep_the_connection(
    server: Server, before: bytes, blank: bytes
) -> None:
    """Empty lines right after a request, with nothing behind them yet, are skipped whichever
    path answered the request, and the next request on the connection is answered."""
    with connect(server) as sock:
        reader = WireReader(sock)
        sock.sendall(before + blank)
        assert reader.read().status == (201 if before.startswith(b"POST") else 200)
        sock.sendall(get("/hello.txt"))
        answer = reader.read()
    assert answer.status == 200
    assert answer.body == b"hello, world\n"


@pytest.mark.parametrize(
    "raw",
    [
        bytes.fromhex("160301020001000001fc0303") + b"\x00" * 20,  # a TLS ClientHello's start
        b" GET / HTTP/1.1\r\n",
        b"\x00\x00",
        b"\r\n\x01",
    ],
    ids=["tls", "leading-space", "nul", "crlf-then-control"],
)
def test_what_cannot_start_a_request_is_refused_at_once(www: Path, raw: bytes) -> None:
    """No waiting for a whole head (and the head timeout) when the first byte already rules a
    request out: a client speaking TLS to the plain port learns at once."""
    with (
        running_server(root=www, access_log=False, header_timeout=30) as srv,
        connect(srv) as sock,
    ):
        sock.settimeout(5)  # far below header_timeout: a 408 would come too late
        sock.sendall(raw)
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def test_a_trickle_of_empty_lines_does_not_hold_the_connection(www: Path) -> None:
    """Empty lines do not extend the keep-alive deadline: the connection is closed (silently,
    as any idle one) once it passes, however many arrive."""
    with (
        running_server(
            root=www, access_log=False, header_timeout=30, keep_alive_timeout=0.5
        ) as srv,
        connect(srv) as sock,
    ):
        sock.sendall(get("/hello.txt"))
        assert WireReader(sock).read().status == 200
        started = time.monotonic()
        received = None
        for _ in range(50):  # at most 5 s
            try:
                sock.sendall(b"\r\n")
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                with contextlib.suppress(ConnectionResetError):
                    received = recv_until_closed(sock)
                break
        elapsed = time.monotonic() - started
    assert received in (b"", None)  # closed, with no 408 and nothing else
    assert elapsed < 3


def test_an_empty_line_after_a_request_gets_no_408(www: Path) -> None:
    """A CRLF after a request (RFC 9112 §2.2) is not the start of a head: no 408 once the head
    timeout passes, and the connection still serves the next request."""
    with (
        running_server(
            root=www, access_log=False, header_timeout=0.3, keep_alive_timeout=30
        ) as srv,
        connect(srv) as sock,
    ):
        sock.sendall(get("/hello.txt") + b"\r\n")
        reader = WireReader(sock)
        assert reader.read().status == 200
        readable, _, _ = select.select([sock], [], [], 1.0)  # over three head timeouts
        assert not readable
        sock.sendall(get("/hello.txt"))
        assert reader.read().status == 200


@pytest.mark.parametrize(
    "first",
    [
        b"POST /cr.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok\r",  # via h11
        get("/hello.txt") + b"\r",  # plain
        get("/hello.txt", extra=b"Content-Length: 0\r\n") + b"\r",  # via h11
    ],
    ids=["after-post", "after-plain-get", "after-h11-get"],
)
def test_a_cr_whose_lf_comes_later_is_an_empty_line(server: Server, first: bytes) -> None:
    with connect(server) as sock:
        reader = WireReader(sock)
        sock.sendall(first)
        assert reader.read().status == (201 if first.startswith(b"POST") else 200)
        sock.sendall(b"\n" + get("/hello.txt"))
        answer = reader.read()
    assert answer.status == 200
    assert answer.body == b"hello, world\n"


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\n\r\n", b"\n\n"], ids=["crlf", "lf-crlf", "lf"])
def test_a_head_arriving_a_byte_at_a_time_is_answered_as_a_whole(
    server: Server, end: bytes
) -> None:
    """The search for the end of a head resumes where it stopped, and still finds an end split
    across reads in any of h11's forms (bare LF ends are then refused by the strict checks)."""
    head = b"GET /hello.txt HTTP/1.1\r\nHost: x" + end
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in head:
            sock.sendall(bytes([byte]))
        answer = WireReader(sock).read()
    assert answer.status == (200 if end == b"\r\n\r\n" else 400)


class _InvalidResponses(Handler):
    """Responses h11 cannot write, chosen by the last path segment."""

    CASES: ClassVar[dict[str, Response]] = {
        "crlf": Response(200, [("X-A", "a\r\nX-Injected: 1")], b"body"),
        "snowman": Response(200, [("X-A", "snow \u2603")], b"body"),
        "not-text": Response(200, [("X-A", 5)], b"body"),  # type: ignore[list-item]
        "status": Response(42, [], b"body"),
        "stream-crlf": Response(200, [("X-A", "a\rb")], iter([b"body"])),
        "float-status": Response(200.0, [], b"body"),  # type: ignore[arg-type]
        "no-status": Response(None, [], b"body"),  # type: ignore[arg-type]
        "long-length": Response(200, [("Content-Length", "5")], b"0123456789"),
        "short-length": Response(200, [("Content-Length", "20")], b"0123456789"),
        "three-tuple": Response(200, [("X-A", "a", "b")], b"body"),  # type: ignore[list-item]
        "str-body": Response(200, [], "text, not bytes"),  # type: ignore[arg-type]
        "not-a-response": None,  # type: ignore[dict-item]
    }

    def get(self, request: Request) -> Response:
        case = self.CASES[request.route_path.rsplit("/", 1)[-1]]
        if case is None:
            return case
        return Response(case.status, list(case.headers), case.body)


@pytest.mark.parametrize(
    ("method", "framing", "case"),
    [
        pytest.param(method, framing, case, id=f"{method}-{name}-{case}")
        for method in ("GET", "HEAD")
        for name, framing in (("plain", b""), ("h11", b"Content-Length: 0\r\n"))
        for case in _InvalidResponses.CASES
        # A HEAD response may declare the length of the GET's body without sending one.
        if not (method == "HEAD" and case.endswith("-length"))
    ],
)
def test_a_response_that_cannot_be_written_becomes_a_500(
    www: Path, caplog: pytest.LogCaptureFixture, case: str, framing: bytes, method: str
) -> None:
    """The client gets a 500 and a closed connection, not a silent close; the log says why."""

    def setup(srv: Server) -> None:
        srv.route("/bad", _InvalidResponses(), prefix=True)

    with running_server(root=www, access_log=False, setup=setup) as srv:
        with connect(srv) as sock:
            head = f"{method} /bad/{case} HTTP/1.1\r\nHost: x\r\n".encode()
            sock.sendall(head + framing + b"\r\n" + get("/hello.txt"))
            raw = recv_until_closed(sock)
        with connect(srv) as sock:  # and the server goes on serving
            sock.sendall(get("/hello.txt"))
            assert WireReader(sock).read().status == 200
    assert raw.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Connection: close\r\n" in raw
    assert b"Injected" not in raw
    assert raw.count(b"HTTP/1.1 ") == 1  # the pipelined GET behind it is not answered
    assert "cannot be sent" in caplog.text or "must return a Response" in caplog.text


class _TextLike(enum.StrEnum):
    JSON = "application/json"


class _EnumHeaders(Handler):
    def get(self, request: Request) -> Response:
        return Response(HTTPStatus.OK, [("Content-Type", _TextLike.JSON)], b"{}")


@pytest.mark.parametrize("framing", [b"", b"Content-Length: 0\r\n"], ids=["plain", "h11"])
def test_str_and_int_subclasses_in_a_response_are_written_as_their_values(
    www: Path, framing: bytes
) -> None:
    def setup(srv: Server) -> None:
        srv.route("/enum", _EnumHeaders())

    with running_server(root=www, access_log=False, setup=setup) as srv, connect(srv) as sock:
        sock.sendall(b"GET /enum HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n")
        answer = WireReader(sock).read()
    assert answer.status == 200
    assert answer.header("Content-Type") == "application/json"
    assert answer.body == b"{}"


@pytest.mark.parametrize(
    ("before", "statuses"),
    [
        (b"", [b"400"]),
        (b"POST /eof.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok", [b"201", b"400"]),
        (get("/hello.txt", extra=b"Content-Length: 0\r\n"), [b"200", b"400"]),  # via h11
    ],
    ids=["alone", "after-post", "after-h11-get"],
)
def test_a_cr_then_end_of_stream_is_answered_at_once(
    server: Server, before: bytes, statuses: list[bytes]
) -> None:
    """A CR with no LF to come (the client closed) is a bad request line, not an empty line to
    wait for: answered and closed at once, not at the keep-alive timeout."""
    with connect(server) as sock:
        sock.settimeout(3)  # far below the keep-alive timeout
        sock.sendall(before + b"\r")
        sock.shutdown(socket.SHUT_WR)
        raw = recv_until_closed(sock)
    assert re.findall(rb"^HTTP/1\.1 (\d{3}) ", raw, re.MULTILINE) == statuses


def test_pipelined_requests_then_end_of_stream_are_all_answered(server: Server) -> None:
    """Requests sent back to back followed by the client's FIN are all answered before the
    close (their answers are not dropped with the connection)."""
    with connect(server) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        sock.shutdown(socket.SHUT_WR)
        raw = recv_until_closed(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert raw.endswith(b"hello, world\n")


def _pipeline_during_handler(others_waiting: bool) -> list[bytes]:
    """Serve ``/a`` whose handler makes the client send ``/b`` meanwhile; the bodies answered
    by the first turn, then by a second one."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        config = ServerConfig(port=0, access_log=False)

        def app(request: Request) -> Response:
            if request.path == "/a":
                client_end.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            return Response.text(request.path)

        client_end.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        client_end.settimeout(NET_TIMEOUT)
        reader = WireReader(client_end)
        turns = []
        for _ in range(2):
            turn = serve_ready(conn, app, config, lambda: False, lambda: others_waiting)
            assert turn.outcome is Outcome.HEAD
            bodies = []
            while reader.buffer or select.select([client_end], [], [], 0)[0]:
                bodies.append(reader.read().body)
            turns.append(b",".join(bodies))
        conn.close()
    return turns


@pytest.mark.parametrize("others_waiting", [False, True])
def test_a_turn_reads_on_after_answering(others_waiting: bool) -> None:
    """A turn that has answered what it read tries one more read before parking, other
    connections waiting or not, and answers the request that came meanwhile. (Parking at once
    while others wait saved that read, but woke the selector four times as often per request and
    cost more CPU per request: measured and dropped.)"""
    assert _pipeline_during_handler(others_waiting) == [b"/a,/b", b""]


def _inline_app(answered: list[str]) -> Callable[[Request], Response]:
    """An app answering paths under ``/w`` only in a worker's turn (``NeedsWorker`` until
    ``answered`` holds ``worker``), everything else at once."""

    def app(request: Request) -> Response:
        if "worker" not in answered and request.path.startswith("/w"):
            raise NeedsWorker
        answered.append(request.path)
        return Response.text(request.path)

    return app


def _turns(pipeline: bytes, count: int) -> tuple[list[Outcome], list[str], list[bytes]]:
    """An inline turn then, if it hands over, a worker's turn on ``pipeline``: their outcomes,
    the paths answered (``inline`` marks the start of the inline turn, ``worker`` the other),
    and the first ``count`` bodies the client reads."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        config = ServerConfig(port=0, access_log=False)
        answered = ["inline"]
        app = _inline_app(answered)
        client_end.sendall(pipeline)
        client_end.settimeout(NET_TIMEOUT)
        outcomes = [serve_ready(conn, app, config, lambda: False, inline=True).outcome]
        if outcomes[0] is Outcome.WORKER:
            assert conn.mode is Mode.PLAIN  # nothing of the rest was consumed
            answered.append("worker")
            outcomes.append(serve_ready(conn, app, config, lambda: False, lambda: True).outcome)
        reader = WireReader(client_end)
        bodies = [reader.read().body for _ in range(count)]
        conn.close()
    return outcomes, answered, bodies


def test_an_inline_turn_answers_what_it_read_and_parks_after_one_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An inline turn receives once, answers the plain requests its app answers, and parks
    without trying another read (epoll reports what comes next)."""
    receives: list[int] = []
    real = Connection.receive

    def counting(self: Connection) -> int:
        receives.append(1)
        return real(self)

    monkeypatch.setattr(Connection, "receive", counting)
    outcomes, answered, bodies = _turns(get("/a") + get("/b"), 2)
    assert outcomes == [Outcome.HEAD]
    assert answered == ["inline", "/a", "/b"]
    assert bodies == [b"/a", b"/b"]
    assert len(receives) == 1


def test_an_inline_turn_leaves_what_it_does_not_answer_to_a_worker_in_order() -> None:
    """A request the inline app declines, and a request with a body, end the inline turn with
    nothing of them consumed; a worker answers them and what follows, in order."""
    pipeline = (
        get("/a")
        + get("/w1")
        + get("/b")
        + b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        + get("/c")
    )
    outcomes, answered, bodies = _turns(pipeline, 5)
    assert outcomes == [Outcome.WORKER, Outcome.HEAD]
    assert answered == ["inline", "/a", "worker", "/w1", "/b", "/p", "/c"]
    assert bodies == [b"/a", b"/w1", b"/b", b"/p", b"/c"]
    _, answered, bodies = _turns(get("/a") + b"POST /p HTTP/1.1\r\nHost: x\r\n\r\n", 2)
    assert answered == ["inline", "/a", "worker", "/p"]
    assert bodies == [b"/a", b"/p"]


def test_an_inline_turn_answers_at_most_its_share_of_a_pipeline() -> None:
    """An inline turn answers ``INLINE_REQUESTS`` of a long pipeline, then a worker answers
    the rest, in order: one client's burst does not hold the selector thread for long."""
    count = INLINE_REQUESTS + 5
    pipeline = b"".join(get(f"/{i}") for i in range(count))
    outcomes, answered, bodies = _turns(pipeline, count)
    assert outcomes == [Outcome.WORKER, Outcome.HEAD]
    assert answered.index("worker") == INLINE_REQUESTS + 1
    assert bodies == [f"/{i}".encode() for i in range(count)]
