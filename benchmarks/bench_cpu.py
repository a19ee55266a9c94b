"""Server CPU time per request: versions of our server and peers side by side, alternated.

Why: on a machine shared with other work, req/s moves with the load, while the CPU time a server
spends per answered request moves much less; requests per CPU-second of the server is also how
issue 14 compares us with nginx. This runs, for each round and each server in turn (each
``--python``, an interpreter that imports the version of ours to measure, e.g. a wrapper that
sets ``PYTHONPATH`` to another checkout; then each of ``--peers``, started as bench_server.py
starts them: nginx with one worker, uvicorn with h11), the server on an ephemeral port and wrk
(``-t1 -c50``) on a 1 KiB file (``floor``: benchmarks/floor_server.py, the least a Python
server can do per request), keep-alive and 16 requests pipelined per write, and reads the
user + system time of every thread of the server's process tree from ``/proc`` before and after.

With ``--pin``, wrk runs on CPU 0 and every server on CPU 1 (``taskset``): on a 2-core machine
the two then do not compete for a core, and req/s shows what one core of server gives.

Usage: python benchmarks/bench_cpu.py --python A,B[,C] [--peers nginx,uvicorn,gunicorn-1]
       [--peer-python PY] [--seconds 3] [--rounds 3] [--workers N] [--pin]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import BenchError, Service, markdown_table, ours_service, process_tree
from bench_server import (
    LUA_DONE,
    SMALL,
    Context,
    build_service,
    make_www,
    pipeline_script,
    run_wrk,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of every thread of ``pids`` so far."""
    ticks = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


#: ``taskset`` prefixes with ``--pin``: wrk on CPU 0, the server on CPU 1.
PIN_WRK = ("taskset", "-c", "0")
PIN_SERVER = ("taskset", "-c", "1")


def _start(target: str, ctx: Context, workers: int, pin: bool) -> Service:
    """Our server run by the interpreter ``target``, or the peer named ``target``."""
    if target == "peer:floor":
        floor = Path(__file__).resolve().parent / "floor_server.py"
        service = Service("floor", [ctx.peer_python, str(floor)], ctx.tmp, banner=True)
    elif target.startswith("peer:"):
        service, _ = build_service(target[5:], ctx)
    else:
        service = ours_service(ctx.tmp, ctx.www, "--workers", str(workers), python=target)
    if pin:
        service.argv = [*PIN_SERVER, *service.argv]  # taskset execs it: the same process
    service.start()
    _wait_for_children(service)
    return service


def _wait_for_children(service: Service, stable_for: float = 1.0, limit: float = 15.0) -> None:
    """Wait until the server's process tree has stopped growing: a server with worker
    processes (ours with ``--workers``, nginx, gunicorn) accepts on its socket before it has
    forked them, and a worker not yet born when the CPU time is first read would be missed."""
    assert service.proc is not None
    deadline = time.monotonic() + limit
    size, since = 0, time.monotonic()
    while time.monotonic() < deadline:
        now_size = len(process_tree(service.proc.pid))
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= stable_for:
            return
        time.sleep(0.1)


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent busy so far (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait; guest time is already in user
    return (sum(fields[:8]) - idle) / TICKS


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(
    service: Service, scripts: dict[str, Path], seconds: float, pin: bool
) -> dict[str, tuple[float, float, float, float]]:
    """Per workload: server CPU µs per request, req/s, and the cores wrk and other processes
    (neither the server nor wrk) kept busy on average meanwhile."""
    assert service.proc is not None
    found = {}
    for workload, script in scripts.items():
        pids = process_tree(service.proc.pid)
        before, busy, wrk = cpu_seconds(pids), machine_busy_seconds(), _children_seconds()
        result = run_wrk(service.port, SMALL, 50, seconds, script, prefix=PIN_WRK if pin else ())
        used = cpu_seconds(pids) - before
        wrk = _children_seconds() - wrk
        others = (machine_busy_seconds() - busy - used - wrk) / result.seconds
        found[workload] = (
            used * 1e6 / max(result.requests, 1),
            result.requests / result.seconds,
            wrk / result.seconds,
            max(others, 0.0),
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="comma list of interpreters")
    parser.add_argument("--peers", default="", help="comma list: nginx, uvicorn, ...")
    parser.add_argument("--peer-python", default=sys.executable, help="python with the peers")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--pin", action="store_true", help="wrk on CPU 0, servers on CPU 1")
    args = parser.parse_args()
    load_start = Path("/proc/loadavg").read_text().split()[0]
    targets = [p for p in args.python.split(",") if p]
    targets += [f"peer:{name}" for name in args.peers.split(",") if name]
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as name:
        tmp = Path(name)
        ctx = Context(tmp, make_www(tmp), sys.executable, args.peer_python, None)
        scripts = {"keep-alive": tmp / "plain.lua", "pipelined x16": tmp / "pipe16.lua"}
        scripts["keep-alive"].write_text(LUA_DONE)
        scripts["pipelined x16"].write_text(pipeline_script(SMALL, 16))
        for _ in range(args.rounds):
            for target in targets:
                if target in skipped:
                    continue
                try:
                    service = _start(target, ctx, args.workers, args.pin)
                except (BenchError, OSError) as exc:
                    skipped[target] = str(exc)
                    continue
                try:
                    measured = _measure(service, scripts, args.seconds, args.pin)
                    for workload, figures in measured.items():
                        results.setdefault((workload, target), []).append(figures)
                finally:
                    service.stop()
    rows = []
    for (workload, target), runs in sorted(results.items()):
        per_cpu_s = sorted(1e6 / run[0] for run in runs if run[0] > 0)
        rows.append(
            [
                workload,
                target.removeprefix("peer:"),
                " / ".join(f"{run[0]:.0f}" for run in runs),
                f"{per_cpu_s[len(per_cpu_s) // 2]:,.0f}" if per_cpu_s else "-",
                " / ".join(f"{run[1]:,.0f}" for run in runs),
                " / ".join(f"{run[2]:.2f}" for run in runs),
                " / ".join(f"{run[3]:.2f}" for run in runs),
            ]
        )
    headers = ["workload", "server", "CPU µs per request", "median req per CPU-s", "req/s"]
    headers += ["wrk, cores", "other processes, cores"]
    print(markdown_table(headers, rows))
    for target, reason in skipped.items():
        print(f"\n{target.removeprefix('peer:')}: not measured, {reason}")
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nload average at the start: {load_start}, at the end: {load} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
