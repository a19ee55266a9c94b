"""The server's concurrency and lifecycle: parked idle connections, timeouts, graceful stop."""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from webserver import Handler, Request, Response, Server
from webserver._connection import Owner
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


def wait_for_owner(server: Server, owner: Owner) -> None:
    """Wait until some connection of ``server`` is in state ``owner``."""
    deadline = time.monotonic() + NET_TIMEOUT
    while not any(c.owner is owner for c in list(server._poller.connections.values())):
        assert time.monotonic() < deadline, f"no connection reached {owner}"
        threading.Event().wait(0.005)


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
    with running_server(
        root=www,
        access_log=False,
        threads=1,
        grace_period=0.3,
        setup=lambda srv: srv.route("/slow", handler),
    ) as server:
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
    """While one client's upload stalls mid-body (its worker blocked reading), other clients
    are still answered: a stuck worker lets another one start."""
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
        assert WireReader(stalled).read().status == 200
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
        running_server(
            root=www, access_log=False, setup=lambda srv: srv.route("/block", Blocking())
        ) as server,
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
