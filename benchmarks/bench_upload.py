"""Upload throughput of `webserver run`: POST a large body, time until the answer, MiB/s.

Compares source trees (``--source PATH``, repeatable: e.g. a checkout of the version before a
change and this one), alternated run by run so the machine's load falls on each alike. Each run
starts a fresh server on a fresh root in ``--dir`` (the same file system as the root is what
lets the upload handler link the spooled body instead of copying it).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

BLOCK = os.urandom(1 << 20)


def once(source: str, size: int, folder: str) -> float:
    """Seconds from the first byte sent to the whole answer, for one upload of ``size`` bytes."""
    with tempfile.TemporaryDirectory(dir=folder) as root:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webserver",
                "run",
                "--port",
                "0",
                "--root",
                root,
                "--no-access-log",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=source),
            cwd=source,
        )
        try:
            assert proc.stdout is not None
            found = re.search(r":(\d+)/$", proc.stdout.readline().strip())
            assert found, "no readiness line"
            conn = http.client.HTTPConnection("127.0.0.1", int(found[1]), timeout=120)
            start = time.perf_counter()
            conn.putrequest("POST", "/big.bin")
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            for _ in range(size // len(BLOCK)):
                conn.send(BLOCK)
            response = conn.getresponse()
            response.read()
            took = time.perf_counter() - start
            assert response.status in (200, 201), response.status
            assert os.path.getsize(os.path.join(root, "big.bin")) == size
            return took
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", required=True, help="a source tree")
    parser.add_argument("--mib", type=int, default=256, help="upload size in MiB")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the roots go")
    args = parser.parse_args()
    size = args.mib << 20
    rates: dict[str, list[float]] = {source: [] for source in args.source}
    for _ in range(args.repeat):
        for source in args.source:
            rates[source].append(size / once(source, size, args.dir) / (1 << 20))
    for source, values in rates.items():
        runs = " ".join(f"{rate:.0f}" for rate in values)
        print(f"{source}: {runs} MiB/s, median {statistics.median(values):.0f}")


if __name__ == "__main__":
    main()
