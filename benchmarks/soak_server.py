"""Soak test: mixed, partly hostile traffic against a real `webserver run` for a bounded time.

Reports requests served, errors, and the server's file descriptors and memory at start and end.
Flat descriptors and memory are the goal: a leak shows up as growth proportional to traffic.
Not part of the test suite; run it by hand or in a long CI job:

    python benchmarks/soak_server.py --duration 60 --clients 8
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Upper bound on requests per client, whatever the duration, so the loop always ends.
MAX_REQUESTS_PER_CLIENT = 1_000_000
SOCKET_TIMEOUT = 5.0


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, n: int = 1) -> None:
        with self.lock:
            self.requests += n

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def server_stats(pid: int) -> tuple[int, int]:
    """(open descriptors, resident KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return fds, int(match.group(1)) if match else -1


def read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one Content-Length response; returns its status."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?i)content-length: (\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed in body")
        rest += chunk
    buffer[:] = rest[length:]
    return status


def client(port: int, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() >= deadline:
            return
        kind = rng.choice(["get", "pipeline", "post", "bad", "abort", "head"])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
                buffer = bytearray()
                if kind == "get":
                    for _ in range(rng.randint(1, 20)):
                        sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                        if read_response(sock, buffer) != 200:
                            tally.error("get status")
                        tally.count()
                elif kind == "pipeline":
                    n = rng.randint(2, 32)
                    sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n" * n)
                    for _ in range(n):
                        if read_response(sock, buffer) != 200:
                            tally.error("pipeline status")
                    tally.count(n)
                elif kind == "post":
                    body = os.urandom(rng.randint(0, 100_000))
                    sock.sendall(
                        b"POST /uploads/u.bin HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                        % len(body)
                        + body
                    )
                    if read_response(sock, buffer) != 200:
                        tally.error("post status")
                    tally.count()
                elif kind == "head":
                    sock.sendall(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while sock.recv(65536):
                        pass
                    tally.count()
                elif kind == "bad":
                    sock.sendall(
                        rng.choice(
                            [
                                b"GET / HTTP/1.1\nHost: x\n\n",
                                b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n",
                                b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                                os.urandom(64),
                            ]
                        )
                    )
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):
                        pass
                    tally.count()
                else:  # abort: a download or an upload cut off midway
                    if rng.random() < 0.5:
                        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                        sock.recv(1000)
                    else:
                        sock.sendall(
                            b"POST /uploads/a.bin HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000
                        )
                    tally.count()
        except (OSError, EOFError, ValueError, IndexError) as exc:
            tally.error(type(exc).__name__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of traffic")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "small.txt").write_bytes(b"x" * 1024)
        (root / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
        (root / "uploads").mkdir()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webserver",
                "run",
                "--port",
                "0",
                "--root",
                folder,
                "--no-access-log",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
            # One request first, so the selector, wake-up sockets and first workers exist.
            warm = Tally()
            client(port, time.monotonic() + 0.5, warm, seed=-1)
            start_fds, start_rss = server_stats(proc.pid)
            tally = Tally()
            deadline = time.monotonic() + args.duration
            threads = [
                threading.Thread(target=client, args=(port, deadline, tally, i))
                for i in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(args.duration + 30)
            # Let the server notice the last closes before sampling.
            time.sleep(1.0)
            end_fds, end_rss = server_stats(proc.pid)
            uploads = len(list((root / "uploads").iterdir()))
            leftovers = [p for p in root.rglob(".webserver-*") if p.is_file()]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    print(f"duration            {args.duration:.0f} s, {args.clients} clients")
    print(f"requests            {tally.requests} ({tally.requests / args.duration:.0f}/s)")
    print(f"client-side errors  {dict(sorted(tally.errors.items())) or 'none'}")
    print(f"server descriptors  {start_fds} at start, {end_fds} at end")
    print(
        f"server memory (RSS) {start_rss / 1024:.1f} MiB at start, {end_rss / 1024:.1f} MiB at end"
    )
    print(f"uploads stored      {uploads}; temporaries left behind: {len(leftovers)}")
    print(f"server exit status  {code}")
    return 0 if code == 0 and not leftovers and end_fds <= start_fds + 2 else 1


if __name__ == "__main__":
    sys.exit(main())
