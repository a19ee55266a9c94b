"""Shared pieces of the benchmark scripts: start and stop servers, wait for them, describe the host.

Every server is started in its own session (process group) on 127.0.0.1, waited for by polling a
TCP connect against a deadline, and stopped with SIGTERM, then SIGKILL of its own process group if
it has not exited within a bounded wait.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
MIB = 1024 * 1024
BENCH_DIR = Path(__file__).resolve().parent


class BenchError(Exception):
    """A server could not be started or did not answer; the message says why."""


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-file limit towards ``wanted`` (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for children: no proxy settings, so every request stays on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = HOST
    env.update(extra)
    return env


@dataclass
class Service:
    """One server process under test."""

    name: str
    argv: list[str]
    logdir: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=child_env)
    cwd: Path | None = None
    #: Read the port from the first stdout line ("... on http://HOST:PORT/") instead of ``port``.
    banner: bool = False
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.logdir / f"{self.name}.log"

    def start(self, deadline_s: float = 20.0) -> None:
        """Start the process and return once it accepts TCP connections on ``port``."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.banner else self._log,
            stderr=self._log,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        deadline = time.monotonic() + deadline_s
        if self.banner:
            self.port = self._read_banner_port(deadline)
        wait_listening(self.port, deadline, self.proc, self.log_path)

    def _read_banner_port(self, deadline: float) -> int:
        assert self.proc is not None
        assert self.proc.stdout is not None
        out = self.proc.stdout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no 'Serving ... on URL' line in time")
            ready, _, _ = select.select([out], [], [], left)
            if ready:
                piece = os.read(out.fileno(), 1)
                if not piece:
                    raise BenchError(f"{self.name} exited at start: {tail(self.log_path)}")
                line += piece
        match = re.search(rb"https?://[^/\s]+:(\d+)/", line)
        if not match:
            raise BenchError(f"{self.name}: unexpected first line {line!r}")
        return int(match.group(1))

    def stop(self, wait_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL of the process group if it is still there after ``wait_s``."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc is not None and proc.poll() is not None:
            # Workers left behind by a master that exited (never expected): same group, same id.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def peak_rss_mib(self) -> float | None:
        """Sum of VmHWM (peak resident set) over the process and its descendants, in MiB."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        total_kib = 0
        for pid in process_tree(self.proc.pid):
            total_kib += vm_hwm_kib(pid) or 0
        return total_kib / 1024


def random_root(tmp: Path, files: dict[str, int]) -> Path:
    """``tmp/www``, made and holding a file of that many random bytes for each name of
    ``files``: what a server under test serves."""
    www = tmp / "www"
    www.mkdir()
    for name, size in files.items():
        (www / name).write_bytes(os.urandom(size))
    return www


def ours_service(
    logdir: Path,
    root: Path,
    *options: str,
    python: str = sys.executable,
    source: Path | None = None,
    name: str = "ours",
) -> Service:
    """``webserver run`` serving ``root`` without an access log, on a port of HOST it picks
    itself (read from its first line), with any other command-line ``options``. ``python`` runs
    it; ``source``, when given, is the tree it is imported from (a checkout to compare with)."""
    argv = [python, "-m", "webserver", "run", "--host", HOST, "--port", "0"]
    argv += ["--root", str(root), "--no-access-log", *options]
    env = child_env(PYTHONPATH=str(source)) if source is not None else child_env()
    return Service(name, argv, logdir, env=env, cwd=source, banner=True)


def wait_listening(
    port: int, deadline: float, proc: subprocess.Popen[bytes] | None, log: Path | None
) -> None:
    """Poll-connect to ``port`` until it accepts, the process dies, or the deadline passes."""
    while True:
        if proc is not None and proc.poll() is not None:
            detail = tail(log) if log else ""
            raise BenchError(f"exited with status {proc.returncode} at start: {detail}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise BenchError(f"not listening on {HOST}:{port} in time")
        time.sleep(0.05)


def check_get(port: int, path: str, want_size: int, timeout: float = 10.0) -> None:
    """One GET of ``path``: 200 with exactly ``want_size`` body bytes, else BenchError."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        raise BenchError(f"GET {path} failed: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200 or len(body) != want_size:
        raise BenchError(f"GET {path}: status {resp.status}, {len(body)} bytes")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/PID/task/TID/children)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        task_dir = Path(f"/proc/{current}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    found.extend(int(c) for c in (task / "children").read_text().split())
    return list(dict.fromkeys(found))


def vm_hwm_kib(pid: int) -> int | None:
    """VmHWM (peak resident set size) of ``pid`` in KiB, or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def tail(path: Path | None, lines: int = 3) -> str:
    """The last lines of a log file, on one line, for an error message."""
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def nginx_conf(
    tmp: Path, www: Path, port: int, *, location_extra: str = "", access_log: Path | None = None
) -> Path:
    """Write an nginx.conf for one worker in the foreground, with every path inside ``tmp``."""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / f"nginx-{sub}").mkdir(exist_ok=True)
    log = f"access_log {access_log};" if access_log else "access_log off;"
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    {log}
    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/nginx-client_body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen {HOST}:{port} backlog=1024;
        root {www};
        location / {{ {location_extra} }}
    }}
}}
"""
    )
    return conf


