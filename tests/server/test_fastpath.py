"""The fast path frames exactly what h11 would: differential tests against h11 itself, and the
hand-over between the two on one connection over real sockets."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from webserver import Handler, Request, Response, Server
from webserver._fastpath import parse_plain_request, plain_response_head
from webserver.errors import HTTPError
from webserver.framing import HeadLimits, check_request_head
from webserver.testing import running_server

from .conftest import connect, recv_until_closed
from .wire import WireReader

LIMITS = HeadLimits(max_request_line=200, max_head_size=600, max_header_count=8)

# -- requests: accepted heads are h11's, field for field ----------------------------------------

_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "get", "GE T", "GET\x00"])
_TARGETS = st.one_of(
    st.sampled_from(["/", "/a.txt", "/a?b=c", "*", "http://x/a", "/%00", "/a b", "/\x80", ""]),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=30).map(
        lambda t: "/" + t
    ),
)
_VERSIONS = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "http/1.1", "HTTP/1.1 "]
)
_NAMES = st.one_of(
    st.sampled_from(
        [
            "Host",
            "host",
            "HOST",
            "Connection",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "Upgrade",
            "Accept",
            "X-A",
            "Bad Name",
            "",
            "N\x80",
            "Host ",
        ]
    ),
    st.text(alphabet="abcXYZ-_!~:\t ", min_size=0, max_size=8),
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            "x",
            "close",
            "Close",
            "keep-alive",
            "upgrade",
            "keep-alive, Upgrade",
            " close ,x",
            "0",
            "100-continue",
            "chunked",
            "",
            " ",
            "a\tb",
            "a\x00b",
            "a\x7fb",
            "\xff\x80",
            "a\x01",
            "a  b ",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=12),
)
_SEPARATORS = st.sampled_from([": ", ":", " : ", ":\t", ":  "])
_NEWLINES = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    newline = draw(_NEWLINES)
    lines = [f"{draw(_METHODS)} {draw(_TARGETS)} {draw(_VERSIONS)}"]
    if draw(st.booleans()):
        lines.append("Host: example")
    for _ in range(draw(st.integers(0, 9))):
        lines.append(f"{draw(_NAMES)}{draw(_SEPARATORS)}{draw(_VALUES)}")
    if draw(st.booleans()):
        lines.insert(1 + draw(st.integers(0, len(lines) - 1)), " folded")
    return (newline.join(lines) + newline + draw(_NEWLINES)).encode("latin-1")


def _h11_parse(head: bytes) -> tuple[h11.Request, bool]:
    """h11's reading of ``head`` and whether it keeps the connection alive after answering."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    request = conn.next_event()
    assert type(request) is h11.Request, request
    assert type(conn.next_event()) is h11.EndOfMessage  # no body
    assert conn.their_state in (h11.DONE, h11.MUST_CLOSE)  # not MIGHT_SWITCH_PROTOCOL
    conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    return request, conn.our_state is h11.DONE


PLAIN_HEADS = [
    b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",  # wrk
    b"GET /a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"HEAD /a HTTP/1.0\r\n\r\n",
    b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost:h\r\nX-Obs: caf\xe9\r\nX-Empty:\r\nX-Sp:  a  b  \r\n\r\n",
]


@pytest.mark.parametrize("head", PLAIN_HEADS)
def test_common_heads_take_the_fast_path(head: bytes) -> None:
    plain = parse_plain_request(head, LIMITS)
    assert plain is not None
    request, keep_alive = _h11_parse(head)
    assert plain.method == request.method.decode()
    assert plain.close is not keep_alive


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",  # a body: h11
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",  # h11: a switch proposal
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: h11 answers 400
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",  # bare LF: the strict checks answer 400
        b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",  # h11 allows; we leave it to h11
        b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n",  # over max_request_line
        b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 8 + b"\r\n",  # over max_header_count
        b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 600 + b"\r\n\r\n",  # over max_head_size
    ],
)
def test_other_heads_are_left_to_h11(head: bytes) -> None:
    assert parse_plain_request(head, LIMITS) is None


