"""Batch downloads over a slow link (20 ms round trip): webclient next to curl.

Why: on localhost a round trip costs microseconds and every client looks alike; over a real
network the round trips dominate a batch of small files, and what wins is keeping many requests
in flight (pipelining, several connections). This measures that, as issue #14 item 3 asks: 1,000
files of 1 KiB (targets: ours >= 5x one curl invocation and >= 1.5x ``curl --parallel
--parallel-max 8``) and 8 files of 16 MiB (target: ours >= 0.9x curl).

What it does: serves the files with nginx (one worker) on 127.0.0.1, puts
``benchmarks/delayproxy.py`` in front (10 ms each way), and times each client as one command
from start to exit, fetching every file through the proxy into a fresh folder on tmpfs:

* ``webclient batch --no-cache --no-print --quiet`` with its defaults (--pipeline 16,
  --connections 6), with ``--pipeline 1`` (no pipelining, the default before), and with
  ``--connections 1``
* one ``curl`` process given every URL in a ``-K`` config file (one connection, kept alive)
* ``curl --parallel --parallel-max 8`` with the same config file

Cases run round-robin, ``--repeat`` rounds; the table gives the median and each time divided by
ours (above 1: ours is faster). A client that cannot run is reported as such, not dropped.

Usage: python benchmarks/bench_slow_link.py [--repeat 3] [--delay 10]
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
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    HOST,
    BenchError,
    CpuMeter,
    Service,
    check_get,
    child_env,
    command_output,
    host_description,
    make_world_readable,
    markdown_table,
    nginx_service,
)
from bench_client import compile_package, interpreter_of

TMPFS = "/dev/shm"  # noqa: S108
RUN_TIMEOUT = 300.0
SMALL, SMALL_SIZE = 1000, 1024
LARGE, LARGE_SIZE = 8, 16 * 1024 * 1024


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def make_files(www: Path, prefix: str, count: int, size: int) -> list[str]:
    names = [f"{prefix}{i:04d}.bin" for i in range(count)]
    for name in names:
        with open(www / name, "wb") as handle:
            handle.write(os.urandom(size))
        make_world_readable(www / name)
    return names


def curl_config(tmp: Path, label: str, port: int, names: list[str], out: Path) -> Path:
    path = tmp / f"curl-{label}.conf"
    path.write_text(
        "".join(f'url = "http://{HOST}:{port}/{n}"\noutput = "{out / n}"\n' for n in names)
    )
    return path


def build_cases(
    tmp: Path, label: str, port: int, names: list[str], webclient: list[str]
) -> list[Case]:
    commands = tmp / f"commands-{label}.txt"
    commands.write_text("".join(f"GET {n} {HOST} {port}\n" for n in names))
    batch = [*webclient, "batch", str(commands), "--no-cache", "--no-print", "--quiet", "--out"]
    cases = [
        Case("webclient (defaults: --pipeline 16, --connections 6)", lambda o: [*batch, str(o)]),
        Case("webclient --pipeline 1", lambda o: [*batch, str(o), "--pipeline", "1"]),
        Case("webclient --connections 1", lambda o: [*batch, str(o), "--connections", "1"]),
    ]
    if shutil.which("curl") is None:
        cases.append(Case("curl", lambda o: ["curl"], error="curl is not installed"))
        return cases
    cases.append(
        Case(
            "curl -K (one process)",
            lambda o: ["curl", "-sS", "-K", str(curl_config(tmp, label, port, names, o))],
        )
    )
    cases.append(
        Case(
            "curl --parallel --parallel-max 8",
            lambda o: [
                "curl",
                "-sS",
                "--parallel",
                "--parallel-max",
                "8",
                "-K",
                str(curl_config(tmp, label, port, names, o)),
            ],
        )
    )
    return cases


def run_case(case: Case, out: Path, expected: int) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = case.argv(out)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT,
            env=child_env(), check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        case.error = f"did not finish within {RUN_TIMEOUT:g} s"
        return
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        case.error = f"exit status {done.returncode}: {lines[-1] if lines else 'no output'}"
        return
    written = sum(1 for p in out.iterdir() if p.is_file())
    if written != expected:
        case.error = f"wrote {written} files, not {expected}"
        return
    case.times.append(elapsed)


def report(title: str, cases: list[Case], targets: dict[str, float]) -> str:
    ours = cases[0].median
    piped = cases[1].median
    rows = []
    for case in cases:
        med = case.median
        if med is None:
            rows.append([case.name, "failed", "-", "-", "-"])
            continue
        rows.append(
            [
                case.name,
                f"{med:.3f}",
                f"{min(case.times):.3f}",
                f"{med / ours:.2f}" if ours else "-",
                f"{med / piped:.2f}" if piped else "-",
            ]
        )
    header = ["client", "median s", "best s", "/ ours (defaults)", "/ ours (--pipeline 1)"]
    lines = [f"### {title}", "", markdown_table(header, rows), ""]
    by_name = {c.name: c.median for c in cases}
    for peer, wanted in targets.items():
        theirs = by_name.get(peer)
        for mine in (cases[0], cases[1]):
            if theirs is None or mine.median is None:
                lines.append(f"- target {peer} / {mine.name} >= {wanted}: not measured")
                continue
            ratio = theirs / mine.median
            verdict = "met" if ratio >= wanted else "NOT met"
            lines.append(f"- {peer} / {mine.name} = {ratio:.2f} (target >= {wanted}: {verdict})")
    for case in cases:
        if case.error:
            lines.append(f"- {case.name}: FAILED: {case.error}")
    return "\n".join(lines)


def default_webclient() -> list[str]:
    beside = Path(sys.executable).with_name("webclient")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "webclient.cli"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each client (median)")
    parser.add_argument("--delay", type=float, default=10.0, help="ms added each way")
    parser.add_argument("--webclient", default=None, help="path of the webclient command")
    parser.add_argument("--only", choices=["small", "large"], help="run one of the two sets")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be 1..20")
    webclient = [args.webclient] if args.webclient else default_webclient()
    # As installed, with bytecode: an editable install under PYTHONDONTWRITEBYTECODE would
    # otherwise compile every module on each start (about 0.1 s of CPU on a loaded machine).
    compile_package(interpreter_of(webclient))
    meter = CpuMeter()
    for line in host_description():
        print(line)
    print(f"curl: {command_output(['curl', '--version'])}")
    print(f"delay: {args.delay:g} ms each way ({2 * args.delay:g} ms round trip)\n")
    root = Path(TMPFS) if os.access(TMPFS, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="bench-slow-", dir=root) as tmp_name:
        tmp = Path(tmp_name)
        www = tmp / "www"
        www.mkdir()
        make_world_readable(tmp, www)
        sets = []
        if args.only != "large":
            sets.append(("small", make_files(www, "s", SMALL, SMALL_SIZE), SMALL_SIZE))
        if args.only != "small":
            sets.append(("large", make_files(www, "l", LARGE, LARGE_SIZE), LARGE_SIZE))
        try:
            nginx = nginx_service(tmp, www)
        except BenchError as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        proxy = Service(
            "delayproxy",
            [sys.executable, str(Path(__file__).with_name("delayproxy.py")), "--target", "0"],
            tmp,
            banner=True,
        )
        reports = []
        try:
            nginx.start()
            proxy.argv[-1] = str(nginx.port)
            proxy.argv += ["--delay", str(args.delay)]
            proxy.start()
            check_get(proxy.port, f"/{sets[0][1][0]}", sets[0][2])
            for label, names, _ in sets:
                cases = build_cases(tmp, label, proxy.port, names, webclient)
                for round_no in range(args.repeat):
                    for case in cases:
                        if case.error is None:
                            print(
                                f"  {label} round {round_no + 1}: {case.name}",
                                file=sys.stderr,
                                flush=True,
                            )
                            run_case(case, tmp / "out", len(names))
                if label == "small":
                    title = f"{SMALL} x 1 KiB"
                    targets = {
                        "curl -K (one process)": 5.0,
                        "curl --parallel --parallel-max 8": 1.5,
                    }
                else:
                    title = f"{LARGE} x 16 MiB"
                    targets = {"curl -K (one process)": 0.9}
                reports.append(report(title, cases, targets))
        except BenchError as exc:
            print(f"a server did not start: {exc}", file=sys.stderr)
            return 2
        finally:
            proxy.stop()
            nginx.stop()
    print(meter.summary() + "\n")
    print("\n\n".join(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
