"""Throughput, latency and memory of ``webserver run`` next to other Python servers and nginx.

Why: the server has explicit performance targets (see docs/performance.md); this script measures
each one on the machine at hand, with the peers run the same way on the same files, so a change can
be judged by ratios rather than by absolute numbers that depend on the host.

What it does: makes a temporary folder with a 1 KiB and a 16 MiB file, starts our server and every
installed peer in turn on an ephemeral port of 127.0.0.1, waits until it accepts connections, and
runs these workloads (wrk with one thread; every run is bounded by ``--duration``):

* ``keepalive``  GET of the 1 KiB file on 50 keep-alive connections (``wrk -t1 -c50``).
* ``pipeline``   the same on 50 connections with 16 requests written back to back per round
                 (a wrk Lua script). wrk counts every response of a pipelined batch (checked
                 against an nginx access log), so its requests/s is used as it is, not times 16.
* ``bigfile``    GET of the 16 MiB file on 4 connections, reported in MiB/s of bodies + headers.
* ``close``      GET of the 1 KiB file with ``Connection: close`` on 10 connections: a new TCP
                 connection for every request.
* ``idle``       1,000 keep-alive connections are opened, each makes one GET and then stays idle;
                 meanwhile 200 fresh connect + GET + full response are timed one after another
                 (2 s timeout each). Reports median, p99, failures, and how many idle
                 connections the server had closed by the end.
* ``rss``        peak resident memory (VmHWM, summed over the process tree) at the end of the run.

``ours-w2`` is our server with ``--workers 2`` (two processes sharing the port), the counterpart
of gunicorn with 2 workers; every ratio is against ``ours``, the single process.

Peers: ``python -m http.server`` (ThreadingHTTPServer, HTTP/1.1 so keep-alive works), waitress,
cheroot, gunicorn gthread with 1 and 2 workers (the WSGI app in wsgi_static.py), uvicorn with h11
and the asyncio loop and hypercorn with one asyncio worker (the ASGI app in asgi_static.py), and
nginx with one worker. A peer that is
not installed is skipped with the reason. One Markdown table is printed at the end, with absolute
figures and the ratio ours / peer in brackets.

Usage: python benchmarks/bench_server.py [--duration 5] [--only ours,uvicorn,...]
       [--workloads keepalive,pipeline,bigfile,close,idle,rss] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from _harness import (
    BENCH_DIR,
    HOST,
    MIB,
    BenchError,
    CpuMeter,
    Service,
    check_get,
    child_env,
    command_output,
    find_nginx,
    free_port,
    host_description,
    make_world_readable,
    markdown_table,
    module_version,
    nginx_service,
    ours_service,
    raise_nofile,
)

SMALL = "/1k.bin"
BIG = "/16m.bin"
SMALL_SIZE = 1024
BIG_SIZE = 16 * MIB
PIPELINE_DEPTH = 16
WORKLOADS = ("keepalive", "pipeline", "bigfile", "close", "idle", "rss")
SERVERS = (
    "ours",
    "ours-w2",
    "http.server",
    "waitress",
    "cheroot",
    "gunicorn-1",
    "gunicorn-2",
    "uvicorn",
    "hypercorn",
    "nginx",
)
#: Threads given to the thread-pool peers, the same as our server's default worker count.
PEER_THREADS = 8

#: Every wrk run ends with this: exact counts as one JSON line, no parsing of wrk's rounded text.
LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def pipeline_script(path: str, depth: int) -> str:
    """A wrk script sending ``depth`` GETs of ``path`` in one write, reporting as LUA_DONE."""
    return (
        f"""
init = function(args)
  local r = {{}}
  for i = 1, {depth} do r[i] = wrk.format(nil, "{path}") end
  req = table.concat(r)