@given(request_heads())
@example(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n")
@example(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
def test_accepted_heads_parse_as_h11_parses_them(head: bytes) -> None:
    plain = parse_plain_request(head, LIMITS)
    if plain is None:
        return
    check_request_head(head, LIMITS)  # the strict checks would have let it through too
    request, keep_alive = _h11_parse(head)
    assert plain.method == request.method.decode("latin-1")
    assert plain.target == request.target.decode("latin-1")
    assert plain.http_version == request.http_version.decode("latin-1")
    assert plain.fields == tuple(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
    )
    assert plain.close is not keep_alive


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_accepted_only_as_h11_would(data: bytes) -> None:
    plain = parse_plain_request(data, LIMITS)
    if plain is not None:
        request, _ = _h11_parse(data)
        assert plain.target == request.target.decode("latin-1")


# -- responses: a head written here is the one h11 writes --------------------------------------

_RESPONSE_NAMES = st.one_of(
    st.sampled_from(
        [
            "Content-Type",
            "Content-Length",
            "content-length",
            "ETag",
            "Transfer-Encoding",
            "Connection",
            "Host",
            "Location",
            "Date",
            "Bad Name",
            "",
            "X\u0100",
        ]
    ),
    st.text(alphabet="abcXYZ-_!~:\t ", min_size=0, max_size=6),
)
_RESPONSE_VALUES = st.one_of(
    st.sampled_from(
        ["0", "5", "05", "1, 1", "-1", "chunked", "close", "a b", " a", "a ", "\u0100"]
    ),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=260), max_size=10),
)


def _h11_response_head(
    method: bytes, status: int, reason: str, fields: list[tuple[str, str]], close: bool
) -> h11.Connection | bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(method + b" / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event()
    conn.next_event()
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
    if close:
        headers.append((b"Connection", b"close"))
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason.encode()))
    assert data is not None
    return data


@given(
    status=st.sampled_from([200, 201, 204, 299, 301, 304, 404, 500, 599, 600, 101]),
    fields=st.lists(st.tuples(_RESPONSE_NAMES, _RESPONSE_VALUES), max_size=5),
    body=st.one_of(st.none(), st.binary(max_size=8)),
    close=st.booleans(),
)
@example(status=200, fields=[("Content-Length", "3")], body=b"abc", close=False)
@example(status=304, fields=[("ETag", '"x"')], body=None, close=True)
@example(status=304, fields=[("Content-Length", "9" * 21)], body=None, close=False)
def test_plain_response_heads_are_h11s(
    status: int, fields: list[tuple[str, str]], body: bytes | None, close: bool
) -> None:
    head = plain_response_head(
        status, "Reason", fields, body_length=None if body is None else len(body), close=close
    )
    if head is None:
        return
    method = b"HEAD" if body is None and status not in (204, 304) else b"GET"
    assert head == _h11_response_head(method, status, "Reason", fields, close)
    if body is not None:
        # h11 would also accept the body that follows, and no more.
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        conn.next_event()
        conn.next_event()
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
        conn.send(h11.Response(status_code=status, headers=headers))
        if body:
            conn.send(h11.Data(data=body))
        conn.send(h11.EndOfMessage())


def test_unknown_length_and_framing_fields_are_left_to_h11() -> None:
    ok = [("Content-Length", "3")]
    assert plain_response_head(200, "OK", ok, body_length=3, close=False) is not None
    assert plain_response_head(200, "OK", [], body_length=3, close=False) is None
    assert plain_response_head(200, "OK", ok, body_length=4, close=False) is None
    for extra in [("Transfer-Encoding", "chunked"), ("Connection", "x"), ("Host", "h")]:
        assert plain_response_head(200, "OK", [*ok, extra], body_length=3, close=False) is None
    assert plain_response_head(101, "", ok, body_length=3, close=False) is None
    long = [("Content-Length", "0" * 21)]  # h11 refuses more than 20 digits
    assert plain_response_head(200, "OK", long, body_length=0, close=False) is None


# -- over a socket: both paths on one connection -----------------------------------------------


class _Streaming(Handler):
    """A body of unknown length: the fast path hands this response to h11 (chunked)."""

    def get(self, request: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], iter([b"one ", b"two"]))


