"""The client's fast path writes and reads exactly what h11 would: differential tests against h11,
and the hand-over between the two on one connection."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import h11
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from webclient import ConnectionClosed, ProtocolError
from webclient._origin import OriginConnection, WireRequest
from webclient._plainhead import parse_plain_response_head, plain_request_head

from .conftest import BadServer

_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=260), max_size=10)
_NAMES = st.one_of(
    st.sampled_from(
        [
            "Host",
            "host",
            "Accept",
            "If-None-Match",
            "Connection",
            "Content-Length",
            "Transfer-Encoding",
            "Upgrade",
            "Bad Name",
            "",
        ]
    ),
    st.text(alphabet="abcXYZ-_!~:\t ", max_size=6),
)
_VALUES = st.one_of(
    st.sampled_from(["h", "*/*", '"e"', "", "a b", " a", "a ", "0", "close"]), _TEXT
)


# -- requests --------------------------------------------------------------------------------


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "get", "G T"]),
    target=st.one_of(st.sampled_from(["/", "/a?b", "*", "/a b", "", "/\x80"]), _TEXT),
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
    host=st.booleans(),
)
@example(method="GET", target="/a", headers=[("Accept", "*/*")], host=True)
def test_plain_request_heads_are_h11s(
    method: str, target: str, headers: list[tuple[str, str]], host: bool
) -> None:
    if host:
        headers = [*headers, ("Host", "example:80")]
    head = plain_request_head(method, target, headers)
    if head is None:
        return
    request = h11.Request(
        method=method,
        target=target.encode("latin-1"),
        headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
    )
    assert head == h11.Connection(h11.CLIENT).send(request)


def test_requests_that_need_h11_are_left_to_it() -> None:
    host = [("Host", "h")]
    assert plain_request_head("GET", "/", host) is not None
    assert plain_request_head("GET", "/", []) is None  # h11 refuses: no Host
    assert plain_request_head("GET", "/", host * 2) is None
    assert plain_request_head("POST", "/", host) is None
    assert plain_request_head("GET", "/a b", host) is None
    for name in ("Content-Length", "Connection", "Upgrade", "Expect", "TE"):
        assert plain_request_head("GET", "/", [*host, (name, "x")]) is None


# -- responses -------------------------------------------------------------------------------

_STATUS_LINES = st.sampled_from(
    [
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200",
        "HTTP/1.1 200 ",
        "HTTP/1.1 404 Not  Found",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 100 Continue",
        "HTTP/1.1 101 Switching",
        "HTTP/1.0 200 OK",
        "HTTP/1.1 600 X",
        "HTTP/1.1 200 caf\xe9",
        "HTTP/1.1 200 a\x01b",
        "HTTP/1.1 2000 OK",
        "HTTP/2 200 OK",
    ]
)
_RESPONSE_NAMES = st.one_of(
    st.sampled_from(
        ["Content-Length", "content-length", "Transfer-Encoding", "Connection", "ETag", "X"]
    ),
    _NAMES,
)
_RESPONSE_VALUES = st.one_of(
    st.sampled_from(["0", "3", "03", "3, 3", "-1", " 3 ", "chunked", "close", "keep-alive"]),
    _VALUES,
)


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    newline = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    lines = [draw(_STATUS_LINES)]
    lines += [
        f"{draw(_RESPONSE_NAMES)}{draw(st.sampled_from([': ', ':', ' :']))}{draw(_RESPONSE_VALUES)}"
        for _ in range(draw(st.integers(0, 5)))
    ]
    return (newline.join(lines) + newline + newline).encode("utf-8")


@given(head=response_heads(), head_request=st.booleans())
@example(head=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", head_request=False)
@example(
    head=b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", head_request=False
)
@example(
    head=b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n"
    b"Content-Length: 0\r\n\r\n",
    head_request=False,
)
@example(
    head=b"HTTP/1.1 304 Not Modified\r\nContent-Length: " + b"9" * 21 + b"\r\n\r\n",
    head_request=False,
)
@example(head=b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 21 + b"\r\n\r\n", head_request=False)
def test_plain_response_heads_parse_as_h11_parses_them(head: bytes, head_request: bool) -> None:
    plain = parse_plain_response_head(head, head_request=head_request)
    if plain is None:
        return
    reader = h11.Connection(h11.CLIENT)
    reader.send(
        h11.Request(method="HEAD" if head_request else "GET", target="/", headers=[("Host", "h")])
    )
    reader.send(h11.EndOfMessage())
    reader.receive_data(head + b"x" * plain.body_length)
    response = reader.next_event()
    assert type(response) is h11.Response
    assert plain.status == response.status_code
    assert plain.reason == response.reason.decode("latin-1")
    assert plain.fields == [
        (n.lower().decode("latin-1"), v.decode("latin-1")) for n, v in response.headers.raw_items()
    ]
    if plain.body_length:
        data = reader.next_event()
        assert type(data) is h11.Data and len(data.data) == plain.body_length
    assert type(reader.next_event()) is h11.EndOfMessage
    assert (reader.their_state is h11.MUST_CLOSE) is plain.close


@given(head=response_heads(), head_request=st.booleans(), extra=st.binary(min_size=1, max_size=8))
@example(head=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", head_request=False, extra=b"\r\n")
@example(head=b"HTTP/1.1 204 No Content\r\n\r\n", head_request=False, extra=b"HTTP/1.1")
def test_plain_response_heads_are_accepted_only_whole(
    head: bytes, head_request: bool, extra: bytes
) -> None:
    """A head the fast path accepts is accepted whole only: none of its proper prefixes (the
    head arriving byte by byte) and not the head with trailing bytes behind it (the connection
    hands it exactly the bytes up to the blank line)."""
    if parse_plain_response_head(head, head_request=head_request) is None:
        return
    for end in range(len(head)):
        assert parse_plain_response_head(head[:end], head_request=head_request) is None
    assert parse_plain_response_head(head + extra, head_request=head_request) is None


def test_responses_that_need_h11_are_left_to_it() -> None:
    def parse(head: bytes) -> object:
        return parse_plain_response_head(head, head_request=False)

    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n") is not None
    assert parse(b"HTTP/1.1 200 OK\r\n\r\n") is None  # body runs to the close
    assert parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") is None
    assert parse(b"HTTP/1.1 100 Continue\r\n\r\n") is None
    assert parse(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n") is None
    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n") is None
    assert parse(b"HTTP/1.1 200 OK\nContent-Length: 3\n\n") is None
    assert parse_plain_response_head(b"HTTP/1.1 200 OK\r\n\r\n", head_request=True) is not None


# -- one connection, both paths --------------------------------------------------------------


@contextlib.contextmanager
def _connected(
    *replies: bytes, hang: bool = False, timeout: float = 2
) -> Iterator[OriginConnection]:
    """A client connection to a server that answers with ``replies``; closed afterwards."""
    with BadServer(*replies, hang=hang) as server:
        conn = OriginConnection("127.0.0.1", server.port, timeout=timeout)
        try:
            yield conn
        finally:
            conn.close()


def _response(body: bytes, *fields: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def test_plain_and_h11_responses_alternate_on_one_connection() -> None:
    replies = [
        (_response(b"one", b"Content-Length: 3"), b"one"),
        (_response(b"3\r\ntwo\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"), b"two"),  # h11
        (_response(b"three", b"Content-Length: 5"), b"three"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + _response(b"four", b"Content-Length: 4"), b"four"),
        (_response(b"", b"Content-Length: 0"), b""),
        (_response(b"six", b"X-Odd: a\x01b", b"Content-Length: 3"), b"six"),  # h11
        (_response(b"seven", b"Content-Length: 5"), b"seven"),
    ]
    request = WireRequest("GET", "/x", [("Host", "h")])
    with _connected(b"".join(raw for raw, _ in replies), hang=True) as conn:
        for _ in replies:
            conn.send(request)
        for _, body in replies:
            head = conn.receive_head(request)
            assert head.status == 200
            assert b"".join(conn.iter_body()) == body
            assert conn.reusable
        assert conn.answered == len(replies)
        assert not conn.has_buffered()


@pytest.mark.parametrize(
    "fields",
    [
        [b"Connection: close"],
        [b"Connection: close", b"Connection: keep-alive"],  # h11 reads every Connection field
    ],
)
def test_connection_close_ends_reuse(fields: list[bytes]) -> None:
    reply = _response(b"ok", b"Content-Length: 2", *fields)
    request = WireRequest("GET", "/x", [("Host", "h")])
    with _connected(reply) as conn:
        conn.send(request)
        conn.receive_head(request)
        assert b"".join(conn.iter_body()) == b"ok"
        assert not conn.reusable


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (b"", ConnectionClosed, "closed the connection without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", ProtocolError, "unexpectedly closed"),
        (
            _response(b"ab", b"Content-Length: 5"),
            ConnectionClosed,
            r"mid-response \(peer closed connection without sending complete message body"
            r" \(received 2 bytes, expected 5\)\)",
        ),
        (_response(b"", b"Content-Length: " + b"1" * 5000), ProtocolError, "bad Content-Length"),
        (_response(b"", b"Content-Length: " + b"1" * 21), ProtocolError, "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", ProtocolError, "larger than"),
        (b"NOT HTTP\r\n\r\n", ProtocolError, "invalid response"),
    ],
)
def test_broken_responses_fail_as_before(reply: bytes, error: type, message: str) -> None:
    request = WireRequest("GET", "/x", [("Host", "h")])
    with _connected(reply) as conn:
        conn.send(request)

        def read() -> bytes:
            conn.receive_head(request)
            return b"".join(conn.iter_body())

        with pytest.raises(error, match=message):
            read()
        assert not conn.reusable


@pytest.mark.parametrize("reply", [b"\r\n", b"\n", b"\x15\x03\x03\x00\x02\x02\x46"])
def test_what_cannot_start_a_response_fails_at_once(reply: bytes) -> None:
    """No waiting for a blank line (and the read timeout) when the first byte already rules a
    status line out, as h11 decides."""
    request = WireRequest("GET", "/x", [("Host", "h")])
    with _connected(reply, hang=True, timeout=5) as conn:
        conn.send(request)
        started = time.monotonic()
        with pytest.raises(ProtocolError):
            conn.receive_head(request)
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("reply", "complete"),
    [
        (_response(b"ok", b"Content-Length: 2"), True),
        (_response(b"ok", b"Content-Length: 2", b"Connection: close"), False),  # closing
        (_response(b"o", b"Content-Length: 2"), False),  # the rest has not arrived
        (_response(b"2\r\nok\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"), False),  # h11 reads it
    ],
)
def test_response_complete_only_for_a_whole_plain_response_on_a_kept_connection(
    reply: bytes, complete: bool
) -> None:
    """What lets the lane write the next request before handling this response."""
    request = WireRequest("GET", "/x", [("Host", "h")])
    with _connected(reply, hang=True) as conn:
        conn.send(request)
        conn.receive_head(request)
        assert conn.response_complete() is complete


def test_response_complete_is_false_once_the_server_has_closed() -> None:
    """A server that closes right after the response gets no request sent ahead on it."""
    reply = _response(b"ok", b"Content-Length: 2")
    request = WireRequest("GET", "/x", [("Host", "h")])
    with _connected(reply) as conn:  # closes its side after the reply
        conn.send(request)
        conn.receive_head(request)
        assert select.select([conn.sock], [], [], 2)[0]  # the end of stream has arrived
        assert not conn.response_complete()
