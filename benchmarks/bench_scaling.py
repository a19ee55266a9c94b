"""How the cost of serving grows: with connections, with file size, and with pipeline depth.

Starts ``webserver run`` once on an ephemeral port of 127.0.0.1 and runs wrk (one thread) over
three axes, each a small table: keep-alive connections (1 KiB file), file size (one connection
per core of wrk), and pipeline depth (50 connections). Figures are for one process; compare rows
within one run only.

    python benchmarks/bench_scaling.py [--duration 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import MIB, markdown_table, ours_service, raise_nofile, random_root
from bench_server import LUA_DONE, pipeline_script, run_wrk

CONNECTIONS = [1, 10, 50, 200, 1000, 2000]
SIZES = {"1 KiB": 1024, "16 KiB": 16 * 1024, "64 KiB": 64 * 1024, "1 MiB": MIB, "16 MiB": 16 * MIB}
DEPTHS = [1, 4, 16, 64]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--python", default=sys.executable, help="python with webserver")
    args = parser.parse_args()
    raise_nofile(8192)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as name:
        tmp = Path(name)
        www = random_root(tmp, {f"f{size}.bin": size for size in SIZES.values()})
        plain = tmp / "plain.lua"
        plain.write_text(LUA_DONE)
        service = ours_service(tmp, www, python=args.python)
        service.start()
        try:
            rows = []
            for conns in CONNECTIONS:
                r = run_wrk(service.port, "/f1024.bin", conns, args.duration, plain)
                rows.append(
                    [
                        str(conns),
                        f"{r.requests / r.seconds:,.0f}",
                        f"{r.p50_ms:.1f} / {r.p99_ms:.1f}",
                        str(sum(r.errors.values())),
                    ]
                )
            print("\nKeep-alive connections (1 KiB GET)\n")
            print(markdown_table(["connections", "req/s", "p50 / p99 ms", "errors"], rows))

            rows = []
            for label, size in SIZES.items():
                r = run_wrk(service.port, f"/f{size}.bin", 4, args.duration, plain)
                rows.append(
                    [
                        label,
                        f"{r.requests / r.seconds:,.0f}",
                        f"{r.bytes / r.seconds / MIB:,.0f}",
                        f"{r.p50_ms:.2f}",
                    ]
                )
            print("\nFile size (4 keep-alive connections)\n")
            print(markdown_table(["file", "req/s", "MiB/s", "p50 ms"], rows))

            rows = []
            for depth in DEPTHS:
                script = tmp / f"pipe{depth}.lua"
                script.write_text(pipeline_script("/f1024.bin", depth))
                r = run_wrk(service.port, "/f1024.bin", 50, args.duration, script)
                rows.append(
                    [
                        str(depth),
                        f"{r.requests / r.seconds:,.0f}",
                        f"{r.p50_ms:.1f} / {r.p99_ms:.1f}",
                    ]
                )
            print("\nPipeline depth (50 connections, 1 KiB GET)\n")
            print(markdown_table(["depth", "req/s", "p50 / p99 ms"], rows))
            print(f"\npeak RSS {service.peak_rss_mib():.1f} MiB")
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
