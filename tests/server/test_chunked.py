"""Chunked request bodies are framed by our checks before h11 reads them: the same verdict and
the same end of body as h11 for valid bodies, however the bytes are split; a bad chunk line or
trailer is a 400 and nothing after it is read as a request."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver import Server
from webserver._chunked import MAX_CHUNK_LINE, BodyFramingError, ChunkedBodyCheck
from webserver.framing import HeadLimits

from .conftest import connect, recv_until_closed
from .wire import WireReader

LIMITS = HeadLimits(max_request_line=8192, max_head_size=1024, max_header_count=4)
HEAD = b"POST /up.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"


def _feed(body: bytes, pieces: list[int]) -> tuple[int, bool]:
    """Feed ``body`` cut at ``pieces``; bytes taken as body, and whether the body ended."""
    check = ChunkedBodyCheck(LIMITS)
    taken, start = 0, 0
    for cut in [*sorted(pieces), len(body)]:
        if not check.done:
            taken += check.feed(body[start:cut])
        start = cut
    return taken, check.done


def _splits(body: bytes) -> list[list[int]]:
    """Whole, and byte by byte."""
    return [[], list(range(1, len(body)))]


def _h11_body_end(body: bytes) -> int:
    """Where h11 ends the body in ``body`` (which holds more after it)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(HEAD + body)
    while type(conn.next_event()) is not h11.EndOfMessage:
        pass
    return len(body) - len(conn.trailing_data[0])


_TOKEN = st.text("abcXYZ019-!#$%&'*+.^_`|~", min_size=1, max_size=6).map(str.encode)
_QUOTED = st.text(' \tabc;=,\\"\x80', max_size=6).map(
    lambda s: b'"' + s.replace("\\", "\\\\").replace('"', '\\"').encode("latin-1") + b'"'
)
_EXT = st.tuples(_TOKEN, st.none() | _TOKEN | _QUOTED).map(
    lambda p: b";" + p[0] + (b"" if p[1] is None else b"=" + p[1])
)
_CHUNK = st.tuples(st.binary(min_size=1, max_size=40), st.lists(_EXT, max_size=3)).map(
    lambda p: b"%x" % len(p[0]) + b"".join(p[1]) + b"\r\n" + p[0] + b"\r\n"
)
_TRAILER = st.tuples(_TOKEN, st.text("ab \t\x01", max_size=8)).map(
    lambda p: p[0] + b":" + p[1].encode() + b"\r\n"
)
VALID_BODY = st.tuples(
    st.lists(_CHUNK, max_size=5), st.lists(_EXT, max_size=2), st.lists(_TRAILER, max_size=3)
).map(lambda p: b"".join(p[0]) + b"0" + b"".join(p[1]) + b"\r\n" + b"".join(p[2]) + b"\r\n")


@given(body=VALID_BODY, after=st.sampled_from([b"", NEXT, b"\r\n", b"x"]), data=st.data())
def test_valid_bodies_end_where_h11_ends_them(
    body: bytes, after: bytes, data: st.DataObject
) -> None:
    """A valid body passes and ends exactly where h11 ends it, fed whole, byte by byte or in
    random pieces; the bytes after it are left for the next request."""
    stream = body + after
    random = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    for pieces in [*_splits(stream), random]:
        assert _feed(stream, pieces) == (len(body), True)
    assert _h11_body_end(stream) == len(body)