class _Framed(Handler):
    """A handler setting a hop-by-hop field itself: h11 frames it."""

    def get(self, request: Request) -> Response:
        return Response(200, [("Connection", "keep-alive")], b"framed")


@pytest.fixture
def mixed_server(www: Path) -> Iterator[Server]:
    def setup(srv: Server) -> None:
        srv.route("/stream", _Streaming())
        srv.route("/framed", _Framed())

    with running_server(root=www, access_log=False, setup=setup) as srv:
        yield srv


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


@pytest.mark.parametrize("one_write", [True, False], ids=["pipelined", "one-by-one"])
def test_fast_path_and_h11_alternate_on_one_connection(
    mixed_server: Server, www: Path, one_write: bool
) -> None:
    requests = [
        (_get("/hello.txt"), 200, b"hello, world\n"),
        (_get("/stream"), 200, b"one two"),  # plain request, h11 response
        (_get("/hello.txt"), 200, b"hello, world\n"),
        (b"POST /up.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 201, None),
        (_get("/framed"), 200, b"framed"),
        (_get("/hello.txt", b"Content-Length: 0\r\n"), 200, b"hello, world\n"),  # h11 request
        (b"\r\n" + _get("/docs/"), 200, b"<h1>docs</h1>\n"),
        (_get("/missing"), 404, None),
        (_get("/hello.txt"), 200, b"hello, world\n"),
    ]
    with connect(mixed_server) as sock:
        reader = WireReader(sock)
        if one_write:
            sock.sendall(b"".join(raw for raw, _, _ in requests))
        for raw, status, body in requests:
            if not one_write:
                sock.sendall(raw)
            response = reader.read()
            assert response.status == status, raw
            if body is not None:
                assert response.body == body
        assert response.header("Connection") is None
    assert (www / "up.txt").read_bytes() == b"abc"


def _normalized(raw: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", raw)


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/hello.txt", b""),
        ("/data.bin", b""),
        ("/missing", b""),
        ("/docs", b""),  # 301 to the slash
        ("/hello.txt", b"If-None-Match: *\r\n"),  # 304
        ("/stream", b""),
        ("/framed", b""),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_fast_path_answers_byte_for_byte_as_h11(
    mixed_server: Server, path: str, extra: bytes, method: str
) -> None:
    """The same request with and without ``Content-Length: 0`` (which sends it through h11)
    gets the same bytes back, Date aside."""
    answers = []
    for framing in (b"", b"Content-Length: 0\r\n"):
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()
        with connect(mixed_server) as sock:
            sock.sendall(head + extra + framing + b"\r\n")
            answers.append(_normalized(recv_until_closed(sock)))
    assert answers[0] == answers[1]
    assert answers[0].startswith(b"HTTP/1.1 ")


def test_client_closing_mid_head_is_answered_400(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost:")
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def test_http10_plain_request_closes(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        raw = recv_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in raw
    assert raw.endswith(b"\r\n\r\nhello, world\n")


def test_strict_checks_still_apply_before_the_fast_path(server: Server) -> None:
    with pytest.raises(HTTPError):
        check_request_head(b"GET / HTTP/1.1\nHost: h\n\n", LIMITS)
    with connect(server) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\nHost: t\n\n")
        assert recv_until_closed(sock).startswith(b"HTTP/1.1 400 ")


def test_a_repeated_response_field_is_checked_once_and_a_bad_one_stays_refused() -> None:
    """The check of a response field is remembered: a head sent again looks its fields up
    instead of matching them again, and a field h11 refuses is refused every time."""
    from webserver._fastpath import _checked_field

    _checked_field.cache_clear()
    fields = [("Server", "ws"), ("Content-Length", "2")]
    first = plain_response_head(200, "OK", fields, body_length=2, close=False)
    hits = _checked_field.cache_info().hits
    assert plain_response_head(200, "OK", fields, body_length=2, close=False) == first
    assert _checked_field.cache_info().hits == hits + len(fields)
    bad = [("X-Bad", "a\r\nb"), ("Content-Length", "2")]
    for _ in range(2):
        assert plain_response_head(200, "OK", bad, body_length=2, close=False) is None
