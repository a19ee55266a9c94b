"""deploy/nginx.conf in use: two ``webserver`` instances behind a real nginx on one shared root."""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..client.conftest import free_port, wait_listening
from .conftest import NET_TIMEOUT, webserver_process

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: The address the test client connects to nginx from, so the access log can tell it apart from
#: nginx itself (127.0.0.1); all of 127.0.0.0/8 is loopback on Linux.
CLIENT_ADDRESS = "127.0.0.2"
#: Most requests each client of the load sends through a rolling restart, and the time they
#: may take.
LOAD_REQUESTS = 5000
LOAD_SECONDS = 30.0


@dataclass
class Deployment:
    port: int
    root: Path
    instances: list[subprocess.Popen[str]]
    logs: list[Path]


def nginx_conf(prefix: Path, port: int, upstreams: list[int]) -> str:
    """deploy/nginx.conf with ports, pid and log paths made temporary (each swap must apply)."""
    user = "user root;" if os.geteuid() == 0 else ""  # nobody cannot enter pytest's tmp folders
    temp = " ".join(
        f"{kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    swaps = {
        "user www-data;": user,
        "worker_processes auto;": "worker_processes 2;",
        "pid /run/nginx.pid;": f"pid {prefix}/nginx.pid;\ndaemon off;",
        "error_log /var/log/nginx/error.log;": f"error_log {prefix}/error.log;",
        "access_log /var/log/nginx/access.log;": f"access_log off; {temp}",
        "127.0.0.1:8001": f"127.0.0.1:{upstreams[0]}",
        "127.0.0.1:8002": f"127.0.0.1:{upstreams[1]}",
        "listen 80;": f"listen 127.0.0.1:{port};",
    }
    text = (DEPLOY / "nginx.conf").read_text()
    for old, new in swaps.items():
        assert old in text, f"deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


def start_instance(root: Path, port: int, log: Path) -> ExitStack:
    stack = ExitStack()
    proc, _ = stack.enter_context(
        webserver_process(
            *("--port", str(port), "--root", str(root), "--workers", "2"),
            *("--health", "/healthz", "--trusted-proxy", "127.0.0.1/32"),
            *("--access-log", str(log), "--grace-period", "5"),
        )
    )
    stack.proc = proc  # type: ignore[attr-defined]
    return stack


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """Two instances (2 workers each) on one root, behind nginx configured by deploy/nginx.conf."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx not installed: no nginx on PATH or in /usr/sbin (.ci/run installs it)")
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port, upstreams = free_port(), [free_port(), free_port()]
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, port, upstreams))
    logs = [tmp_path / f"access-{p}.log" for p in upstreams]
    with ExitStack() as stack:
        instances = [
            stack.enter_context(start_instance(root, p, log)).proc  # type: ignore[attr-defined]
            for p, log in zip(upstreams, logs, strict=True)
        ]
        nginx = subprocess.Popen(
            [binary, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, nginx, prefix / "error.log")
            yield Deployment(port, root, instances, logs)
        finally:
            nginx.terminate()
            nginx.wait(NET_TIMEOUT)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=NET_TIMEOUT, source_address=(CLIENT_ADDRESS, 0)
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def test_concurrent_uploads_of_one_name_never_overwrite(deployment: Deployment) -> None:
    """40 concurrent POSTs of one name through nginx to two instances: 40 distinct files."""
    bodies = [f"upload {i}\n".encode() * 100 for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: call(deployment.port, "POST", "/same.txt", b), bodies))
    assert [status for status, _, _ in results] == [201] * 40
    assert len({headers["Location"] for _, _, headers in results}) == 40
    stored = [p.read_bytes() for p in deployment.root.iterdir() if p.name.startswith("same")]
    assert sorted(stored) == sorted(bodies)
    assert all(log.read_text().count("POST /same.txt") > 0 for log in deployment.logs)


def test_access_log_names_the_real_client(deployment: Deployment) -> None:
    """Through nginx (a trusted proxy) the access line shows the client's address, the
    rightmost untrusted hop of X-Forwarded-For, not nginx's nor one the client made up;
    health checks answer 200 and are not logged."""
    for _ in range(4):
        assert call(deployment.port, "GET", "/hello.txt", None, {"X-Forwarded-For": "6.6.6.6"})[
            :2
        ] == (200, b"hello, world\n")
        assert call(deployment.port, "GET", "/healthz")[:2] == (200, b"ok\n")
    lines = [line for log in deployment.logs for line in log.read_text().splitlines()]
    assert len(lines) == 4
    assert all(line.startswith(f"{CLIENT_ADDRESS} - - [") for line in lines)
    assert all('"GET /hello.txt HTTP/1.1" 200' in line for line in lines)


def _load(port: int, done: threading.Event, deadline: float) -> tuple[int, list[str]]:
    """GETs and POSTs over one keep-alive connection until ``done``, at most ``LOAD_REQUESTS``
    or until ``deadline``; the number sent and the failures, described."""
    failures = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
    sent = 0
    try:
        while not done.is_set() and sent < LOAD_REQUESTS and time.monotonic() < deadline:
            method, body = ("POST", b"x" * 1000) if sent % 4 == 0 else ("GET", None)
            sent += 1
            try:
                conn.request(method, "/hello.txt" if body is None else "/load.bin", body=body)
                response = conn.getresponse()
                response.read()
                if response.status != (201 if method == "POST" else 200):
                    failures.append(f"{method} answered {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{method} failed: {exc!r}")
                conn.close()
    finally:
        conn.close()
    return sent, failures


def _lines(log: Path) -> int:
    return len(log.read_text().splitlines())


def test_rolling_restart_loses_no_request(deployment: Deployment) -> None:
    """SIGTERM to one instance while load runs through nginx: every request succeeds (nginx
    retries on the other instance) and the stopped instance exits 0."""
    deadline = time.monotonic() + LOAD_SECONDS
    done = threading.Event()
    first, second = deployment.logs
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_load, deployment.port, done, deadline) for _ in range(4)]
        try:
            while _lines(first) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)  # until the load goes through both, bounded by the deadline
            deployment.instances[0].send_signal(signal.SIGTERM)
            assert deployment.instances[0].wait(NET_TIMEOUT) == 0
            served_at_stop = _lines(second)
            while _lines(second) < served_at_stop + 100 and time.monotonic() < deadline:
                time.sleep(0.01)  # more load with one instance gone, bounded by the deadline
        finally:
            done.set()
        results = [future.result() for future in futures]
    assert [failure for _, failures in results for failure in failures] == []
    assert _lines(second) >= served_at_stop + 100, "the load stopped before the instance had"


def test_socket_activation_units_pass_systemd_analyze(tmp_path: Path) -> None:
    """deploy/webserver.socket and the service it starts are valid units for systemd (checked
    by `systemd-analyze verify`, with the program path of this test's installation)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    service = (DEPLOY / "webserver-activated.service").read_text()
    assert "/opt/webserver/bin/webserver run" in service
    python = shutil.which("python3") or "/usr/bin/python3"
    (tmp_path / "webserver-activated.service").write_text(
        service.replace("/opt/webserver/bin/webserver run", f"{python} -m webserver run")
    )
    shutil.copy(DEPLOY / "webserver.socket", tmp_path / "webserver.socket")
    done = subprocess.run(
        [analyze, "verify", "./webserver.socket", "./webserver-activated.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT * 3,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
