"""Fresh requests while slow clients hold connections: ours next to nginx, uvicorn and waitress.

Why: a thread-per-request server stops answering once its threads wait on slow clients (issue
16). Ours parks every connection that waits on the network in the selector, so a fresh request
must be answered at once however many slow clients there are; this script measures that, with
the peers run the same way on the same files.

What it does, for each server and each N (default 24, 300, 1000): opens N connections, half
uploading a 1 MB body at 1 byte per second (one byte to each every second), half asking for the
16 MiB file with a 4 KiB receive buffer and never reading it; then times ``--probes`` fresh
``GET`` of the 1 KiB file on new connections, one after another (``--timeout`` each) and
``--gap`` seconds apart, so that they meet the slow clients' bursts at every phase, while the
slow clients keep trickling. Reports the probe median and worst (a failed probe counts as
failed), how many slow connections the server had closed by then, and the server's peak
resident memory (VmHWM summed over its process tree). A peer that cannot start is reported with
the reason, not dropped.

Usage: python benchmarks/bench_slow_clients.py [--counts 24,300,1000] [--only ours,nginx,...]
       [--probes 20] [--timeout 5] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _harness import HOST, BenchError, raise_nofile
from bench_server import BIG, Context, _fresh_get, build_service, make_www

SERVERS = ("ours", "nginx", "uvicorn", "waitress")
#: Seconds between two bytes of each slow upload.
TRICKLE_EVERY = 1.0


@dataclass
class Row:
    server: str
    count: int
    median_ms: float | None = None
    worst_ms: float | None = None
    failed: int = 0
    slow_closed: int = 0
    rss_mib: float | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)


class SlowClients:
    """N connections to ``port``: half trickling an upload, half never reading a large file."""

    def __init__(self, port: int, count: int) -> None:
        self.uploaders: list[socket.socket] = []
        self.readers: list[socket.socket] = []
        self.refused = 0
        self._stop = threading.Event()
        for i in range(count):
            try:
                if i % 2 == 0:
                    self.uploaders.append(self._uploader(port))
                else:
                    self.readers.append(self._reader(port))
            except OSError:
                self.refused += 1
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    @staticmethod
    def _uploader(port: int) -> socket.socket:
        sock = socket.create_connection((HOST, port), timeout=5)
        sock.sendall(
            b"POST /upload.bin HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000\r\n\r\nx"
        )
        sock.setblocking(False)
        return sock

    @staticmethod
    def _reader(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect((HOST, port))
        sock.sendall(f"GET {BIG} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        sock.setblocking(False)
        return sock

    def _trickle(self) -> None:
        while not self._stop.wait(TRICKLE_EVERY):
            for sock in self.uploaders:
                with contextlib.suppress(OSError):
                    sock.send(b"x")

    def closed_by_server(self) -> int:
        """Slow connections the server has closed (end of stream or reset seen)."""
        closed = 0
        for sock in self.uploaders:
            try:
                if sock.recv(65536, socket.MSG_PEEK) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed + self.refused

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.uploaders + self.readers:
            sock.close()


def measure(
    name: str, ctx: Context, count: int, probes: int, timeout: float, gap: float = 0.0
) -> Row:
    row = Row(name, count)
    try:
        service, _ = build_service(name, ctx)
        service.start()
    except (BenchError, OSError) as exc:
        row.error = f"cannot start: {exc}"
        return row
    try:
        clients = SlowClients(service.port, count)
        try:
            time.sleep(TRICKLE_EVERY * 2)  # every slow client has reached its waiting state
            times: list[float] = []
            for i in range(probes):
                if i and gap:
                    time.sleep(gap)
                try:
                    times.append(_fresh_get(service.port, timeout))
                except OSError:
                    row.failed += 1
            if times:
                row.median_ms = statistics.median(times) * 1000
                row.worst_ms = max(times) * 1000
            row.slow_closed = clients.closed_by_server()
            row.rss_mib = service.peak_rss_mib()
        finally:
            clients.close()
    finally:
        service.stop()
    return row


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def report(rows: list[Row], probes: int, timeout: float, gap: float = 0.0) -> str:
    lines = [
        "| server | slow clients | probe median ms | worst ms | probes failed | slow closed"
        " | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.server} | {row.count} | {row.error} | | | | |")
            continue
        lines.append(
            f"| {row.server} | {row.count:,} | {_num(row.median_ms)} | {_num(row.worst_ms)}"
            f" | {row.failed}/{probes} | {row.slow_closed} | {_num(row.rss_mib, 0)} |"
        )
    lines.append("")
    lines.append(
        f"Half the slow clients upload at 1 byte/s, half never read a 16 MiB file; {probes} fresh"
        f" GETs of 1 KiB one after another, {gap:g} s apart, {timeout:g} s timeout each (a timeout"
        " is a failure)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="24,300,1000", help="comma list of N")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma list of servers")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between two probes")
    parser.add_argument("--threads", type=int, default=None, help="--threads for our server")
    parser.add_argument("--ours-python", default=sys.executable, help="python with webserver")
    parser.add_argument("--peer-python", default=sys.executable, help="python with the peers")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.counts.split(",") if n]
    raise_nofile(4 * max(counts) + 256)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp_name:
        tmp = Path(tmp_name)
        ctx = Context(tmp, make_www(tmp), args.ours_python, args.peer_python, args.threads)
        for name in [n for n in args.only.split(",") if n]:
            for count in counts:
                print(f"  {name}: {count} slow clients ...", file=sys.stderr, flush=True)
                rows.append(measure(name, ctx, count, args.probes, args.timeout, args.gap))
    print(report(rows, args.probes, args.timeout, args.gap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
