"""The server's concurrency and lifecycle: parked idle connections, timeouts, graceful stop."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from webserver import Handler, Request, Response, Router, Server, StaticFiles
from webserver._connection import Owner
from webserver._exchange import SELECTOR_BODY_BYTES
from webserver.framing import HeadLimits
from webserver.server import raise_open_files_limit
from webserver.testing import running_server

from .conftest import NET_TIMEOUT, connect, open_fds, serving, wait_for_owner
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
                reader = WireReader(sock)
                assert reader.read().status == 200
                idle.append((sock, reader))
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


def test_stalled_upload_is_cut_off_after_grace(www: Path) -> None:
    """A request whose body stalls does not keep the server from stopping past the grace period."""
    server = Server(root=www, port=0, grace_period=0.2, access_log=False)
    server.listen()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with connect(server) as sock:
            sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            wait_for_owner(server, Owner.BODY)
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
    baseline = open_fds()
    with running_server(root=www, access_log=False) as server:
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
    # Once stopped, every descriptor the server held is gone.
    assert open_fds() == baseline


def test_slow_head_gets_408_without_deadline_reset(www: Path) -> None:
    """A head trickled a byte at a time is cut off with 408 once the head deadline passes,
    although bytes keep arriving (the deadline runs from the first byte)."""
    head = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 200
    with (
        running_server(root=www, header_timeout=0.3, access_log=False) as server,
        connect(server) as sock,
    ):
        pause = threading.Event()
        sent = 0
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                pause.wait(0.01)  # pacing of the attack itself, not a wait for the server
        except OSError:
            pass  # the server closed on us mid-trickle, as it should
        response = WireReader(sock).read()
    assert response.status == 408
    assert response.header("Connection") == "close"
    assert sent < len(head)


def test_too_many_connections_get_503(www: Path) -> None:
    """Past max_connections a new client is told 503 with Retry-After, not left waiting."""
    with running_server(root=www, max_connections=5, access_log=False) as server:
        held = []
        try:
            for _ in range(5):
                sock = connect(server)
                sock.sendall(GET)
                assert WireReader(sock).read().status == 200
                held.append(sock)
            with connect(server) as extra:
                response = WireReader(extra).read()
            assert response.status == 503
            assert response.header("Retry-After") == "1"
        finally:
            for sock in held:
                sock.close()
        # Once the server has seen the others go (it notices each close), new clients are served.
        statuses = []
        deadline = time.monotonic() + NET_TIMEOUT
        while time.monotonic() < deadline:
            with connect(server) as sock:
                sock.sendall(GET)
                statuses.append(WireReader(sock).read().status)
            if statuses[-1] == 200:
                break
        assert statuses[-1] == 200
        assert set(statuses) <= {200, 503}


def test_full_work_queue_gets_503(www: Path) -> None:
    """With every worker busy and the queue full, a further request gets 503 at once."""
    gate = Gate()

    def setup(srv: Server) -> None:
        srv.route("/slow", gate)

    with running_server(root=www, threads=1, max_queue=2, access_log=False, setup=setup) as server:
        busy = connect(server)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert gate.entered.wait(NET_TIMEOUT)
        waiting = [connect(server) for _ in range(3)]
        try:
            for sock in waiting:
                sock.sendall(GET)
            # Exactly one of the three finds the queue full; it is answered while the gate is shut.
            statuses = []
            readers = [WireReader(sock) for sock in waiting]
            refused = []
            for sock, reader in zip(waiting, readers, strict=True):
                sock.settimeout(0.5)
                try:
                    refused.append(reader.read().status)
                except TimeoutError:
                    continue
            assert refused == [503]
            gate.release.set()
            assert WireReader(busy).read().status == 200
            for sock, reader in zip(waiting, readers, strict=True):
                sock.settimeout(NET_TIMEOUT)
                try:
                    statuses.append(reader.read().status)
                except (EOFError, ConnectionResetError):
                    statuses.append(0)  # the refused one is closed
            assert sorted(statuses) == [0, 200, 200]
        finally:
            gate.release.set()
            busy.close()
            for sock in waiting:
                sock.close()


def test_requests_per_connection_cap(www: Path) -> None:
    """After max_requests_per_connection answers the connection is closed."""
    with (
        running_server(root=www, max_requests_per_connection=3, access_log=False) as server,
        connect(server) as sock,
    ):
        sock.sendall(GET * 5)
        reader = WireReader(sock)
        answers = [reader.read() for _ in range(3)]
        assert reader.at_eof()
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[2].header("Connection") == "close"


def test_client_gone_mid_response_frees_everything(www: Path) -> None:
    """A client that disconnects in the middle of a large download leaves no stuck worker and
    no open descriptor."""
    (www / "big.bin").write_bytes(b"\0" * (8 * 1024 * 1024))
    baseline = open_fds()
    with running_server(root=www, threads=1, access_log=False) as server:
        for _ in range(5):
            sock = connect(server)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000)
            sock.close()
        # The single worker is free again: a normal request is answered.
        with connect(server) as sock:
            sock.sendall(GET)
            assert WireReader(sock).read().status == 200
    # Every descriptor the server opened is closed once it has stopped.
    assert open_fds() == baseline


def test_graceful_shutdown_under_load(www: Path) -> None:
    """Clients hammering the server while it stops see only complete responses or a refusal."""
    (www / "mid.bin").write_bytes(bytes(range(256)) * 400)
    expected = (www / "mid.bin").read_bytes()
    truncated: list[str] = []
    completed = [0] * 4
    warmed = threading.Barrier(5, timeout=NET_TIMEOUT)
    with running_server(root=www, access_log=False) as server:

        def client(index: int) -> None:
            waited = False
            for _ in range(2000):
                try:
                    with connect(server) as sock:
                        reader = WireReader(sock)
                        for _ in range(20):
                            sock.sendall(b"GET /mid.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                            response = reader.read()
                            if response.body != expected:
                                truncated.append(f"short body {len(response.body)}")
                            completed[index] += 1
                            if response.header("Connection") == "close":
                                break
                            if completed[index] == 5 and not waited:
                                waited = True
                                warmed.wait()
                except EOFError as exc:
                    if "body" in str(exc) or reader.buffer:
                        truncated.append(str(exc))  # a response cut off midway
                    continue  # closed between responses: allowed
                except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                    return
                if server.stopping and server.wait_stopped(0):
                    return
            return

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        warmed.wait()
        # Leaving the with block shuts the server down while the clients are still busy.
    for thread in threads:
        thread.join(NET_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert truncated == []
    assert all(count >= 5 for count in completed)


def test_busy_keep_alive_client_cannot_starve_others(www: Path) -> None:
    """With one worker thread, a client sending requests back to back does not keep the worker
    from answering another client: a worker only lingers on a connection nobody else waits for."""
    with running_server(root=www, threads=1, access_log=False) as server:
        stop = threading.Event()
        served = [0]

        def hammer() -> None:
            with connect(server) as sock:
                reader = WireReader(sock)
                for _ in range(20_000):
                    if stop.is_set():
                        return
                    sock.sendall(GET)
                    reader.read()
                    served[0] += 1

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            while served[0] < 50:  # the hammering client is in full swing
                if not thread.is_alive():
                    pytest.fail("the hammering client stopped early")
                threading.Event().wait(0.001)
            with connect(server) as other:
                other.sendall(GET)
                assert WireReader(other).read().status == 200
            assert thread.is_alive(), "the other client was answered only after the first ended"
        finally:
            stop.set()
            thread.join(NET_TIMEOUT)


def test_ipv6_loopback(www: Path) -> None:
    """The server listens on ::1 and its URL puts the address in brackets."""
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with running_server(root=www, host="::1", access_log=False) as server:
        host, port = server.listen()
        assert server.url == f"http://[::1]:{port}/"
        with socket.create_connection((host, port), timeout=NET_TIMEOUT) as sock:
            sock.sendall(GET)
            assert WireReader(sock).read().body == b"hello, world\n"


class SlowHandler(Handler):
    """Takes a second to answer; tells the test when a request is inside."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    def get(self, request: Request) -> Response:
        self.entered.set()
        threading.Event().wait(1.0)  # the slow work this handler stands for
        return Response.text("slow\n")


