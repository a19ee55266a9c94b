"""Server CPU time per request: versions of our server side by side, alternated in one run.

Why: on a machine shared with other work, req/s moves with the load, while the CPU time the
server process spends per answered request moves much less. This runs, for each round and each
``--python`` in turn (an interpreter that imports the version to measure, e.g. a wrapper that
sets ``PYTHONPATH`` to another checkout), ``webserver run`` on an ephemeral port and wrk
(``-t1 -c50``) on a 1 KiB file, keep-alive and 16 requests pipelined per write, and reads the
user + system time of every thread of the server's process tree from ``/proc`` before and after.

Usage: python benchmarks/bench_cpu.py --python A,B[,C] [--seconds 3] [--rounds 3]
       [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import HOST, Service, markdown_table, process_tree
from bench_scaling import pipeline_script
from bench_server import LUA_DONE, run_wrk

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="comma list of interpreters")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    pythons = [p for p in args.python.split(",") if p]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as name:
        tmp = Path(name)
        www = tmp / "www"
        www.mkdir()
        (www / "f1024.bin").write_bytes(os.urandom(1024))
        scripts = {"keep-alive": tmp / "plain.lua", "pipelined x16": tmp / "pipe16.lua"}
        scripts["keep-alive"].write_text(LUA_DONE)
        scripts["pipelined x16"].write_text(pipeline_script("/f1024.bin", 16))
        for _ in range(args.rounds):
            for python in pythons:
                argv = [python, "-m", "webserver", "run", "--host", HOST, "--port", "0"]
                argv += ["--root", str(www), "--no-access-log", "--workers", str(args.workers)]
                service = Service("ours", argv, tmp, banner=True)
                service.start()
                try:
                    assert service.proc is not None
                    for workload, script in scripts.items():
                        pids = process_tree(service.proc.pid)
                        before = cpu_seconds(pids)
                        result = run_wrk(service.port, "/f1024.bin", 50, args.seconds, script)
                        used = cpu_seconds(pids) - before
                        results.setdefault((workload, python), []).append(
                            (used * 1e6 / max(result.requests, 1), result.requests / result.seconds)
                        )
                finally:
                    service.stop()
    rows = []
    for (workload, python), runs in results.items():
        rows.append(
            [
                workload,
                python,
                " / ".join(f"{cpu:.0f}" for cpu, _ in runs),
                " / ".join(f"{rate:,.0f}" for _, rate in runs),
            ]
        )
    print(markdown_table(["workload", "python", "server CPU µs per request", "req/s"], rows))
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nload average at the end: {load} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
