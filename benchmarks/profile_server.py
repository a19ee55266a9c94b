"""Where our server spends its time under the 1 KiB keep-alive load: a py-spy sampling profile.

Why: cProfile sees only the thread that starts it, while the server answers requests on a pool of
worker threads; py-spy samples every thread of the running process from outside, with no change to
the server. This starts ``webserver run`` on an ephemeral port, drives it with
``wrk -t1 -c50`` on a 1 KiB file (workload "keepalive" of bench_server.py), records
``py-spy record --format raw --function`` for ``--seconds``, and prints the functions with the most
samples on top of the stack (own time) and anywhere in the stack (cumulative time).

Without ``--gil`` a thread waiting for the GIL counts as busy in the function it waits in (often
right after a socket call); with ``--gil`` only the thread holding the GIL is sampled, which shows
where Python time goes.

Usage: python benchmarks/profile_server.py [--seconds 8] [--raw /tmp/ws-profile.txt] [--top 25]
       [--gil]
(needs ``pip install py-spy`` and permission to trace the process: root, or ptrace_scope 0)
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import (
    HOST,
    BenchError,
    check_get,
    child_env,
    markdown_table,
    ours_service,
    random_root,
)


def summarize(raw: Path, top: int, gil: bool = False) -> str:
    """Own and cumulative sample counts per function from py-spy's collapsed-stack output."""
    own: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    if not total:
        return "no samples"

    def table(counter: collections.Counter[str]) -> str:
        rows = [
            [str(i), f"{n / total:6.1%}", str(n), frame]
            for i, (frame, n) in enumerate(counter.most_common(top), 1)
        ]
        return markdown_table(["#", "share", "samples", "function (file:first line)"], rows)

    return "\n".join(
        [
            f"{total} samples of "
            + ("the thread holding the GIL" if gil else "busy threads (GIL waits count as busy)"),
            "",
            f"Top {top} by own time:",
            table(own),
            "",
            f"Top {top} by cumulative time:",
            table(cumulative),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of the py-spy record")
    parser.add_argument("--raw", type=Path, default=Path(tempfile.gettempdir()) / "ws-profile.txt")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--py-spy", default=None, help="path of py-spy")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (Python CPU time, without GIL waits)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be 1..120")
    beside = Path(sys.executable).with_name("py-spy")
    py_spy = args.py_spy or (str(beside) if beside.exists() else shutil.which("py-spy"))
    if py_spy is None or shutil.which("wrk") is None:
        print("needs py-spy (pip install py-spy) and wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="profile-server-") as tmp_name:
        tmp = Path(tmp_name)
        www = random_root(tmp, {"1k.bin": 1024})
        server = ours_service(tmp, www)
        wrk: subprocess.Popen[bytes] | None = None
        try:
            server.start()
            check_get(server.port, "/1k.bin", 1024)
            assert server.proc is not None
            url = f"http://{HOST}:{server.port}/1k.bin"
            wrk = subprocess.Popen(
                ["wrk", "-t1", "-c50", f"-d{args.seconds + 3}s", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )
            record = [py_spy, "record", "--format", "raw", "--function", "-r", str(args.rate)]
            record += ["-d", str(args.seconds), "-o", str(args.raw)]
            record += ["--pid", str(server.proc.pid), *(["--gil"] if args.gil else [])]
            done = subprocess.run(
                record, capture_output=True, text=True, timeout=args.seconds + 60, check=False
            )
            if done.returncode != 0 or not args.raw.exists():
                print(f"py-spy failed: {done.stderr.strip()[-400:]}", file=sys.stderr)
                return 1
            out, _ = wrk.communicate(timeout=30)
            for line in out.decode(errors="replace").splitlines():
                if "Requests/sec" in line or "Latency" in line:
                    print(f"wrk: {line.strip()}")
        except BenchError as exc:
            print(f"server did not start: {exc}", file=sys.stderr)
            return 1
        finally:
            if wrk is not None and wrk.poll() is None:
                wrk.terminate()
                wrk.wait(10)
            server.stop()
    print(f"raw profile: {args.raw}\n")
    print(summarize(args.raw, args.top, args.gil))
    return 0


if __name__ == "__main__":
    sys.exit(main())
