"""Fixtures for server tests: a populated root folder and a server on an ephemeral port."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from webserver import Handler, Server
from webserver._connection import Owner
from webserver.testing import running_server

#: Every socket a test opens gets this timeout, so a wrong answer fails instead of hanging.
NET_TIMEOUT = 10.0


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A root folder with a text file, a binary file, a subfolder with an index, and a sibling
    folder outside the root holding a secret that must never be served."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 64)
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "empty").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET\n")
    return root


@pytest.fixture
def server(www: Path) -> Iterator[Server]:
    with running_server(root=www, access_log=False) as srv:
        yield srv


def serving(
    www: Path, path: str, handler: Handler, **settings: Any
) -> AbstractContextManager[Server]:
    """A quiet server of ``www`` with ``handler`` routed at ``path`` (and any other
    ``settings``), running for the ``with`` block."""
    return running_server(
        root=www, access_log=False, setup=lambda srv: srv.route(path, handler), **settings
    )


def connect(server: Server) -> socket.socket:
    """A raw client socket to ``server`` with the test timeout."""
    host, port = server.listen()  # the bound address, also once the server has stopped
    return socket.create_connection((host, port), timeout=NET_TIMEOUT)


def wait_for_owner(server: Server, owner: Owner, count: int = 1) -> None:
    """Wait until ``count`` connections of ``server`` are parked in state ``owner``."""
    deadline = time.monotonic() + NET_TIMEOUT
    while sum(c.owner is owner for c in list(server._poller.connections.values())) < count:
        assert time.monotonic() < deadline, f"fewer than {count} connections reached {owner}"
        threading.Event().wait(0.005)


def recv_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def open_fds() -> int:
    """Descriptors this process holds (Linux), to prove a test leaked none."""
    return len(os.listdir("/proc/self/fd"))


SERVING = re.compile(r"^Serving (?P<root>.+) on http://(?P<host>[^/]+):(?P<port>\d+)/$")


@contextmanager
def serving_process(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``argv`` (a ``webserver run`` command line), wait for its first stdout line, which
    must say ``Serving ...``, and yield the process and the line; killed if still running at
    the end."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=pass_fds,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        assert line.startswith("Serving "), (
            f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        )
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(NET_TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@contextmanager
def webserver_process(
    *args: str, cwd: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """Start ``python -m webserver run ARGS`` (in ``cwd``) and wait for its readiness line."""
    argv = [sys.executable, "-m", "webserver", "run", *args]
    with serving_process(argv, cwd=cwd) as (proc, line):
        match = SERVING.match(line)
        assert match, f"unexpected first line {line!r}"
        yield proc, match


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET of ``path`` on 127.0.0.1:``port`` over a new connection: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def peak_rss_kib(pid: int) -> int:
    """The peak resident memory (VmHWM) of a process so far, in KiB (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, "no VmHWM in /proc/PID/status"
    return int(match.group(1))
