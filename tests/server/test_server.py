"""The server's concurrency and lifecycle: parked idle connections, timeouts, graceful stop."""

from __future__ import annotations

import resource
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from webserver import Handler, Request, Response, Server
from webserver.testing import running_server

from .conftest import NET_TIMEOUT, connect, open_fds
from .wire import WireReader

GET = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for a few thousand sockets in this process (client and server ends)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if wanted < 2600:
        pytest.skip(f"descriptor limit {hard} is too low for 1,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_keep_alive_connections_hold_no_thread(www: Path, many_fds: None) -> None:
    """With 4 threads and 1,000 idle keep-alive connections open, a new client is still served,
    and so is every idle one when it speaks again."""
    with running_server(root=www, threads=4, access_log=False) as server:
        idle = []
        try:
            for _ in range(1000):
                sock = connect(server)
                sock.sendall(GET)
                idle.append((sock, WireReader(sock)))
            for _, reader in idle:
                assert reader.read().status == 200
            with connect(server) as fresh:
                fresh.sendall(GET)
                assert WireReader(fresh).read().body == b"hello, world\n"
            for sock, reader in idle[::50]:
                sock.sendall(GET)
                assert reader.read().status == 200
        finally:
            for sock, _ in idle:
                sock.close()


def test_idle_timeout_closes_parked_connection(www: Path) -> None:
    """A keep-alive connection silent for longer than the idle timeout is closed by the server."""
    with (
        running_server(root=www, keep_alive_timeout=0.2, access_log=False) as server,
        connect(server) as sock,
    ):
        sock.sendall(GET)
        reader = WireReader(sock)
        assert reader.read().status == 200
        sock.settimeout(NET_TIMEOUT)
        assert reader.at_eof()


class Gate(Handler):
    """Answers only when the test opens the gate; tells the test when a request is inside."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def get(self, request: Request) -> Response:
        self.entered.set()
        assert self.release.wait(NET_TIMEOUT)
        return Response.text("finished\n")


def test_graceful_shutdown_finishes_in_flight(www: Path) -> None:
    """On shutdown an in-flight request completes (with Connection: close), idle connections
    are closed and new connections are refused."""
    gate = Gate()
    server = Server(root=www, port=0, access_log=False)
    server.route("/slow", gate)
    host, port = server.listen()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        busy = connect(server)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        idle = connect(server)
        idle.sendall(GET)
        idle_reader = WireReader(idle)
        assert idle_reader.read().status == 200
        assert gate.entered.wait(NET_TIMEOUT)
        server.shutdown()
        # The idle connection is closed by the server...
        assert idle_reader.at_eof()
        # ...no new connection is accepted once the listener is closed...
        gate.release.set()
        response = WireReader(busy).read()
        assert (response.status, response.body) == (200, b"finished\n")
        assert response.header("Connection") == "close"
        assert server.wait_stopped(NET_TIMEOUT)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=NET_TIMEOUT)
    finally:
        gate.release.set()
        server.shutdown()
        thread.join(NET_TIMEOUT)
        busy.close()
        idle.close()
    assert not thread.is_alive()


class SlowReader(Handler):
    """Reads the request body, which the test never finishes sending."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def post(self, request: Request) -> Response:
        self.entered.set()
        return Response.text(f"{len(request.body.read())}\n")


def test_stuck_request_is_cut_off_after_grace(www: Path) -> None:
    """A request still running after the grace period does not keep the server from stopping."""
    handler = SlowReader()
    server = Server(root=www, port=0, grace_period=0.2, access_log=False)
    server.route("/slow", handler)
    server.listen()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with connect(server) as sock:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            assert handler.entered.wait(NET_TIMEOUT)
            server.shutdown()
            assert server.wait_stopped(NET_TIMEOUT)
            # The stalled client finds its connection closed, with no response.
            assert sock.recv(100) == b""
    finally:
        server.shutdown()
        thread.join(NET_TIMEOUT)
    assert not thread.is_alive()


def test_no_descriptor_leak_after_many_connections(www: Path) -> None:
    """Hundreds of connections, closed in every way, leave no descriptor open in the server."""
    with running_server(root=www, access_log=False) as server:
        baseline = open_fds()
        for i in range(200):
            sock = connect(server)
            if i % 3 == 0:
                sock.sendall(GET)
                WireReader(sock).read()
            elif i % 3 == 1:
                sock.sendall(b"GET /hel")  # vanish mid-request
            sock.close()
        # One more full exchange; by then the server has seen every close it will act on.
        with connect(server) as sock:
            sock.sendall(GET)
            WireReader(sock).read()
    # Once stopped, every connection descriptor the server held is gone.
    assert open_fds() <= baseline
