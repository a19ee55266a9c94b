"""The connection's own rules: no call waits for the peer, output leaves whole and in order,
and ownership changes only through park/claim."""

from __future__ import annotations

import gc
import os
import socket
import tempfile
import tracemalloc
from pathlib import Path

import h11
import pytest

from webserver._connection import (
    NOT_PLAIN,
    PARKED,
    Connection,
    Ended,
    Mode,
    Owner,
    Refuse,
    Wait,
)
from webserver._fastpath import PlainRequest
from webserver.framing import HeadLimits

LIMITS = HeadLimits(max_request_line=8192, max_head_size=32768, max_header_count=100)


def _read_all(sock: socket.socket, size: int) -> bytes:
    chunks = []
    got = 0
    while got < size:
        chunk = sock.recv(1 << 20)
        assert chunk, "the connection closed early"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_flush_into_a_full_buffer_keeps_the_rest_without_waiting() -> None:
    """When the client stops reading, flush returns at once with the unsent part kept; once
    the client reads, later flushes deliver every byte, bytes and file slices in order."""
    server_end, client_end = socket.socketpair()
    client_end.settimeout(10)
    with server_end, client_end, tempfile.TemporaryFile() as file:
        file.write(b"f" * (4 << 20))
        file.flush()
        conn = Connection(server_end, ("127.0.0.1", 1))
        conn.write(b"a" * (8 << 20))
        conn.write_file(os.fdopen(os.dup(file.fileno()), "rb"), 0, 4 << 20)
        conn.write(b"z")
        assert conn.flush() is False  # far more than the socket buffers hold
        assert conn.has_output
        received = bytearray()
        while len(received) < (12 << 20) + 1:
            conn.flush()
            received += client_end.recv(1 << 20)
        assert conn.flush() is True
        assert received == b"a" * (8 << 20) + b"f" * (4 << 20) + b"z"


def test_receive_without_data_does_not_wait() -> None:
    """A read with nothing to read raises BlockingIOError at once."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        with pytest.raises(BlockingIOError):
            conn.receive()


@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_next_request_from_a_head_in_pieces(pieces: int) -> None:
    """A head fed whole or in pieces gives Wait(partial) until it is complete, then the
    request; bytes after it stay for the next request."""
    head = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    stream = head + b"GET /b"
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        step = max(1, len(head) // pieces)
        cuts = [*range(step, len(head), step)]
        for start, end in zip([0, *cuts], cuts, strict=False):
            client_end.sendall(head[start:end])
            conn.receive()
            assert conn.next_request(LIMITS) == Wait(partial=True)
        client_end.sendall(stream[cuts[-1] if cuts else 0 :])
        conn.receive()
        request = conn.next_request(LIMITS)
        assert getattr(request, "target", None) == "/a"
        conn.take_plain_head()
        assert conn.next_request(LIMITS) == Wait(partial=True)


def test_invalid_head_is_refused() -> None:
    """A head the strict checks refuse is a Refuse with its status."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        client_end.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n")
        conn.receive()
        found = conn.next_request(LIMITS)
        assert isinstance(found, Refuse) and found.status == 400


def test_park_and_claim_are_the_only_way_ownership_changes(tmp_path: Path) -> None:
    """A parked connection is claimed once; a claim before its deadline (with ``due``) or
    from the wrong state takes nothing."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        assert conn.park(Owner.BODY, 10.0, 20.0, lambda: None)
        assert conn.claim(Owner.WORKER, PARKED, due=5.0) is None
        assert conn.claim(Owner.QUEUED, PARKED) is Owner.BODY
        assert conn.claim(Owner.QUEUED, PARKED) is None
        assert conn.claim(Owner.WORKER, frozenset({Owner.QUEUED}), due=15.0) is None  # hard one
        assert conn.claim(Owner.WORKER, frozenset({Owner.QUEUED}), due=20.0) is Owner.QUEUED
        assert conn.owner is Owner.WORKER


def test_a_failed_arm_leaves_the_connection_with_the_caller() -> None:
    """When registering the wait fails, park says so and the caller still owns it."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))

        def fail() -> None:
            raise OSError("epoll full")

        assert conn.park(Owner.HEAD, 1.0, 1.0, fail) is False
        assert conn.owner is Owner.WORKER


def test_an_idle_connection_after_a_plain_request_costs_about_a_kibibyte() -> None:
    """A connection that has answered a plain request and waits for the next holds no h11
    state machine and no output deque: about 1 KiB of Python objects, so 10,000 idle clients
    cost about 10 MiB (issue 14 asks at most 2 KiB each)."""
    count = 200
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            conns = []
            for server_end, client_end in pairs:
                conn = Connection(server_end, ("127.0.0.1", 1))
                client_end.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                conn.receive()
                assert conn.next_request(LIMITS) is not None
                conn.take_plain_head()
                conn.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                assert conn.flush()
                assert isinstance(conn.next_request(LIMITS), Wait)
                conns.append(conn)
            gc.collect()
            each = (tracemalloc.get_traced_memory()[0] - before) / count
        finally:
            tracemalloc.stop()
        assert all(conn._h11 is None for conn in conns)
        assert each <= 1536, f"{each:.0f} bytes per idle connection"
    finally:
        for server_end, client_end in pairs:
            server_end.close()
            client_end.close()


def test_the_h11_state_machine_is_built_when_first_needed_and_dropped_after() -> None:
    """Plain requests never build h11; a request only h11 can read builds it, and once its
    exchange is over with the next request already buffered, plain mode takes the bytes and
    lets that h11 go."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        assert conn._h11 is None
        # A body: h11 frames it; the next request follows in the same write.
        client_end.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        conn.receive()
        event = conn.next_request(LIMITS)
        assert conn._h11 is not None and conn.mode is Mode.H11
        assert type(event) is h11.Request
        while type(conn.h11.next_event()) is not h11.EndOfMessage:
            pass
        conn.send(h11.Response(status_code=204, headers=[]))
        conn.send(h11.EndOfMessage())
        assert conn.end_exchange()
        assert conn._h11 is None and conn.mode is Mode.PLAIN
        plain = conn.next_request(LIMITS)
        assert isinstance(plain, PlainRequest) and plain.target == "/next"


def test_plain_only_leaves_what_h11_must_read_untouched() -> None:
    """Asked for plain requests only, a head that needs h11 (a body) is not consumed and the
    mode stays plain; asked again without the flag, h11 parses the same request."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        client_end.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        conn.receive()
        assert conn.next_request(LIMITS, plain_only=True) is NOT_PLAIN
        assert conn.mode is Mode.PLAIN
        assert conn.next_request(LIMITS, plain_only=True) is NOT_PLAIN
        event = conn.next_request(LIMITS)
        assert isinstance(event, h11.Request)
        assert (event.method, event.target) == (b"POST", b"/p")
        conn.close()


def test_plain_only_sees_the_end_of_the_stream_between_requests() -> None:
    """A client that closed between requests ends the connection in a plain-only turn too
    (what h11 would say), without switching to h11."""
    server_end, client_end = socket.socketpair()
    with server_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        client_end.close()
        assert conn.receive() == 0
        assert isinstance(conn.next_request(LIMITS, plain_only=True), Ended)
        assert conn.mode is Mode.PLAIN
        conn.close()
