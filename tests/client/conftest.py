"""Fixtures for client tests: a scriptable origin, a movable clock, third-party servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from webclient import Client, ClientConfig
from webserver import Handler, Request, Response, Server
from webserver.testing import running_server

#: Longest wait for a third-party server to accept connections.
STARTUP_DEADLINE = 10.0
#: The client timeout in tests: a wrong answer fails instead of hanging.
CLIENT_TIMEOUT = 5.0


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Long fuzzing runs only on request (``--run-slow`` when registered, or WEBCLIENT_SLOW=1)."""
    if item.get_closest_marker("slow") is None:
        return
    wanted = bool(item.config.getoption("--run-slow", default=False))
    if not wanted and os.environ.get("WEBCLIENT_SLOW") != "1":
        pytest.skip("slow test: run with --run-slow or WEBCLIENT_SLOW=1")


class FakeClock:
    """A clock that starts at the real time and only moves when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Seen:
    """One request as the origin saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    client: tuple[str, int]
    body: bytes


Script = Callable[[Request], Response]


@dataclass
class Origin(Handler):
    """Answers each path from a script of responses (the last one repeats); records requests."""

    scripts: dict[str, list[Script]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(
        self, path: str, *responses: Script | tuple[int, list[tuple[str, str]], bytes]
    ) -> None:
        steps: list[Script] = []
        for item in responses:
            if callable(item):
                steps.append(item)
            else:
                status, headers, body = item
                steps.append(lambda _r, s=status, h=headers, b=body: Response(s, list(h), b))
        with self.lock:
            self.scripts[path] = steps

    def _answer(self, request: Request) -> Response:
        body = request.body.read() if request.method == "POST" else b""
        headers = dict(request.headers)
        seen = Seen(request.method, request.path, request.query, headers, request.client, body)
        with self.lock:
            self.seen.append(seen)
            steps = self.scripts.get(request.path)
            if not steps:
                return Response(404, [], b"no script\n")
            step = steps.pop(0) if len(steps) > 1 else steps[0]
        return step(request)

    def get(self, request: Request) -> Response:
        return self._answer(request)

    def post(self, request: Request) -> Response:
        return self._answer(request)

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]

    @property
    def connections(self) -> set[tuple[str, int]]:
        with self.lock:
            return {s.client for s in self.seen}


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[Server, Origin]]:
    """Our server with a scriptable handler on every path."""
    handler = Origin()
    root = tmp_path / "origin-root"
    root.mkdir()

    def setup(server: Server) -> None:
        server.route("/", handler, prefix=True)

    server = Server(root=root, port=0, access_log=False, default_routes=False)
    with running_server(server=server, setup=setup) as srv:
        yield srv, handler


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def client(cache_dir: Path, clock: FakeClock) -> Iterator[Client]:
    """A client with a private cache folder and a movable clock."""
    with Client(ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT), clock=clock) as c:
        yield c


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A folder of files to serve: text, binary, nested."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 300)
    (root / "sub" / "page.html").write_bytes(b"<p>page</p>\n")
    return root


@pytest.fixture
def static_server(www: Path) -> Iterator[Server]:
    with running_server(root=www, access_log=False) as server:
        yield server


def free_port() -> int:
    """An ephemeral port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """Poll-connect until the subprocess accepts, it exits, or the deadline passes."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text() if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # a poll interval, bounded by the deadline above
    raise RuntimeError(f"server on port {port} did not start within {STARTUP_DEADLINE} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def nginx(tmp_path: Path, www: Path) -> Iterator[int]:
    """nginx serving ``www`` on an ephemeral port; the port."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx not installed: no nginx on PATH or in /usr/sbin")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    # As root, nginx workers drop to "nobody", who cannot enter pytest's private tmp folders.
    user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}daemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {prefix}/body;\n"
        f"  proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n"
        f"  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {www}; }}\n"
        "}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(prefix)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc, prefix / "error.log")
        yield port
    finally:
        _stop(proc)


@pytest.fixture
def http_server(www: Path) -> Iterator[int]:
    """``python -m http.server`` (HTTP/1.0, Last-Modified only) serving ``www``; the port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            str(port),
            "--directory",
            str(www),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        yield port
    finally:
        _stop(proc)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture
def refused_port() -> int:
    """A port nothing listens on."""
    return free_port()
