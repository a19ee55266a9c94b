"""Memory of our server: per idle keep-alive connection, and while a huge file goes each way.

Why: a parked connection must cost little (issue 14: at most 2 KiB each), and neither a file
served nor an upload may grow the server by its size.

What it does, with ``webserver run`` started once on an ephemeral port (``--max-connections``
and ``--keep-alive-timeout`` raised so nothing is cut during the run):

1. Idle connections: the resident set (VmRSS) after one warm-up request, then after
   ``--connections`` connections have each sent one ``GET`` of a 1 KiB file and read the answer
   (so each is parked between requests, its buffers used once), then again after they close;
   prints the growth per connection. The open-files limit is raised toward twice the count.
2. A ``--huge`` GiB sparse file (no disk space used) downloaded over one connection, read and
   discarded, with the server's VmRSS sampled every 0.1 s; then the same number of bytes
   uploaded with ``POST`` (written for real: the disk needs that much free space; removed
   afterwards). Prints MiB/s and the baseline, peak and final RSS of each.

Usage: python benchmarks/bench_memory.py [--connections 10000] [--huge 10] [--python PYTHON]
       [--skip-huge]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import HOST, MIB, Service, markdown_table, raise_nofile

GIB = 1024 * MIB
CHUNK = 1 << 20


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _get(sock: socket.socket, path: str) -> None:
    """Send one GET and read its whole answer (a 1 KiB body, so one or two recvs)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)


def idle_connections(port: int, pid: int, count: int) -> list[list[str]]:
    with socket.create_connection((HOST, port), timeout=10) as warm:
        _get(warm, "/f1024.bin")
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=10)
            _get(sock, "/f1024.bin")
            socks.append(sock)
        time.sleep(1.0)  # every connection parked
        held = rss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
    time.sleep(1.5)  # the server notices the closes
    after = rss_kib(pid)
    per = (held - before) * 1024 / max(len(socks), 1)
    return [
        [
            f"{len(socks):,}",
            f"{before / 1024:.1f}",
            f"{held / 1024:.1f}",
            f"{after / 1024:.1f}",
            f"{per:,.0f}",
        ]
    ]


class _Sampler:
    """The peak of a process's VmRSS, sampled every 0.1 s until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def download(port: int, path: str, size: int) -> float:
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        received = 0
        buf = bytearray(CHUNK)
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            received += n
            if received >= size:  # the head's bytes make it slightly more
                break
    return time.monotonic() - started


def upload(port: int, path: str, size: int) -> float:
    started = time.monotonic()
    chunk = b"\0" * CHUNK
    with socket.create_connection((HOST, port), timeout=60) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        left = size
        while left:
            left -= sock.send(chunk[: min(left, CHUNK)])
        answer = sock.recv(4096)
    if not answer.startswith(b"HTTP/1.1 20"):
        raise RuntimeError(f"upload refused: {answer[:80]!r}")
    return time.monotonic() - started


def huge_transfers(port: int, pid: int, www: Path, gib: float) -> list[list[str]]:
    size = int(gib * GIB)
    sparse = www / "huge.bin"
    with sparse.open("wb") as f:
        f.truncate(size)
    rows = []
    for label, run in (
        ("download", lambda: download(port, "/huge.bin", size)),
        ("upload", lambda: upload(port, "/uploaded.bin", size)),
    ):
        base = rss_kib(pid)
        sampler = _Sampler(pid)
        seconds = run()
        peak = sampler.stop()
        time.sleep(0.5)
        rows.append(
            [
                label,
                f"{gib:g} GiB",
                f"{size / MIB / seconds:,.0f}",
                f"{base / 1024:.1f}",
                f"{peak / 1024:.1f}",
                f"{rss_kib(pid) / 1024:.1f}",
            ]
        )
    sparse.unlink()
    (www / "uploaded.bin").unlink(missing_ok=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--huge", type=float, default=10.0, help="GiB each way")
    parser.add_argument("--skip-huge", action="store_true")
    parser.add_argument("--python", default=sys.executable, help="python with webserver")
    args = parser.parse_args()
    limit = raise_nofile(2 * args.connections + 256)
    count = min(args.connections, limit - 256)
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=Path.home()) as name:
        tmp = Path(name)
        www = tmp / "www"
        www.mkdir()
        (www / "f1024.bin").write_bytes(os.urandom(1024))
        argv = [args.python, "-m", "webserver", "run", "--host", HOST, "--port", "0"]
        argv += ["--root", str(www), "--no-access-log", "--keep-alive-timeout", "600"]
        argv += ["--max-connections", str(count + 100), "--max-upload", f"{int(args.huge) + 1}G"]
        service = Service("ours", argv, tmp, banner=True)
        service.start()
        try:
            assert service.proc is not None
            pid = service.proc.pid
            rows = idle_connections(service.port, pid, count)
            print("\nIdle keep-alive connections (each answered once, then parked)\n")
            print(
                markdown_table(
                    ["connections", "RSS before MiB", "held MiB", "after close MiB", "bytes each"],
                    rows,
                )
            )
            if not args.skip_huge:
                rows = huge_transfers(service.port, pid, www, args.huge)
                print("\nOne huge transfer each way (RSS sampled every 0.1 s)\n")
                print(
                    markdown_table(
                        ["transfer", "size", "MiB/s", "RSS before MiB", "peak MiB", "after MiB"],
                        rows,
                    )
                )
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
