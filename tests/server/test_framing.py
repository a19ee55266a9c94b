"""Request heads refused before h11 sees them: smuggling vectors, sizes, versions, targets."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver import HTTPError, Server
from webserver.framing import HeadLimits, check_head_prefix, check_request_head, find_head_end
from webserver.testing import running_server

from .conftest import connect
from .wire import WireReader

LIMITS = HeadLimits(max_request_line=8192, max_head_size=32768, max_header_count=100)
OK = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"

# (name, raw request, status). Every one is answered, then the connection is closed.
HOSTILE = [
    (
        "cl-and-te",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-and-cl",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("te-http10", b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip", b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (
        "te-gzip-chunked",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    (
        "te-twice",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        501,
    ),
    ("cl-list", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    (
        "cl-twice",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    ("cl-plus", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("cl-minus", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc", 400),
    ("cl-hex", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    ("cl-space-inside", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nabc", 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare-lf-one-line", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\r\n\r\n", 400),
    ("http2", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("http3", b"GET / HTTP/3.1\r\nHost: x\r\n\r\n", 505),
    ("relative-target", b"GET relative HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("asterisk-get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("ftp-target", b"GET ftp://x/y HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 501),
    ("cl-tabs", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length:\t3\t\r\n\r\nabc", 400),
    ("cl-tab-after", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\t\r\n\r\nabc", 400),
    ("userinfo-target", b"GET http://a:b@x/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("user-target", b"GET http://evil@x/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("empty-authority", b"GET http:///hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("host-space", b"GET /hello.txt HTTP/1.1\r\nHost: a b/c@d\r\n\r\n", 400),
    ("host-big-port", b"GET /hello.txt HTTP/1.1\r\nHost: x:99999999\r\n\r\n", 400),
    ("host-port-65536", b"GET /hello.txt HTTP/1.1\r\nHost: x:65536\r\n\r\n", 400),
    ("host-userinfo", b"GET /hello.txt HTTP/1.1\r\nHost: user@evil\r\n\r\n", 400),
    ("host-slash", b"GET /hello.txt HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host-bad-ipv6", b"GET /hello.txt HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400),
    ("host-http10", b"GET /hello.txt HTTP/1.0\r\nHost: a/b\r\n\r\n", 400),
    ("long-line", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("big-head", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),
    ("many-fields", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ("endless-head", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 7000, 431),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (
        "bad-chunk-size",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
]


@pytest.mark.parametrize(
    ("raw", "status"), [(r, s) for _, r, s in HOSTILE], ids=[name for name, _, _ in HOSTILE]
)
def test_hostile_head_answered_then_closed(server: Server, raw: bytes, status: int) -> None:
    """Each hostile request gets its precise status and Connection: close, and a request
    pipelined behind it is never processed (no second response)."""
    with connect(server) as sock:
        sock.sendall(raw + OK)
        reader = WireReader(sock)
        response = reader.read()
        assert response.status == status
        assert response.header("Connection") == "close"
        # The server may reset after lingering; either way nothing more was answered.
        with contextlib.suppress(ConnectionResetError):
            assert reader.at_eof()


def test_smuggled_request_is_not_answered(server: Server) -> None:
    """The classic CL.TE smuggle: the body hides a second request, which must never run."""
    smuggled = b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (
        b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % len(body)
    ) + body
    with connect(server) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"GET / HTTP/1.1\r\n\r\nrest", 18), (b"GET /\n\nx", 7), (b"GET / HTTP/1.1\r\nHost", -1)],
)
def test_find_head_end(raw: bytes, expected: int) -> None:
    """The head ends after the first blank line, CRLF or bare LF."""
    assert find_head_end(raw) == expected


@pytest.mark.parametrize(
    "head",
    [
        OK,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET http://[::1]:8080/y HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length:  10 \r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1:65535\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\nX:\t\x01a b\t\r\n\r\n",
    ],
)
def test_valid_heads_pass(head: bytes) -> None:
    """Well-formed heads of every target form are left alone."""
    check_request_head(head, LIMITS)


LINE = st.sampled_from(
    [
        b"Host: x",
        b"Content-Length: 5",
        b"Content-Length: 5, 5",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip",
        b" folded",
        b"X: y",
        b"Content-Length: -1",
        b"",
    ]
)


@given(
    request_line=st.sampled_from(
        [b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"GET * HTTP/1.1", b"GET / HTTP/2.0", b"junk"]
    ),
    lines=st.lists(LINE, max_size=6),
    newline=st.sampled_from([b"\r\n", b"\n"]),
)
def test_fuzz_head_checks(request_line: bytes, lines: list[bytes], newline: bytes) -> None:
    """Any head either passes or raises HTTPError with a 4xx/5xx status and close set."""
    head = newline.join([request_line, *lines]) + newline + newline
    try:
        check_request_head(head, LIMITS)
    except HTTPError as exc:
        refused: HTTPError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.close
        assert 400 <= refused.status < 600
    else:
        assert newline == b"\r\n"
        if request_line == b"junk" or b"" in lines:
            return  # left for h11, which refuses a malformed head itself
        assert b" folded" not in lines
        assert sum(line.startswith(b"Content-Length") for line in lines) <= 1


@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes never raise anything but HTTPError."""
    end = find_head_end(data)
    with contextlib.suppress(HTTPError):
        check_request_head(data[:end] if end > 0 else data, LIMITS)


