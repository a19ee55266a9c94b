"""HTTPS throughput of ``webserver run --certfile/--keyfile`` next to uvicorn, same certificate.

Why: TLS moves work into the server (the handshake, stepped on the selector thread, and user-space
encryption, which also turns ``sendfile`` into buffered writes); this measures what that costs
against the usual Python peer, by ratios on the machine at hand.

What it does: makes a temporary folder with a 1 KiB and a 16 MiB file and a self-signed P-256
certificate (the ``openssl`` command), starts our server and uvicorn (h11, asyncio loop, the ASGI
app of asgi_static.py) on ephemeral ports of 127.0.0.1, and drives them with ``curl --parallel``
(wrk speaks no TLS; curl is C, so the client costs little next to the servers). Workloads, each
a fixed number of requests bounded by ``--timeout``, alternated ours / uvicorn ``--rounds`` times:

* ``keepalive``  GET of the 1 KiB file, 16 transfers at once over reused TLS connections.
* ``close``      the same with ``Connection: close``: a full TLS handshake for every request.
* ``bigfile``    GET of the 16 MiB file, 4 at once, in MiB/s (our buffered TLS writes).

Every response is checked (status 200 and the body size). Two figures per workload: the rate
(requests/s or MiB/s, best round), which depends on how busy the shared machine is, and the
server's own CPU time per request (from /proc/PID/stat, median round), which hardly does; both
with the ratio ours / uvicorn (for the rate above 1 is better, for CPU time below 1).

Usage: python benchmarks/bench_tls.py [--rounds 3] [--requests 4000]
       [--workloads keepalive,close,bigfile]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _harness import (
    BENCH_DIR,
    MIB,
    BenchError,
    CpuMeter,
    Service,
    child_env,
    command_output,
    free_port,
    host_description,
    markdown_table,
    module_version,
)

KIB_FILE = "1k.bin"
BIG_FILE = "16m.bin"
#: Transfers curl runs at once, per workload.
PARALLEL = {"keepalive": 16, "close": 8, "bigfile": 4}


def make_certificate(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("the openssl command is needed to make a certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def ours(tmp: Path, www: Path, cert: Path, key: Path) -> Service:
    argv = [sys.executable, "-m", "webserver", "run", "--port", "0", "--root", str(www)]
    argv += ["--certfile", str(cert), "--keyfile", str(key), "--no-access-log"]
    return Service("ours", argv, tmp, banner=True)


def uvicorn(tmp: Path, www: Path, cert: Path, key: Path) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--http", "h11", "--loop", "asyncio"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    argv += ["--log-level", "warning", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    argv += ["asgi_static:app"]
    env = child_env(BENCH_WWW_ROOT=str(www))
    return Service("uvicorn", argv, tmp, port=port, env=env, cwd=BENCH_DIR)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_curl(
    curl: str, cert: Path, url: str, count: int, parallel: int, timeout: float, *, close: bool
) -> tuple[float, int, int]:
    """``count`` GETs of ``url`` with ``parallel`` at once; (seconds, good responses, bytes)."""
    lines = [f'url = "{url}"\noutput = "/dev/null"\n' for _ in range(count)]
    args = [curl, "--silent", "--parallel", "--parallel-max", str(parallel), "--http1.1"]
    args += ["--cacert", str(cert), "--max-time", str(timeout), "--config", "-"]
    args += ["--write-out", "%{http_code} %{size_download}\\n"]
    if close:
        args += ["--header", "Connection: close"]
    started = time.monotonic()
    done = subprocess.run(
        args,
        input="".join(lines),
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=False,
        env=child_env(),
    )
    elapsed = time.monotonic() - started
    good = 0
    size = 0
    for line in done.stdout.splitlines():
        status, _, length = line.partition(" ")
        if status == "200":
            good += 1
            size += int(length)
    return elapsed, good, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000, help="per keep-alive round")
    parser.add_argument("--workloads", default="keepalive,close,bigfile")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per curl run")
    options = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None:
        print("curl is needed (apt-get install -y curl)", file=sys.stderr)
        return 2
    if module_version(sys.executable, "uvicorn") is None:
        print("uvicorn is needed: pip install uvicorn", file=sys.stderr)
        return 2
    workloads = options.workloads.split(",")
    counts = {
        "keepalive": options.requests,
        "close": max(options.requests // 4, 1),
        "bigfile": 16,
    }
    print("\n".join(host_description()))
    print(f"curl: {command_output([curl, '--version'])}")
    print(
        f"uvicorn {module_version(sys.executable, 'uvicorn')}, h11, asyncio loop; ours: 1 process"
    )
    meter = CpuMeter()
    results: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as folder:
        tmp = Path(folder)
        www = tmp / "www"
        www.mkdir()
        (www / KIB_FILE).write_bytes(b"x" * 1024)
        (www / BIG_FILE).write_bytes(bytes(range(256)) * (16 * MIB // 256))
        cert, key = make_certificate(tmp)
        makers: dict[str, Callable[[Path, Path, Path, Path], Service]] = {
            "ours": ours,
            "uvicorn": uvicorn,
        }
        for round_number in range(options.rounds):
            for name, make in makers.items():
                service = make(tmp, www, cert, key)
                try:
                    service.start()
                    for workload in workloads:
                        big = workload == "bigfile"
                        target = BIG_FILE if big else KIB_FILE
                        url = f"https://localhost:{service.port}/{target}"
                        count = counts[workload]
                        assert service.proc is not None
                        cpu_before = cpu_seconds(service.proc.pid)
                        seconds, good, size = run_curl(
                            curl, cert, url, count, PARALLEL[workload], options.timeout,
                            close=workload == "close",
                        )  # fmt: skip
                        want = (16 * MIB) if big else 1024
                        if good != count or size != want * count:
                            raise BenchError(
                                f"{name} {workload}: {good} of {count} answered 200,"
                                f" {size} body bytes"
                            )
                        used = cpu_seconds(service.proc.pid) - cpu_before
                        figure = size / MIB / seconds if big else count / seconds
                        key_ = (name, workload)
                        results[key_] = max(results.get(key_, 0.0), figure)
                        cpu.setdefault(key_, []).append(used / count * 1e6)
                        unit = "MiB/s" if big else "req/s"
                        print(
                            f"round {round_number + 1} {name:8} {workload:10} {figure:9.1f} {unit}"
                            f"  server CPU {used / count * 1e6:8.0f} us/request"
                        )
                finally:
                    service.stop()
    rows = []
    for workload in workloads:
        unit = "MiB/s" if workload == "bigfile" else "req/s"
        mine, peer = results[("ours", workload)], results[("uvicorn", workload)]
        my_cpu = statistics.median(cpu[("ours", workload)])
        peer_cpu = statistics.median(cpu[("uvicorn", workload)])
        rows.append(
            [
                workload,
                f"{mine:.1f} {unit}",
                f"{peer:.1f} {unit}",
                f"{mine / peer:.2f}",
                f"{my_cpu:.0f}",
                f"{peer_cpu:.0f}",
                f"{my_cpu / peer_cpu:.2f}",
            ]
        )
    print()
    header = ["workload", "ours (best)", "uvicorn (best)", "ratio"]
    header += ["ours CPU us/req", "uvicorn CPU us/req", "ratio"]
    print(markdown_table(header, rows))
    print()
    print(meter.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
