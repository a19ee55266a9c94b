"""The response writer: a generated body is pulled only as fast as the client reads."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from webserver import Handler, Request, Response
from webserver._connection import Owner
from webserver._writing import WINDOW

from .conftest import NET_TIMEOUT, connect, serving, wait_for_owner
from .wire import WireReader

CHUNK = 64 * 1024
CHUNKS = 1024  # 64 MiB in all, far more than the socket buffers hold


class Generated(Handler):
    """A large generated body that counts how much of it was pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    def get(self, request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            for _ in range(CHUNKS):
                self.pulled += CHUNK
                yield b"g" * CHUNK

        return Response(200, [("Content-Type", "application/octet-stream")], chunks())


def test_a_generated_body_is_pulled_only_as_the_client_reads(www: Path) -> None:
    """While the client reads nothing, the handler's iterator is pulled no further than the
    window plus what the socket buffers hold, and the connection waits in the selector; once
    the client reads, the whole body arrives intact."""
    handler = Generated()
    with serving(www, "/gen", handler) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(NET_TIMEOUT)
        with sock:
            sock.connect(server.listen())
            sock.sendall(b"GET /gen HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for_owner(server, Owner.SEND)
            sndbuf = 8 << 20  # generous bound on what the kernel buffers on both ends
            assert handler.pulled <= WINDOW + CHUNK + sndbuf
            assert handler.pulled < CHUNK * CHUNKS
            response = WireReader(sock).read()
        assert response.status == 200
        assert len(response.body) == CHUNK * CHUNKS
        with connect(server) as other:  # the server is fine afterwards
            other.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert WireReader(other).read().status == 200


def test_pipelined_answers_leave_in_order(www: Path) -> None:
    """Answers to pipelined requests (fast path, h11, a file, a generated body) arrive whole and
    in request order."""
    handler = Generated()
    with (
        serving(www, "/gen", handler) as server,
        connect(server) as sock,
    ):
        sock.sendall(
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /gen HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /data.bin HTTP/1.1\r\nHost: x\r\nX-Any: y\r\n\r\n"
            b"POST /p.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = WireReader(sock)
        bodies = [reader.read().body for _ in range(5)]
    assert bodies[0] == bodies[4] == b"hello, world\n"
    assert len(bodies[1]) == CHUNK * CHUNKS
    assert bodies[2] == (www / "data.bin").read_bytes()
    assert bodies[3].startswith(b"stored p.txt")


class Paced(Handler):
    """A body whose second chunk is produced only when the test says so."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def get(self, request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"first-chunk"
            self.go.wait(NET_TIMEOUT)
            yield b"second-chunk"

        return Response(200, [("Content-Type", "text/plain")], chunks())


def test_each_chunk_of_a_generated_body_leaves_as_it_is_produced(www: Path) -> None:
    """The first chunk reaches the client while the handler is still producing the next one
    (server-sent events, PEP 3333's "no delayed block"), not when the body ends."""
    handler = Paced()
    with serving(www, "/paced", handler) as server:
        with connect(server) as sock:
            sock.sendall(b"GET /paced HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            try:
                while b"first-chunk" not in received:
                    piece = sock.recv(65536)
                    assert piece, "connection closed before the first chunk"
                    received += piece
                assert b"second-chunk" not in received
            finally:
                handler.go.set()
            while not received.endswith(b"0\r\n\r\n"):
                piece = sock.recv(65536)
                assert piece
                received += piece
        assert b"second-chunk" in received
