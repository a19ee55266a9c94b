"""How the cost of serving grows: with connections, with file size, and with pipeline depth.

Starts ``webserver run`` once on an ephemeral port of 127.0.0.1 and runs wrk (one thread) over
three axes, each a small table: keep-alive connections (1 KiB file), file size (one connection
per core of wrk), and pipeline depth (50 connections). Figures are for one process; compare rows
within one run only.

    python benchmarks/bench_scaling.py [--duration 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import MIB, Service, markdown_table, raise_nofile
from bench_server import LUA_DONE, run_wrk

CONNECTIONS = [1, 10, 50, 200, 1000, 2000]
SIZES = {"1 KiB": 1024, "16 KiB": 16 * 1024, "64 KiB": 64 * 1024, "1 MiB": MIB, "16 MiB": 16 * MIB}
DEPTHS = [1, 4, 16, 64]


def pipeline_script(path: str, depth: int) -> str:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--python", default=sys.executable, help="python with webserver")
    args = parser.parse_args()
    raise_nofile(8192)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as name:
        tmp = Path(name)
        www = tmp / "www"
        www.mkdir()
        for size in SIZES.values():
            (www / f"f{size}.bin").write_bytes(os.urandom(size))
        plain = tmp / "plain.lua"
        plain.write_text(LUA_DONE)
        service = Service(
            "ours",
            [
                args.python,
                "-m",
                "webserver",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--root",
                str(www),
                "--no-access-log",
            ],
            tmp,
            banner=True,
        )
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