end
request = function() return req end
"""
        + LUA_DONE
    )


@dataclass
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mibps(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds else 0.0

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


@dataclass
class IdleResult:
    idle_wanted: int
    idle_opened: int
    idle_answered: int
    fresh_wanted: int
    fresh_ok: int
    fresh_failed: int
    fresh_not_run: int
    median_ms: float | None
    p99_ms: float | None
    idle_closed_by_server: int
    note: str = ""

    @property
    def lost(self) -> int:
        return self.fresh_failed + self.fresh_not_run + (self.idle_wanted - self.idle_answered)


@dataclass
class ServerResult:
    name: str
    version: str
    skipped: str | None = None
    wrk: dict[str, WrkResult] = field(default_factory=dict)
    idle: IdleResult | None = None
    rss_mib: float | None = None
    errors: list[str] = field(default_factory=list)


# -- servers --------------------------------------------------------------------------------------


@dataclass
class Context:
    tmp: Path
    www: Path
    ours_python: str
    peer_python: str
    threads: int | None


def _wsgi_env(ctx: Context) -> dict[str, str]:
    path = os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return child_env(BENCH_WWW_ROOT=str(ctx.www), PYTHONPATH=path)


def build_service(name: str, ctx: Context) -> tuple[Service, str]:
    """The Service for ``name`` and its version string; BenchError if it cannot run here."""
    py = ctx.peer_python
    if name in ("ours", "ours-w2"):
        version = module_version(ctx.ours_python, "webserver")
        if version is None:
            raise BenchError(f"webserver is not importable by {ctx.ours_python}")
        options = ["--threads", str(ctx.threads)] if ctx.threads else []
        if name == "ours-w2":
            options += ["--workers", "2"]
        service = ours_service(ctx.tmp, ctx.www, *options, python=ctx.ours_python, name=name)
        return service, version
    if name == "nginx":
        if find_nginx() is None:
            raise BenchError("nginx is not installed (apt-get install -y nginx)")
        version = command_output([find_nginx() or "nginx", "-v"]).rsplit("/", 1)[-1]
        return nginx_service(ctx.tmp, ctx.www), version
    port = free_port()
    if name == "http.server":
        argv = [py, "-m", "http.server", "--bind", HOST, "--directory", str(ctx.www)]
        argv += ["--protocol", "HTTP/1.1", str(port)]
        return Service(name, argv, ctx.tmp, port=port), f"python {_py_version(py)}"
    dist = name.split("-")[0]
    version = module_version(py, dist)
    if version is None:
        raise BenchError(f"{dist} is not installed for {py} (pip install -e '.[bench]')")
    env = _wsgi_env(ctx)
    if name == "waitress":
        argv = [py, "-m", "waitress", f"--listen={HOST}:{port}", f"--threads={PEER_THREADS}"]
        argv += ["wsgi_static:app"]
    elif name == "cheroot":
        argv = [py, "-m", "cheroot", "--bind", f"{HOST}:{port}", "--threads", str(PEER_THREADS)]
        # Its default listen backlog is 5; ours, waitress and nginx use 1024.
        argv += ["--request-queue-size", "1024", "wsgi_static:app"]
    elif name.startswith("gunicorn-"):
        workers = name.split("-")[1]
        argv = [py, "-m", "gunicorn", "-k", "gthread", "-w", workers]
        argv += ["--threads", str(PEER_THREADS), "-b", f"{HOST}:{port}", "wsgi_static:app"]
    elif name == "uvicorn":
        argv = [py, "-m", "uvicorn", "--http", "h11", "--loop", "asyncio", "--host", HOST]
        argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        argv += ["asgi_static:app"]
    elif name == "hypercorn":
        # Another h11-based ASGI server, one process on the asyncio loop, as uvicorn runs.
        argv = [py, "-m", "hypercorn", "--bind", f"{HOST}:{port}", "--workers", "1"]
        argv += ["--worker-class", "asyncio", "--log-level", "warning", "asgi_static:app"]
    else:
        raise BenchError(f"unknown server {name}")
    return Service(name, argv, ctx.tmp, port=port, env=env, cwd=BENCH_DIR), version


def _py_version(python: str) -> str:
    return command_output([python, "-c", "import platform; print(platform.python_version())"])


# -- wrk ------------------------------------------------------------------------------------------


def run_wrk(
    port: int,
    path: str,
    connections: int,
    duration: float,
    script: Path,
    headers: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
) -> WrkResult:
    """One wrk run with a single thread; its BENCH line parsed. ``prefix`` is put before the
    command (``taskset -c 0`` to pin it to a CPU)."""
    argv = [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s"]
    argv += ["-s", str(script)]
    for header in headers:
        argv += ["-H", header]
    argv.append(f"http://{HOST}:{port}{path}")
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, env=child_env(), check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[6:])
            return WrkResult(
                requests=data["requests"],
                bytes=data["bytes"],
                seconds=data["duration_us"] / 1e6,
                errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise BenchError(f"wrk gave no result: {(done.stderr or done.stdout).strip()[-200:]}")


# -- 1,000 idle connections -----------------------------------------------------------------------


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def _response_complete(buf: bytes) -> bool | None:
    """True when ``buf`` holds one whole 200 response, False if incomplete, None if not a 200."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = buf[:head_end].decode("latin-1")
    status_line, *fields = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        return None
    length = 0
    for line in fields:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return len(buf) - head_end - 4 >= length