# (name, body, status)
BAD = [
    ("bare-cr-in-extension", b"41;a=b\r\r\n" + b"x" * 0x41 + b"\r\n0\r\n\r\n", 400),
    ("bare-cr-after-size", b"5\rx\r\n", 400),
    ("bare-lf", b"5\nhello\r\n0\r\n\r\n", 400),
    ("nul-in-extension", b"5;a=\x00\r\nhello\r\n0\r\n\r\n", 400),
    ("control-in-extension", b"5;a\x01\r\nhello\r\n0\r\n\r\n", 400),
    ("extension-without-name", b"5;=b\r\nhello\r\n0\r\n\r\n", 400),
    ("unclosed-quoted-string", b'5;a="b\r\nhello\r\n0\r\n\r\n', 400),
    ("space-before-semicolon", b"5 ;a\r\nhello\r\n0\r\n\r\n", 400),
    ("bad-size", b"zz\r\n", 400),
    ("negative-size", b"-5\r\nhello\r\n0\r\n\r\n", 400),
    ("size-too-long", b"1" * 17 + b"\r\n", 400),
    ("long-chunk-line", b"5;a=" + b"b" * MAX_CHUNK_LINE + b"\r\n", 400),
    ("no-crlf-after-data", b"5\r\nhelloX\r\n0\r\n\r\n", 400),
    ("trailer-bare-lf", b"0\r\nX: y\n\r\n", 400),
    ("trailer-obs-fold", b"0\r\nX: y\r\n z\r\n\r\n", 400),
    ("trailer-no-colon", b"0\r\nXy\r\n\r\n", 400),
    ("trailer-nul", b"0\r\nX: \x00\r\n\r\n", 400),
    ("too-many-trailers", b"0\r\n" + b"X: y\r\n" * 5 + b"\r\n", 431),
    ("trailers-too-large", b"0\r\nX: " + b"y" * 1100 + b"\r\n\r\n", 431),
]


@pytest.mark.parametrize(
    ("body", "status"), [(b, s) for _, b, s in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_framing_is_refused_however_split(body: bytes, status: int) -> None:
    """Each bad body is refused with its status, fed whole or byte by byte."""
    for pieces in _splits(body + NEXT):
        with pytest.raises(BodyFramingError) as info:
            _feed(body + NEXT, pieces)
        assert info.value.status == status
        assert info.value.close


def _verdict(stream: bytes, pieces: list[int]) -> tuple[int, bool] | int:
    try:
        return _feed(stream, pieces)
    except BodyFramingError as exc:
        return exc.status


@given(
    stream=st.lists(
        st.sampled_from(
            [b"5", b";a=b", b'"q"', b"\r", b"\n", b"\r\n", b"hello", b"0", b" ", b"X: y"]
        )
        | st.binary(max_size=3),
        max_size=12,
    ).map(b"".join),
    data=st.data(),
)
def test_any_bytes_get_one_verdict_however_split(stream: bytes, data: st.DataObject) -> None:
    """Arbitrary bytes get the same verdict (refused with a status, or where the body ends) fed
    whole, byte by byte or in random pieces; a body we accept is one h11 ends at the same byte."""
    random = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    verdicts = {repr(_verdict(stream, pieces)) for pieces in [*_splits(stream), random]}
    assert len(verdicts) == 1
    verdict = _verdict(stream, [])
    if isinstance(verdict, tuple) and verdict[1]:
        assert _h11_body_end(stream) == verdict[0]


# -- over a socket -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        HEAD,
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"DELETE /hello.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["upload", "get-unread", "405-unread"],
)
@pytest.mark.parametrize("later", [False, True], ids=["buffered", "after-the-head"])
@pytest.mark.parametrize(
    ("body", "status"),
    [(b, s) for _, b, s in BAD if s == 400],
    ids=[n for n, _, s in BAD if s == 400],
)
def test_bad_body_is_400_and_nothing_after_it_runs(
    server: Server, www: Path, head: bytes, body: bytes, status: int, later: bool
) -> None:
    """A bad chunked body is answered with its 4xx (not the handler's 200/405, as nginx does) and
    closed, whether or not the handler reads it; the request after it is never answered and no
    upload is stored."""
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if later:
            sock.sendall(head)
            sock.sendall(body + NEXT)
        else:
            sock.sendall(head + body + NEXT)
        with contextlib.suppress(ConnectionResetError):
            data = recv_until_closed(sock)
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert not (www / "up.txt").exists()


def test_extensions_and_trailers_are_accepted(server: Server, www: Path) -> None:
    """Chunk extensions (token and quoted values) and trailer fields are valid framing: the
    upload is stored and the next request on the connection is answered."""
    body = b'5;a=b;c="d;\\"e"\r\nhello\r\n0;z\r\nX-Sum: 1\r\n\r\n'
    with connect(server) as sock:
        sock.sendall(HEAD + body + NEXT)
        reader = WireReader(sock)
        assert reader.read().status == 201
        assert reader.read().status == 200
    assert (www / "up.txt").read_bytes() == b"hello"