def test_connections_queued_at_stop_are_closed(www: Path) -> None:
    """A connection still waiting for a worker when the grace period ends is closed, not
    leaked."""
    handler = SlowHandler()
    before = open_fds()
    with serving(www, "/slow", handler, threads=1, grace_period=0.3) as server:
        busy = connect(server)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert handler.entered.wait(NET_TIMEOUT)
        queued = connect(server)
        queued.sendall(GET)
        deadline = time.monotonic() + NET_TIMEOUT
        while not server._ready:  # the second connection waits for the only worker
            assert time.monotonic() < deadline, "the second request never reached the pool"
            threading.Event().wait(0.005)
    busy.close()
    queued.close()
    assert open_fds() == before


def test_stalled_upload_does_not_hold_up_others(www: Path) -> None:
    """While one client's upload stalls mid-body (parked in the selector, no worker held), other
    clients are still answered, and the upload completes when the rest arrives."""
    with (
        running_server(root=www, threads=2, access_log=False) as server,
        connect(server) as stalled,
    ):
        stalled.sendall(b"POST /slow.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        for _ in range(5):
            with connect(server) as other:
                other.sendall(GET)
                assert WireReader(other).read().status == 200
        stalled.sendall(b"c" * 98)
        assert WireReader(stalled).read().status == 201
    assert (www / "slow.bin").read_bytes() == b"ab" + b"c" * 98


def test_blocking_handler_does_not_hold_up_others(www: Path) -> None:
    """A handler that blocks for a while does not delay requests for other paths."""
    release = threading.Event()
    entered = threading.Event()
    finished = threading.Event()

    class Blocking(Handler):
        def get(self, request: Request) -> Response:
            entered.set()
            release.wait(NET_TIMEOUT)
            finished.set()
            return Response.text("done\n")

    with (
        serving(www, "/block", Blocking()) as server,
        connect(server) as blocked,
    ):
        blocked.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(NET_TIMEOUT)
        with connect(server) as other:
            other.sendall(GET)
            assert WireReader(other).read().status == 200
        assert not release.is_set()  # answered while the handler was still blocked
        release.set()
        assert WireReader(blocked).read().body == b"done\n"


# -- slow clients hold no thread --------------------------------------------------------------

#: A file far larger than the socket buffers, so a client that does not read stops the sender.
BIG_SIZE = 64 << 20


def _big_file(www: Path) -> str:
    with (www / "big.bin").open("wb") as out:
        out.truncate(BIG_SIZE)  # sparse: costs no disk
    return "/big.bin"


def _non_reader(server: Server, target: str) -> socket.socket:
    """A client that asks for ``target`` and never reads the answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(NET_TIMEOUT)
    sock.connect(server.listen())
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_slow_uploaders_and_readers_do_not_delay_a_fresh_get(www: Path) -> None:
    """With 2 threads, 24 clients trickling an upload and 24 never reading a large file are all
    parked in the selector, and a fresh GET on a new connection is still answered."""
    target = _big_file(www)
    with running_server(root=www, threads=2, access_log=False) as server:
        clients = []
        try:
            for _ in range(24):
                sock = connect(server)
                sock.sendall(b"POST /up.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na")
                clients.append(sock)
                clients.append(_non_reader(server, target))
            wait_for_owner(server, Owner.BODY, 24)
            wait_for_owner(server, Owner.SEND, 24)
            with connect(server) as fresh:
                fresh.sendall(GET)
                assert WireReader(fresh).read().body == b"hello, world\n"
        finally:
            for sock in clients:
                sock.close()


def _cut_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything received until the server ends the connection, which it must within
    ``seconds``."""
    deadline = time.monotonic() + seconds
    received = bytearray()
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk
    pytest.fail(f"the connection was not cut within {seconds} s")


def test_open_files_soft_limit_is_raised_to_the_hard_one(restore_nofile: None) -> None:
    """At start the soft open-files limit goes up to the hard one; a count of connections the
    hard limit cannot hold is reported in a sentence."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    assert raise_open_files_limit(10) is None
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    if hard != resource.RLIM_INFINITY:
        notice = raise_open_files_limit(hard * 2)
        assert notice is not None and f"limit is {hard}" in notice


@pytest.fixture
def restore_nofile() -> Iterator[None]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def _trickle(sock: socket.socket, pieces: Iterable[bytes]) -> bytes:
    """Send ``pieces`` one per 0.1 s without an answer (60 pieces: 6 s at most); the first
    bytes the server answers with, or ``b""`` when it drops the connection or never answers."""
    sock.settimeout(0.1)
    for piece in pieces:
        try:
            sock.sendall(piece)
            return sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    return b""


def test_trickled_head_is_cut_at_the_header_timeout(www: Path) -> None:
    """A request line followed by one header line every 0.1 s gets 408 once the head deadline
    (counted from its first byte, never extended) has passed."""
    with (
        running_server(root=www, header_timeout=0.5, access_log=False) as server,
        connect(server) as sock,
    ):
        started = time.monotonic()
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\n")
        reply = _trickle(sock, (f"X-Slow-{i}: y\r\n".encode() for i in range(60)))
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert elapsed < 3.0


def test_trickled_body_is_cut_by_the_minimum_rate(www: Path) -> None:
    """A body trickled at 10 bytes/s (always some progress) is cut with 408 once it falls below
    the minimum rate after the body timeout; nothing is stored."""
    with (
        running_server(root=www, body_timeout=0.5, access_log=False) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"POST /trickle.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        started = time.monotonic()
        reply = _trickle(sock, [b"x"] * 60)
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert elapsed < 3.0
    assert not (www / "trickle.bin").exists()


def test_a_client_that_never_reads_is_cut_by_the_send_deadline(www: Path) -> None:
    """A client that reads nothing of a large file is dropped once no byte has left for the
    body timeout, and no worker is held meanwhile."""
    target = _big_file(www)
    with running_server(root=www, body_timeout=0.5, threads=1, access_log=False) as server:
        sock = _non_reader(server, target)
        with sock:
            wait_for_owner(server, Owner.SEND)
            with connect(server) as other:
                other.sendall(GET)
                assert WireReader(other).read().status == 200  # the only thread is free
            threading.Event().wait(1.5)  # the deadline passes while the client does not read
            received = _cut_within(sock, NET_TIMEOUT)
    assert len(received) < BIG_SIZE


def test_the_sweep_cuts_a_connection_queued_with_a_late_byte(www: Path) -> None:
    """A slow head whose deadline passed is cut with 408 even when a byte just arrived and it
    waits in the ready queue for a worker."""
    server = Server(root=www, port=0, access_log=False)
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        from webserver._connection import Connection

        conn = Connection(server_end, ("127.0.0.1", 1))
        client_end.sendall(b"GET / HTTP/1.1\r\n")
        conn.receive()
        conn.next_request(server_limits(server))  # a partial head: its deadline starts
        deadline = time.monotonic() + 0.1
        server._poller.add(conn)
        assert conn.park(Owner.HEAD, deadline, deadline, lambda: None)
        server._open = 1
        assert conn.claim(Owner.QUEUED, frozenset({Owner.HEAD})) is Owner.HEAD
        server._ready.append(conn)
        server._sweep(deadline + 0.01)
        assert not server._ready
        client_end.settimeout(NET_TIMEOUT)
        assert WireReader(client_end).read().status == 408
    server.close()


def server_limits(server: Server) -> HeadLimits:
    config = server.config
    return HeadLimits(config.max_request_line, config.max_head_size, config.max_header_count)


def test_the_body_arrives_whole_before_the_handler_runs(www: Path) -> None:
    """A handler runs only once the whole body has arrived: while it trickles in, the connection
    waits in the selector and the handler has not been called."""
    calls: list[bytes] = []

    class Echo(Handler):
        def post(self, request: Request) -> Response:
            calls.append(request.body.read())
            return Response.text("ok\n")

    with (
        serving(www, "/echo", Echo()) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        wait_for_owner(server, Owner.BODY)
        assert calls == []
        sock.sendall(b"def")
        assert WireReader(sock).read().status == 200
    assert calls == [b"abcdef"]


class _Collect(Handler):
    """Keeps every body it is given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def post(self, request: Request) -> Response:
        self.bodies.append(request.body.read())
        return Response.text("ok\n")


def _count_turns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the worker turns (``serve_ready`` calls) the server makes from now on."""
    import webserver.server as server_module

    turns: list[int] = []
    real = server_module.serve_ready  # type: ignore[attr-defined]

    def counting(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("inline"):  # the selector's own turns are not a worker's
            turns.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "serve_ready", counting)
    return turns


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + NET_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"never reached: {what}"
        threading.Event().wait(0.002)


def _incoming(server: Server) -> Any:
    (conn,) = list(server._poller.connections.values())
    return conn.incoming


def _pending_is(server: Server, count: int) -> Callable[[], bool]:
    return lambda: bool(_incoming(server).pending == count)


def test_a_trickled_body_is_received_without_a_worker_per_piece(
    www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Body bytes that trickle in while the connection is parked are received by the selector:
    twenty pieces cost two worker turns (the head, the last piece), and the body arrives whole."""
    turns = _count_turns(monkeypatch)
    handler = _Collect()
    with (
        serving(www, "/echo", handler) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 21\r\n\r\n")
        wait_for_owner(server, Owner.BODY)
        for i in range(20):
            sock.sendall(bytes([0x61 + i]))
            _wait_until(_pending_is(server, i + 1), f"{i + 1} bytes pending")
            wait_for_owner(server, Owner.BODY)
        sock.sendall(b"!")
        assert WireReader(sock).read().status == 200
    assert handler.bodies == [b"abcdefghijklmnopqrst!"]
    assert len(turns) == 2


def test_a_slow_body_moves_to_its_spool_each_time_enough_has_gathered(
    www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once ``SELECTOR_BODY_BYTES`` have gathered in the selector a worker moves them into the
    spool, so a slow large body is never held twice in memory; it still arrives whole."""
    turns = _count_turns(monkeypatch)
    handler = _Collect()
    piece = SELECTOR_BODY_BYTES * 5 // 8
    body = bytes(range(256)) * (piece * 3 // 256)
    with (
        serving(www, "/echo", handler) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        wait_for_owner(server, Owner.BODY)
        sock.sendall(body[:piece])
        _wait_until(lambda: _incoming(server).pending == piece, "the first piece pending")
        sock.sendall(body[piece : 2 * piece])
        _wait_until(
            lambda: _incoming(server).spool.size == 2 * piece and _incoming(server).pending == 0,
            "two pieces spooled",
        )
        wait_for_owner(server, Owner.BODY)
        sock.sendall(body[2 * piece :])
        assert WireReader(sock).read().status == 200
    assert handler.bodies == [body]
    assert len(turns) == 3


def test_a_large_body_is_spooled_where_its_handler_asks_and_can_be_linked(
    www: Path, tmp_path: Path
) -> None:
    """A body too large for memory is spooled in the folder its handler names, as a private
    file the handler can link into place without copying it; the spool's own name is removed
    after the response."""
    spool = tmp_path / "spool"
    spool.mkdir()
    seen: list[str] = []

    class Keeper(Handler):
        def spool_folder(self) -> str | None:
            return str(spool)

        def post(self, request: Request) -> Response:
            path = request.body.spooled_path
            assert path is not None
            seen.append(path)
            os.link(path, spool / "kept.bin")
            return Response.text("kept\n")

    body = os.urandom(300_000)
    with (
        serving(www, "/keep", Keeper()) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"POST /keep HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + body)
        assert WireReader(sock).read().status == 200
    assert seen and seen[0].startswith(str(spool))
    assert (spool / "kept.bin").read_bytes() == body
    assert oct((spool / "kept.bin").stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in spool.iterdir()) == ["kept.bin"]


#: A program using the library as its documentation shows: a handler that waits for the test
#: to let it answer, so a signal arrives while a request is in flight.
LIBRARY_SCRIPT = """
import signal, sys
from webserver import Handler, Response, Server

class Slow(Handler):
    def get(self, request):
        print("inside", flush=True)
        sys.stdin.readline()  # the test lets it answer after sending the signal
        return Response.text("finished\\n")

server = Server(root=sys.argv[1], port=0, access_log=False, grace_period=10)
server.route("/slow", Slow)
print(server.url, flush=True)
server.serve_forever(handle_signals=sys.argv[2] == "handle")
print("stopped", signal.getsignal(signal.SIGINT) is signal.default_int_handler,
      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
"""


def _run_library_script(tmp_path: Path, www: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "serve.py"
    script.write_text(LIBRARY_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(www), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_library_serve_forever_stops_gracefully_on_signal(
    tmp_path: Path, www: Path, signum: signal.Signals
) -> None:
    """A script calling serve_forever() stops on SIGINT/SIGTERM: the request in flight is
    answered, the previous handlers come back, exit status 0 and no traceback."""
    proc, url = _run_library_script(tmp_path, www, "handle")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=NET_TIMEOUT) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert proc.stdout.readline().strip() == "inside"
            proc.send_signal(signum)
            proc.stdin.write("\n")
            proc.stdin.flush()
            reply = WireReader(sock).read()
        assert reply.status == 200 and reply.body == b"finished\n"
        assert proc.wait(NET_TIMEOUT) == 0
        assert proc.stdout.read().split() == ["stopped", "True", "True"]
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(NET_TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_library_signals_are_left_alone_when_asked(tmp_path: Path, www: Path) -> None:
    """serve_forever(handle_signals=False) installs nothing: SIGTERM ends the process as the
    default action does (killed by the signal)."""
    proc, url = _run_library_script(tmp_path, www, "ignore")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        assert url.startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(NET_TIMEOUT) == -signal.SIGTERM
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(NET_TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_context_manager_serves_in_background_and_stops_on_exit(www: Path) -> None:
    """`with Server(...) as s:` serves at s.url inside the block; afterwards the port is closed
    and the serving thread has ended."""
    before = threading.active_count()
    with Server(root=www, port=0, access_log=False) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "hello.txt", timeout=NET_TIMEOUT) as answer:
            assert answer.read() == b"hello, world\n"
    assert server.wait_stopped(0)
    assert threading.active_count() == before
    with pytest.raises(ConnectionRefusedError):
        connect(server).close()


def test_url_names_the_bound_port(www: Path) -> None:
    """server.url is http://host:port/ with the port the kernel picked for port 0."""
    server = Server(root=www, port=0, access_log=False)
    try:
        host, port = server.listen()
        assert port != 0
        assert server.url == f"http://{host}:{port}/"
    finally:
        server.close()


def test_serves_on_tcp_and_a_unix_socket_at_once(tmp_path: Path, www: Path) -> None:
    """With a TCP and a unix: bind, both answer; the socket gets the mode asked and its file
    is removed at the stop."""
    path = tmp_path / "web.sock"
    binds = ("127.0.0.1:0", f"unix:{path}")
    with running_server(root=www, binds=binds, unix_mode=0o660, access_log=False) as server:
        assert server.urls[1] == f"unix:{path}"
        assert path.stat().st_mode & 0o777 == 0o660
        with connect(server) as sock:
            sock.sendall(GET)
            assert WireReader(sock).read().body == b"hello, world\n"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(NET_TIMEOUT)
            sock.connect(str(path))
            sock.sendall(GET)
            assert WireReader(sock).read().body == b"hello, world\n"
    assert not path.exists()


def test_a_lingering_worker_loop_takes_the_next_ready_connections(
    www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker loop that ran last waits for the next ready connection instead of returning
    its thread: five requests on fresh connections, one after another, start one loop; the stop
    still ends it at once."""
    import webserver.server as server_module

    monkeypatch.setattr(server_module, "LINGER_FOR_WORK", 60.0)
    loops: list[int] = []
    real = Server._work_loop

    def counting(self: Server) -> None:
        loops.append(1)
        real(self)

    monkeypatch.setattr(Server, "_work_loop", counting)
    with running_server(root=www, access_log=False) as server:
        for _ in range(5):
            with connect(server) as sock:
                sock.sendall(GET)
                assert WireReader(sock).read().status == 200
        started = time.monotonic()
    assert time.monotonic() - started < NET_TIMEOUT / 2
    assert len(loops) == 1


def _plain_get(sock: socket.socket, reader: WireReader, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    response = reader.read()
    assert response.status == 200
    return response.body


def _no_worker_busy(server: Server) -> Callable[[], bool]:
    return lambda: server._running == server._lingering and not server._ready


def test_keep_alive_gets_of_a_cached_file_need_no_worker(
    www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a small file is cached, the selector answers keep-alive GETs of it itself: ten
    requests after the first cost no worker turn, and each answer is the file."""
    turns = _count_turns(monkeypatch)
    with running_server(root=www, access_log=False) as server, connect(server) as sock:
        reader = WireReader(sock)
        assert _plain_get(sock, reader, "/hello.txt") == b"hello, world\n"
        assert len(turns) == 1  # not cached yet: a worker read the file
        for _ in range(10):
            wait_for_owner(server, Owner.HEAD)
            _wait_until(_no_worker_busy(server), "no worker busy")
            assert _plain_get(sock, reader, "/hello.txt") == b"hello, world\n"
    assert len(turns) == 1


def _count_inline_turns(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the turns the selector runs itself from now on."""
    import webserver.server as server_module

    inline: list[int] = []
    real = server_module.serve_ready  # type: ignore[attr-defined]

    def counting(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inline"):
            inline.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "serve_ready", counting)
    return inline


def test_an_app_wrapped_by_a_subclass_is_always_run_by_a_worker(
    www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subclass that overrides ``app`` may run code that waits: the selector answers
    nothing itself, and the wrapper sees every request."""
    inline = _count_inline_turns(monkeypatch)
    seen: list[str] = []

    class Wrapped(Server):
        def app(self, request: Request) -> Response:
            seen.append(request.path)
            return super().app(request)

    wrapped = Wrapped(root=www, port=0, access_log=False)
    with running_server(server=wrapped) as server, connect(server) as sock:
        reader = WireReader(sock)
        for _ in range(5):
            assert _plain_get(sock, reader, "/hello.txt") == b"hello, world\n"
            wait_for_owner(server, Owner.HEAD)
    assert seen == ["/hello.txt"] * 5
    assert inline == []


def test_a_client_not_reading_cached_answers_does_not_hold_the_selector(www: Path) -> None:
    """A client that pipelines many GETs of a cached 60 KiB file and reads nothing is parked
    once the kernel's buffer is full; the selector goes on answering another client."""
    (www / "60k.bin").write_bytes(b"x" * 60_000)
    with (
        running_server(root=www, access_log=False) as server,
        socket.socket() as stuck,
        connect(server) as other,
    ):
        stuck.settimeout(NET_TIMEOUT)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        stuck.connect(server.listen())
        reader = WireReader(other)
        assert len(_plain_get(other, reader, "/60k.bin")) == 60_000  # now cached
        wait_for_owner(server, Owner.HEAD, count=2)
        _wait_until(_no_worker_busy(server), "no worker busy")
        stuck.sendall(b"GET /60k.bin HTTP/1.1\r\nHost: x\r\n\r\n" * 256)
        wait_for_owner(server, Owner.SEND)
        for _ in range(5):
            assert _plain_get(other, reader, "/hello.txt") == b"hello, world\n"


def test_a_router_whose_dispatch_is_replaced_sees_every_request(
    www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router subclass that overrides ``dispatch`` sees every request: the selector answers
    nothing itself behind its back."""
    inline = _count_inline_turns(monkeypatch)
    seen: list[str] = []

    class Watching(Router):
        def dispatch(self, request: Request) -> Response:
            seen.append(request.path)
            return super().dispatch(request)

    def use_watching(server: Server) -> None:
        watching = Watching()
        watching.add("/", StaticFiles(www), prefix=True)
        server.router = watching

    with (
        running_server(root=www, access_log=False, setup=use_watching) as server,
        connect(server) as sock,
    ):
        reader = WireReader(sock)
        for _ in range(5):
            assert _plain_get(sock, reader, "/hello.txt") == b"hello, world\n"
            wait_for_owner(server, Owner.HEAD)
    assert seen == ["/hello.txt"] * 5
    assert inline == []
