"""System calls per request under load: ``perf trace -s`` (or ``strace -f -c``) on our server
while wrk drives it.

Why: every system call on the hot path releases and retakes the GIL and costs a kernel round
trip; the aim for a keep-alive request is one ``recv`` and one ``send``. This starts
``webserver run`` on an ephemeral port, attaches ``perf trace -s`` to it (kernel tracepoints,
which barely slow the server down; ``strace -f -c`` when perf is missing or with ``--strace``,
which stops the server at every call and so changes the timing-dependent counts), runs
``wrk -t1`` on a 1 KiB file for ``--seconds`` (``--connections``, ``--depth`` requests pipelined
per write), and prints each system call's count, and its failures (``EAGAIN``), divided by the
requests wrk saw answered. ``futex`` (GIL and lock hand-overs) depends on timing the most.

Usage: python benchmarks/profile_syscalls.py [--seconds 3] [--connections 50] [--depth 1]
       [--python PYTHON]
(needs perf or strace, and permission to trace the process: root, or ptrace_scope 0)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Service, markdown_table
from bench_scaling import pipeline_script
from bench_server import LUA_DONE, run_wrk


def parse_strace_summary(text: str) -> dict[str, tuple[int, int]]:
    """Calls and failures per system call from ``strace -c`` output."""
    calls: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            errors = int(parts[4]) if len(parts) == 6 else 0
            calls[parts[-1]] = (int(parts[3]), errors)
    return calls


_PERF_THREAD = re.compile(r"^\s*\S.* \((\d+)\), \d+ events")


def parse_perf_summary(text: str, tids: set[int]) -> dict[str, tuple[int, int]]:
    """Calls and failures per system call from ``perf trace -s`` output, summed over the
    threads in ``tids``."""
    calls: dict[str, tuple[int, int]] = {}
    wanted = False
    for line in text.splitlines():
        thread = _PERF_THREAD.match(line)
        if thread is not None:
            wanted = int(thread.group(1)) in tids
            continue
        parts = line.split()
        if wanted and len(parts) >= 3 and parts[0].isidentifier() and parts[1].isdigit():
            count, errors = calls.get(parts[0], (0, 0))
            calls[parts[0]] = (count + int(parts[1]), errors + int(parts[2]))
    return calls


def tracer(pid: int, out: Path, use_strace: bool) -> list[str]:
    if not use_strace and shutil.which("perf"):
        # System-wide, then the server's threads picked out: ``-p`` would miss worker threads
        # started during the run.
        return ["perf", "trace", "-s", "-a", "-o", str(out)]
    return ["strace", "-f", "-c", "-o", str(out), "-p", str(pid)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--depth", type=int, default=1, help="requests pipelined per write")
    parser.add_argument("--python", default=sys.executable, help="python with webserver")
    parser.add_argument("--strace", action="store_true", help="strace even if perf is here")
    args = parser.parse_args()
    if shutil.which("wrk") is None or not (shutil.which("perf") or shutil.which("strace")):
        print("wrk, and perf or strace, are needed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-syscalls-") as name:
        tmp = Path(name)
        www = tmp / "www"
        www.mkdir()
        (www / "f1024.bin").write_bytes(os.urandom(1024))
        script = tmp / "wrk.lua"
        script.write_text(pipeline_script("/f1024.bin", args.depth) if args.depth > 1 else LUA_DONE)
        argv = [args.python, "-m", "webserver", "run", "--host", "127.0.0.1", "--port", "0"]
        service = Service("ours", [*argv, "--root", str(www), "--no-access-log"], tmp, banner=True)
        service.start()
        summary = tmp / "strace.txt"
        try:
            assert service.proc is not None
            argv = tracer(service.proc.pid, summary, args.strace)
            trace = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # the tracer attaches to every thread
            result = run_wrk(service.port, "/f1024.bin", args.connections, args.seconds, script)
            tids = {int(tid) for tid in os.listdir(f"/proc/{service.proc.pid}/task")}
            trace.send_signal(signal.SIGINT)
            trace.wait(30)
        finally:
            service.stop()
        text = summary.read_text()
        calls = (
            parse_strace_summary(text) if argv[0] == "strace" else parse_perf_summary(text, tids)
        )
    requests = max(result.requests, 1)
    rows = [
        [name, f"{count / requests:.3f}", f"{errors / requests:.3f}"]
        for name, (count, errors) in sorted(calls.items(), key=lambda item: -item[1][0])
        if count / requests >= 0.001
    ]
    print(
        f"{result.requests:,} requests in {result.seconds:.1f} s under {argv[0]},"
        f" {args.connections} connections, depth {args.depth}\n"
    )
    print(markdown_table(["system call", "per request", "failed per request"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
