"""The client connection: writes requests, reads their responses with one h11 state machine."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from webclient import ProtocolError
from webclient._origin import OriginConnection, OriginState, ReadMode
from webclient._wire import WireRequest

from .conftest import BadServer, fresh_python

# -- responses that arrive together -------------------------------------------------------------


def test_pipelined_responses_in_one_buffer() -> None:
    """Several responses arriving in one read are split at their Content-Length, and the
    connection tells that the next one is already there (so the lane reads it before writing)."""
    reply = b"".join(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in (b"a", b"bc", b"")
    )
    with BadServer(reply, hang=True) as server:
        conn = OriginConnection("127.0.0.1", server.port, timeout=2)
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


# -- framing that readers could take differently (RFC 9112 §6.1, §6.3) --------------------------

_CHUNKED_OK = b"2\r\nok\r\n0\r\n\r\n"


@contextlib.contextmanager
def _answered(reply: bytes) -> Iterator[tuple[OriginConnection, bytes]]:
    """One GET answered with ``reply`` by a server that then stays open: the connection and the
    body read; closed afterwards."""
    with BadServer(reply, hang=True) as server:
        conn = OriginConnection("127.0.0.1", server.port, timeout=2)
        try:
            request = WireRequest("GET", "/x", [("Host", "h")])
            conn.send(request)
            conn.receive_head(request)
            yield conn, b"".join(conn.iter_body())
        finally:
            conn.close()


@pytest.mark.parametrize(
    "fields",
    [
        b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
        b"Content-Length: 99\r\nTransfer-Encoding: chunked\r\n",
    ],
)
def test_content_length_beside_transfer_encoding_ends_the_connection(fields: bytes) -> None:
    """The body is read as chunked (Transfer-Encoding wins), and the connection is not reused:
    another reader may have framed it by its Content-Length."""
    with _answered(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n" + _CHUNKED_OK) as (conn, body):
        assert body == b"ok"
        assert not conn.reusable


def test_transfer_encoding_in_http10_is_refused() -> None:
    """An HTTP/1.0 response with Transfer-Encoding has faulty framing: refused, and closed."""
    reply = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED_OK
    with BadServer(reply, hang=True) as server:
        conn = OriginConnection("127.0.0.1", server.port, timeout=2)
        try:
            request = WireRequest("GET", "/x", [("Host", "h")])
            conn.send(request)
            with pytest.raises(ProtocolError, match=r"Transfer-Encoding in an HTTP/1\.0 response"):
                conn.receive_head(request)
            assert not conn.reusable
        finally:
            conn.close()


def test_chunked_alone_keeps_the_connection() -> None:
    """The control case: a chunked HTTP/1.1 response leaves the connection reusable."""
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED_OK
    with _answered(reply) as (conn, body):
        assert body == b"ok"
        assert conn.reusable


# -- the state: one enum, one way to fail ----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "mode", "state"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ReadMode.PLAIN, OriginState.OPEN),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            ReadMode.PLAIN,
            OriginState.CLOSING,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED_OK,
            ReadMode.PLAIN,
            OriginState.OPEN,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"
            + _CHUNKED_OK,
            ReadMode.PLAIN,
            OriginState.CLOSING,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _CHUNKED_OK
            + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ReadMode.H11,
            OriginState.OPEN,
        ),
    ],
)
def test_state_after_a_response(reply: bytes, mode: ReadMode, state: OriginState) -> None:
    """After a whole response the connection is OPEN (reusable) unless the server said it
    closes, or framed the body two ways (CLOSING); h11, which reads a chunked response, hands
    the input back to the fast path once it is idle and empty, and keeps it while it holds
    bytes of the next response."""
    with _answered(reply) as (conn, body):
        assert body == b"ok"
        assert conn.state is state
        assert conn._mode is mode
        assert conn.reusable is (state is OriginState.OPEN)


def test_a_failure_breaks_the_connection_for_good() -> None:
    """An invalid response leaves the connection BROKEN through its one failure helper, and
    nothing moves it back (a later CLOSING is ignored)."""
    with BadServer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", hang=True) as server:
        conn = OriginConnection("127.0.0.1", server.port, timeout=2)
        try:
            request = WireRequest("GET", "/x", [("Host", "h")])
            conn.send(request)
            with pytest.raises(ProtocolError, match="invalid response"):
                conn.receive_head(request)
            assert conn.state is OriginState.BROKEN and not conn.reusable and conn.dropped()
            conn._set_state(OriginState.CLOSING)
            assert conn.state is OriginState.BROKEN
        finally:
            conn.close()


def test_plain_exchanges_never_load_h11() -> None:
    """A plain GET written and read by the fast path does not import h11 or the h11 reader
    (they are loaded the first time a connection needs them)."""
    code = (
        "import sys, socket, threading\n"
        "from webclient._origin import OriginConnection\n"
        "from webclient._wire import WireRequest\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "def serve():\n"
        "    peer, _ = listener.accept()\n"
        "    peer.recv(4096)\n"
        "    peer.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')\n"
        "    peer.recv(4096)\n"
        "threading.Thread(target=serve, daemon=True).start()\n"
        "conn = OriginConnection('127.0.0.1', listener.getsockname()[1], timeout=5)\n"
        "request = WireRequest('GET', '/x', [('Host', 'h')])\n"
        "conn.send(request)\n"
        "assert conn.receive_head(request).status == 200\n"
        "assert b''.join(conn.iter_body()) == b'ok'\n"
        "conn.close()\n"
        "print(sorted(m for m in sys.modules if m == 'h11' or m.endswith('_h11reader')))\n"
    )
    assert fresh_python(code) == "[]"


# -- responses read whole, byte by byte, in pieces, with the next response behind ------------------


class _Pieces:
    """A socket whose peer's bytes arrive at most ``size`` at a time (``0``: as they come)."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        self._sock = sock
        self._size = size

    def recv(self, count: int) -> bytes:
        return self._sock.recv(min(count, self._size) if self._size else count)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


_NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
_HTTP10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
_INTERIM = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Made\r\nContent-Length: 1\r\n\r\nx"
_READS = [
    ("GET", b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "a"\r\n\r\nhello', 200, b"hello", True),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _CHUNKED_OK,
        200,
        b"ok",
        True,
    ),
    ("GET", _INTERIM, 201, b"x", True),
    ("GET", _HTTP10, 200, b"ok", False),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 200, b"", True),
    ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 204, b"", True),
    ("GET", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, b"ok", True),  # bare LF: h11's
    ("GET", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", True),
]


@pytest.mark.parametrize("size", [0, 1, 2, 7], ids=["whole", "byte-by-byte", "2", "7"])
@pytest.mark.parametrize(("method", "reply", "status", "body", "reusable"), _READS)
def test_a_response_reads_the_same_however_it_arrives(
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    method: str,
    reply: bytes,
    status: int,
    body: bytes,
    reusable: bool,
) -> None:
    """The head and body of a response, and the response after it (trailing data), are read
    the same whether the bytes arrive whole, byte by byte or in small pieces, by the fast path
    or by h11: each response ends exactly where it should. (h11 keeps no HTTP/1.0 connection
    alive, so nothing is read after one.)"""
    ours, theirs = socket.socketpair()
    ours.settimeout(2)
    monkeypatch.setattr("webclient._origin.open_socket", lambda *_a: _Pieces(ours, size))
    conn = OriginConnection("h", 80, timeout=2)
    try:
        theirs.sendall(reply + _NEXT)
        request = WireRequest(method, "/x", [("Host", "h")])
        conn.send(request)
        head = conn.receive_head(request)
        assert (head.status, b"".join(conn.iter_body())) == (status, body)
        assert conn.reusable is reusable
        if not reusable:
            return
        follow = WireRequest("GET", "/y", [("Host", "h")])
        conn.send(follow)
        head = conn.receive_head(follow)
        assert (head.status, b"".join(conn.iter_body())) == (200, b"next")
        assert conn.answered == 2 and not conn.has_buffered()
    finally:
        conn.close()
        theirs.close()
