"""The supervisor of worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import NET_TIMEOUT, serving_process

STUCK_SERVER = textwrap.dedent(
    """
    import signal, sys, threading
    from webserver import Handler, Response, Server, ServerConfig, Supervisor
    from webserver.server import open_listener

    class Stuck(Handler):
        def get(self, request):
            print("entered", flush=True)
            threading.Event().wait(120)  # a handler stuck on something that never comes
            return Response.text("late")

    config = ServerConfig(root=sys.argv[1], port=0, grace_period=0.3, access_log=False)
    listener = open_listener(config)

    def make(sock):
        server = Server(config, listener=sock)
        server.route("/stuck", Stuck)
        return server

    supervisor = Supervisor(make, listener, 1, grace_period=config.grace_period, kill_after=0.5)
    signal.signal(signal.SIGTERM, supervisor.stop)
    print(listener.getsockname()[1], flush=True)
    sys.exit(supervisor.run())
    """
)


def test_workers_overstaying_the_grace_period_are_killed(tmp_path: Path) -> None:
    """SIGTERM to the parent ends it even when a worker's handler never returns: the worker is
    killed once the grace period and the margin have passed."""
    import socket

    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_SERVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=NET_TIMEOUT) as client:
            client.sendall(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
            assert proc.stdout.readline().strip() == "entered"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(NET_TIMEOUT) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(NET_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
        return [int(child) for child in file.read().split()]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            state = file.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed with SIGKILL cannot forward a stop: its workers stop by themselves
    instead of serving on, unsupervised."""
    argv = [sys.executable, "-m", "webserver", "run", "--port", "0", "--workers", "2"]
    with serving_process([*argv, "--root", str(tmp_path)]) as (proc, _line):
        assert _wait_until(lambda: len(_children(proc.pid)) == 2, NET_TIMEOUT)
        workers = _children(proc.pid)
        proc.kill()
        proc.wait(NET_TIMEOUT)
        assert _wait_until(lambda: not any(_running(w) for w in workers), NET_TIMEOUT)


def _established(port: int) -> set[str]:
    """Socket inodes of the established TCP connections whose local port is ``port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as file:
            for row in list(file)[1:]:
                fields = row.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _held_by(pid: int, inodes: set[str]) -> int:
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            held += link.startswith("socket:[") and link[8:-1] in inodes
    return held


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_a_burst_of_connections_is_spread_over_the_workers(tmp_path: Path) -> None:
    """40 keep-alive connections opened at once land on both workers (each worker has its own
    accept queue on the port), not all on whichever worker woke first."""
    (tmp_path / "a.txt").write_text("a")
    argv = [sys.executable, "-m", "webserver", "run", "--port", "0", "--workers", "2"]
    with serving_process([*argv, "--root", str(tmp_path)]) as (proc, line):
        port = int(line.rsplit(":", 1)[1].strip("/"))
        assert _wait_until(lambda: len(_children(proc.pid)) == 2, NET_TIMEOUT)
        clients = [socket.create_connection(("127.0.0.1", port), NET_TIMEOUT) for _ in range(40)]
        try:
            for client in clients:
                client.sendall(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            for client in clients:
                assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
            mine = _established(port)
            held = [_held_by(worker, mine) for worker in _children(proc.pid)]
        finally:
            for client in clients:
                client.close()
    assert sum(held) == 40
    assert min(held) >= 5, held