LF_CRLF = [
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\n\r\n",
    b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX: a\r\n  folded\n\r\n",
    b"GET /hello.txt HTTP/1.1\r\nHost: x\n\r\n",
]


@pytest.mark.parametrize("head", LF_CRLF)
def test_head_ending_in_lf_crlf_is_checked(server: Server, head: bytes) -> None:
    """A head ending in LF CRLF (which h11 accepts as an end) is checked like any other: 400."""
    with connect(server) as sock:
        sock.sendall(head)
        response = WireReader(sock).read()
    assert response.status == 400


def test_cl_te_smuggling_through_lf_crlf(server: Server) -> None:
    """The CL.TE smuggle with the head ended by LF CRLF is refused; the hidden GET never runs."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /up.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\n"
            b"Transfer-Encoding: chunked\n\r\n"
            b"0\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = WireReader(sock)
        assert reader.read().status == 400
        with contextlib.suppress(ConnectionResetError):
            assert reader.at_eof()


def test_find_head_end_uses_h11s_rule() -> None:
    """LF CR LF ends a head, as it does for h11."""
    head = b"GET / HTTP/1.1\r\nHost: x\n\r\n"
    assert find_head_end(head + b"rest") == len(head)


# -- a head is refused at the first byte that makes it invalid ----------------------------------

# (name, the start of a head that can no longer become valid, status)
EARLY = [
    ("bad-method-byte", b"GE\x01", 400),
    ("bad-target-byte", b"GET /a\x7f", 400),
    ("third-space", b"GET / HTTP/1.1 ", 400),
    ("long-request-line", b"GET /" + b"a" * 9000, 414),
    ("http2", b"GET / HTTP/2.0\r\n", 505),
    ("connect", b"CONNECT x:443 HTTP/1.1\r\n", 501),
    ("userinfo-target", b"GET http://a@b/ HTTP/1.1\r\n", 400),
    ("relative-target", b"GET a HTTP/1.1\r\n", 400),
    ("bad-field-name-byte", b"GET / HTTP/1.1\r\nHo st", 400),
    ("empty-field-name", b"GET / HTTP/1.1\r\n:", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\n ", 400),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost", 400),
    ("bare-lf-field", b"GET / HTTP/1.1\r\nHost: x\nX", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nX: a\x00", 400),
    ("cr-without-lf", b"GET / HTTP/1.1\r\nX: a\rb", 400),
    ("too-many-fields", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101, 431),
]


@pytest.mark.parametrize("piece", [None, 1], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(
    ("start", "status"), [(r, s) for _, r, s in EARLY], ids=[name for name, _, _ in EARLY]
)
def test_invalid_head_is_answered_at_its_first_bad_byte(
    www: Path, start: bytes, status: int, piece: int | None
) -> None:
    """The answer comes as soon as the head cannot become valid, with no end of head, no end of
    stream and long before the head deadline, however the bytes are split."""
    with (
        running_server(root=www, access_log=False, header_timeout=60.0) as srv,
        connect(srv) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = piece if piece is not None and len(start) < 1000 else len(start)
        for i in range(0, len(start), size):
            sock.sendall(start[i : i + size])
        response = WireReader(sock).read()
    assert response.status == status
    assert response.header("Connection") == "close"


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\nHost: x\r\nX: a b\t", b"\r\n\r"])
def test_a_valid_start_of_a_head_is_not_refused(start: bytes) -> None:
    """Any prefix of a head that can still become valid passes."""
    for end in range(len(start) + 1):
        check_head_prefix(start[:end], 0, LIMITS)


def _verdict(data: bytes, checked: int = 0, *, whole: bool = False) -> int | None:
    """The status ``data`` is refused with (by the prefix or the whole-head check), or None."""
    refused: HTTPError | None = None
    try:
        if whole:
            check_request_head(data, SMALL)
        else:
            check_head_prefix(data, checked, SMALL)
    except HTTPError as exc:
        refused = exc
    if refused is None:
        return None
    assert refused.close
    return refused.status


HEAD_PIECES = st.one_of(
    st.sampled_from(
        [
            b"GET / HTTP/1.1\r\n",
            b"GET http://a@b/ HTTP/1.1\r\n",
            b"CONNECT a:1 HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"Host: x\r\n",
            b"Host: a/b\r\n",
            b"Content-Length:\t3\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"X: y\r\n",
            b" folded\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b":",
            b" ",
            b"\x00",
        ]
    ),
    st.binary(max_size=4),
)
SMALL = HeadLimits(max_request_line=40, max_head_size=120, max_header_count=4)


@given(pieces=st.lists(HEAD_PIECES, max_size=10), data=st.data())
def test_prefix_check_is_incremental_and_in_byte_order(
    pieces: list[bytes], data: st.DataObject
) -> None:
    """Checking a head from where the last check stopped gives the verdict of checking it from
    the start; once a prefix is refused every longer one is refused with the same status; and
    the whole-head check gives the status of the first refused prefix."""
    head = b"".join(pieces)
    split = data.draw(st.integers(0, len(head)))
    first = _verdict(head[:split])
    whole = _verdict(head)
    if first is None:
        assert _verdict(head, split) == whole
    else:
        assert whole == first
    end = find_head_end(head)
    if end >= 0:
        statuses = (_verdict(head[:k]) for k in range(end + 1))
        refused = next((s for s in statuses if s is not None), None)
        if refused is not None:
            assert _verdict(head[:end], whole=True) == refused