def _fresh_get(port: int, timeout: float) -> float:
    """Seconds for connect + GET + whole response on a new connection; raises on failure."""
    start = time.perf_counter()
    deadline = start + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_request(SMALL))
        buf = b""
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError("response not complete in time")
            sock.settimeout(left)
            piece = sock.recv(65536)
            if not piece:
                raise ConnectionError("closed before the response was complete")
            buf += piece
            state = _response_complete(buf)
            if state is None:
                raise ConnectionError(f"not a 200: {buf[:40]!r}")
            if state:
                return time.perf_counter() - start


def idle_probe(
    port: int,
    idle: int = 1000,
    fresh: int = 200,
    timeout: float = 2.0,
    open_budget: float = 6.0,
    read_budget: float = 5.0,
    fresh_budget: float = 12.0,
) -> IdleResult:
    """Hold ``idle`` answered keep-alive connections open and time ``fresh`` new requests."""
    socks: list[socket.socket] = []
    notes: list[str] = []
    sel = selectors.DefaultSelector()
    answered = 0
    try:
        # 1. open the idle connections and send one GET on each, all within open_budget.
        deadline = time.monotonic() + open_budget
        for _ in range(idle):
            if time.monotonic() >= deadline:
                notes.append(f"opened only {len(socks)} idle connections in {open_budget:g} s")
                break
            try:
                sock = socket.create_connection((HOST, port), timeout=timeout)
                sock.sendall(_request(SMALL))
            except OSError as exc:
                notes.append(f"idle connect failed: {exc}")
                break
            sock.setblocking(False)
            socks.append(sock)
            sel.register(sock, selectors.EVENT_READ, bytearray())
        # 2. read every idle connection's response, within read_budget.
        deadline = time.monotonic() + read_budget
        waiting = len(socks)
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                sock = key.fileobj  # type: ignore[assignment]
                buf: bytearray = key.data
                try:
                    piece = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    piece = b""
                buf += piece
                state = _response_complete(bytes(buf)) if piece else None
                if state is False:
                    continue
                sel.unregister(sock)
                waiting -= 1
                if state:
                    answered += 1
        if waiting:
            notes.append(f"{waiting} idle connections got no answer in time")
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
        # 3. time fresh requests one after another, all within fresh_budget.
        times: list[float] = []
        failed = 0
        in_a_row = 0
        deadline = time.monotonic() + fresh_budget
        attempted = 0
        while attempted < fresh and time.monotonic() < deadline and in_a_row < 5:
            attempted += 1
            try:
                times.append(_fresh_get(port, timeout))
                in_a_row = 0
            except (OSError, ValueError):
                failed += 1
                in_a_row += 1
        if in_a_row >= 5:
            notes.append("stopped after 5 failures in a row")
        # 4. how many idle connections has the server closed meanwhile (its idle timeout)?
        closed = 0
        for sock in socks:
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                closed += 1
        times.sort()
        median = statistics.median(times) * 1000 if times else None
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000 if times else None
        return IdleResult(
            idle_wanted=idle,
            idle_opened=len(socks),
            idle_answered=answered,
            fresh_wanted=fresh,
            fresh_ok=len(times),
            fresh_failed=failed,
            fresh_not_run=fresh - attempted,
            median_ms=median,
            p99_ms=p99,
            idle_closed_by_server=closed,
            note="; ".join(notes),
        )
    finally:
        sel.close()
        for sock in socks:
            sock.close()


# -- running ---------------------------------------------------------------------------------------