def nginx_service(tmp: Path, www: Path, **conf: object) -> Service:
    """An nginx with one worker serving ``www`` on a fresh ephemeral port."""
    binary = find_nginx()
    if binary is None:
        raise BenchError("nginx not found (apt-get install -y nginx)")
    port = free_port()
    path = nginx_conf(tmp, www, port, **conf)  # type: ignore[arg-type]
    argv = [binary, "-e", f"{tmp}/nginx-error.log", "-p", str(tmp), "-c", str(path)]
    return Service("nginx", argv, tmp, port=port)


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def make_world_readable(*paths: Path) -> None:
    """nginx workers run as an unprivileged user when started by root: let them read the files."""
    for path in paths:
        path.chmod(0o755 if path.is_dir() else 0o644)


def command_output(argv: list[str], timeout: float = 20.0) -> str:
    """First line of a command's combined output, or '' if it cannot be run."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=child_env(), check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else ""


def module_version(python: str, dist: str) -> str | None:
    """Version of distribution ``dist`` importable by ``python``, or None if it is not installed."""
    code = (
        "import importlib.metadata as m, importlib.util as u, sys\n"
        f"name = {dist!r}\n"
        "if u.find_spec(name) is None: sys.exit(1)\n"
        "print(m.version(name))\n"
    )
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def host_description() -> list[str]:
    """Lines describing this machine and the moment of the run."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"cpus: {os.cpu_count()} ({cpu}); load average at start: {load}",
        f"kernel: {platform.release()}; harness python: {sys.version.split()[0]}",
    ]


class CpuMeter:
    """CPU seconds used on the whole machine versus by this script and the children it reaped.

    The difference is what other processes took during the run: the honest measure of how busy
    the machine was. Children count once they have exited and been waited for (servers and wrk
    are; gunicorn's workers count through their master).
    """

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._start = self._read()

    def _read(self) -> tuple[float, float, float]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        busy = (sum(values[:8]) - idle) / self._tick
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, own

    def summary(self) -> str:
        now, busy, own = self._read()
        wall = now - self._start[0]
        total = busy - self._start[1]
        mine = own - self._start[2]
        other = max(0.0, total - mine)
        return (
            f"CPU during the run: machine {total:.0f} s of {wall * (os.cpu_count() or 1):.0f} s "
            f"available; this benchmark and its servers {mine:.0f} s; other processes "
            f"{other:.0f} s (on average {other / wall if wall else 0:.2f} cores)"
        )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with columns padded for reading in a terminal."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