def make_www(tmp: Path) -> Path:
    www = tmp / "www"
    www.mkdir()
    (www / SMALL[1:]).write_bytes(os.urandom(SMALL_SIZE))
    with open(www / BIG[1:], "wb") as handle:
        for _ in range(BIG_SIZE // MIB):
            handle.write(os.urandom(MIB))
    make_world_readable(tmp, www, www / SMALL[1:], www / BIG[1:])
    return www


def bench_one(
    name: str, ctx: Context, workloads: list[str], duration: float, scripts: dict[str, Path]
) -> ServerResult:
    try:
        service, version = build_service(name, ctx)
    except BenchError as exc:
        return ServerResult(name, "-", skipped=str(exc))
    result = ServerResult(name, version)
    try:
        service.start()
        check_get(service.port, SMALL, SMALL_SIZE)
        check_get(service.port, BIG, BIG_SIZE)
        plan: list[tuple[str, Callable[[], WrkResult]]] = [
            ("keepalive", lambda: run_wrk(service.port, SMALL, 50, duration, scripts["plain"])),
            ("pipeline", lambda: run_wrk(service.port, "/", 50, duration, scripts["pipeline"])),
            ("bigfile", lambda: run_wrk(service.port, BIG, 4, duration, scripts["plain"])),
            (
                "close",
                lambda: run_wrk(
                    service.port, SMALL, 10, duration, scripts["plain"], ("Connection: close",)
                ),
            ),
        ]
        for workload, run in plan:
            if workload not in workloads:
                continue
            print(f"  {name}: {workload} ...", file=sys.stderr, flush=True)
            try:
                result.wrk[workload] = run()
            except (BenchError, subprocess.TimeoutExpired) as exc:
                result.errors.append(f"{workload}: {exc}")
        if "idle" in workloads:
            print(f"  {name}: idle ...", file=sys.stderr, flush=True)
            result.idle = idle_probe(service.port)
        if "rss" in workloads:
            result.rss_mib = service.peak_rss_mib()
    except BenchError as exc:
        result.skipped = str(exc)
    finally:
        service.stop()
    return result


# -- report ---------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return ""
    return f" ({ours / peer:.2f}x)"


def _cell(
    results: dict[str, ServerResult],
    name: str,
    get: Callable[[ServerResult], float | None],
    digits: int = 0,
) -> str:
    value = get(results[name])
    ours = results.get("ours")
    if name == "ours" or ours is None or ours.skipped:
        return _num(value, digits)
    return _num(value, digits) + _ratio(get(ours), value)


def _rps(workload: str) -> Callable[[ServerResult], float | None]:
    return lambda r: r.wrk[workload].rps if workload in r.wrk else None


def report(results: dict[str, ServerResult], duration: float) -> str:
    header = [
        "server",
        "1 KiB keep-alive req/s",
        "p50 / p99 ms",
        f"pipelined x{PIPELINE_DEPTH} req/s",
        "16 MiB MiB/s",
        "Connection: close req/s",
        "1k idle: fresh p50 ms",
        "p99 ms",
        "fresh failed",
        "idle answered",
        "idle closed",
        "peak RSS MiB",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for name, res in results.items():
        if res.skipped:
            notes.append(f"{name}: skipped: {res.skipped}")
            continue
        ka = res.wrk.get("keepalive")
        idle = res.idle
        rows.append(
            [
                f"{name} {res.version}",
                _cell(results, name, _rps("keepalive")),
                f"{ka.p50_ms:.1f} / {ka.p99_ms:.1f}" if ka else "-",
                _cell(results, name, _rps("pipeline")),
                _cell(
                    results, name, lambda r: r.wrk["bigfile"].mibps if "bigfile" in r.wrk else None
                ),
                _cell(results, name, _rps("close")),
                _cell(results, name, lambda r: r.idle.median_ms if r.idle else None, 2),
                _num(idle.p99_ms, 2) if idle else "-",
                f"{idle.fresh_failed + idle.fresh_not_run}/{idle.fresh_wanted}" if idle else "-",
                f"{idle.idle_answered}/{idle.idle_wanted}" if idle else "-",
                str(idle.idle_closed_by_server) if idle else "-",
                _cell(results, name, lambda r: r.rss_mib, 1),
            ]
        )
        for workload, wrk in res.wrk.items():
            if wrk.error_total:
                errs = ", ".join(f"{k} {v}" for k, v in wrk.errors.items() if v)
                notes.append(f"{name} {workload}: wrk errors: {errs} (of {wrk.requests} responses)")
        if idle and idle.note:
            notes.append(f"{name} idle: {idle.note}")
        notes.extend(f"{name}: {e}" for e in res.errors)
    legend = (
        f"Each wrk run: 1 thread, {duration:g} s. (N.NNx) = ours / that server: above 1 is better "
        "for ours in req/s and MiB/s, below 1 is better for ours in latency and RSS.\n"
        "1k idle: 1,000 keep-alive connections each made one GET and stay open while 200 fresh "
        "connect + GET + response are timed; fresh failed = failed or not run (2 s timeout each); "
        "idle answered = idle connections whose GET was answered; idle closed = idle connections "
        "the server had closed by the end (its keep-alive timeout, which is allowed). "
        "Peak RSS = VmHWM summed over the process tree."
    )
    out = [markdown_table(header, rows), "", legend]
    if notes:
        out += ["", "Notes:", *(f"- {n}" for n in notes)]
    out += ["", *targets(results)]
    return "\n".join(out)


def targets(results: dict[str, ServerResult]) -> list[str]:
    """The targets of docs/performance.md, each marked met or MISSED."""
    ours = results.get("ours")
    if ours is None or ours.skipped:
        return ["Targets: not checked, our server did not run."]
    lines = ["Targets:"]

    def ratio_line(
        label: str, workload: str, peer: str, want: float, mib: bool = False, us: str = "ours"
    ) -> None:
        mine, other = results.get(us), results.get(peer)
        if mine is None or workload not in mine.wrk or other is None or workload not in other.wrk:
            lines.append(f"- {label}: not measured")
            return
        a, b = mine.wrk[workload], other.wrk[workload]
        got = (a.mibps / b.mibps) if mib else (a.rps / b.rps)
        verdict = "met" if got >= want else "MISSED"
        lines.append(f"- {label} >= {want:g}x {peer}: {got:.2f}x ({verdict})")

    ratio_line("1 KiB keep-alive", "keepalive", "uvicorn", 2.0)
    ratio_line("1 KiB keep-alive, ours-w2", "keepalive", "gunicorn-2", 2.0, us="ours-w2")
    ratio_line(f"pipelined {PIPELINE_DEPTH} deep", "pipeline", "uvicorn", 3.0)
    ratio_line("16 MiB file", "bigfile", "nginx", 1.0, mib=True)
    ratio_line("Connection: close", "close", "uvicorn", 1.5)
    idle = ours.idle
    if idle is None or idle.median_ms is None:
        lines.append("- fresh request with 1,000 idle held: not measured")
    else:
        ok = idle.median_ms <= 2.0 and idle.lost == 0
        lines.append(
            f"- fresh request with 1,000 idle held: median {idle.median_ms:.2f} ms (<= 2), "
            f"lost {idle.lost} of 1,200 (0) ({'met' if ok else 'MISSED'})"
        )
    if ours.rss_mib is None:
        lines.append("- peak RSS: not measured")
    else:
        verdict = "met" if ours.rss_mib <= 40 else "MISSED"
        lines.append(f"- peak RSS <= 40 MiB: {ours.rss_mib:.1f} MiB ({verdict})")
    return lines


# -- main -----------------------------------------------------------------------------------------


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--only", default="", help=f"comma list of servers: {','.join(SERVERS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    parser.add_argument("--threads", type=int, default=None, help="--threads for our server")
    parser.add_argument("--ours-python", default=sys.executable, help="python with webserver")
    parser.add_argument("--peer-python", default=sys.executable, help="python with the peers")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 120:
        parser.error("--duration must be in (0, 120] seconds")
    names = [n for n in args.only.split(",") if n] or list(SERVERS)
    workloads = [w for w in args.workloads.split(",") if w]
    for bad in set(names) - set(SERVERS):
        parser.error(f"unknown server {bad}")
    for bad in set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workload {bad}")
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_signal)
    nofile = raise_nofile(8192)
    started = time.monotonic()
    meter = CpuMeter()
    for line in host_description():
        print(line)
    print(f"wrk: {command_output(['wrk', '-v']).split(' Copyright')[0]}; open-file limit {nofile}")
    results: dict[str, ServerResult] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        scripts = {"plain": tmp / "plain.lua", "pipeline": tmp / "pipeline.lua"}
        scripts["plain"].write_text(LUA_DONE)
        scripts["pipeline"].write_text(pipeline_script(SMALL, PIPELINE_DEPTH))
        ctx = Context(tmp, make_www(tmp), args.ours_python, args.peer_python, args.threads)
        try:
            for name in names:
                print(f"{name} ...", file=sys.stderr, flush=True)
                results[name] = bench_one(name, ctx, workloads, args.duration, scripts)
                if results[name].skipped:
                    print(f"  skipped: {results[name].skipped}", file=sys.stderr)
        except KeyboardInterrupt:
            print("interrupted; partial results follow", file=sys.stderr)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end: {load}; total {time.monotonic() - started:.0f} s")
    print(meter.summary() + "\n")
    print(report(results, args.duration))
    if args.json:
        args.json.write_text(json.dumps({k: _as_json(v) for k, v in results.items()}, indent=2))
    return 0


def _as_json(result: ServerResult) -> dict[str, Any]:
    data = asdict(result)
    for workload, wrk in result.wrk.items():
        data["wrk"][workload].update(rps=wrk.rps, mibps=wrk.mibps)
    return data


if __name__ == "__main__":
    sys.exit(main())
