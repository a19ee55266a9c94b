"""``webclient batch`` from two source trees, timed in alternation: the ratio of a change.

Why: the machine these runs share is noisy, so absolute times from two separate runs of
``bench_client.py`` cannot say whether a change made the client slower. Here both trees run the
same cases against the same nginx in one process, alternating (A B, then B A, ...), and the
report gives each case's median for both and their ratio, in wall-clock time and in the CPU
time of the client process (user + system, which other load on the machine disturbs less).

What it does: the files, nginx and cases of ``bench_client.py`` (``--no-cache``,
``--pipeline 16``, an empty cache filled, then answered from it); each tree's ``webclient`` is
started the same way, ``python -c`` with the tree first on ``sys.path``, with its bytecode
compiled first.

Usage: python benchmarks/bench_client_ab.py BEFORE_TREE AFTER_TREE [--repeat 9] [--files 1000]
(a tree is a folder holding ``webclient/``; e.g. ``git archive REV | tar -x -C /tmp/before``).
"""

from __future__ import annotations

import argparse
import compileall
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _harness import BenchError, CpuMeter, check_get, host_description, markdown_table
from _harness import nginx_service as start_nginx
from bench_client import FILE_SIZE, TMPFS, Case, Setup, make_files, run_case, write_inputs

LAUNCH = "import sys; sys.path.insert(0, sys.argv.pop(1)); from webclient.cli import main; main()"


def cases_for(tree: Path, setup: Setup, label: str) -> list[Case]:
    commands, _ = write_inputs(setup)
    batch = [sys.executable, "-c", LAUNCH, str(tree), "batch", str(commands)]
    batch += ["--no-print", "--quiet"]
    cache = setup.tmp / f"cache-{label}"
    return [
        Case("--no-cache", lambda o: [*batch, "--no-cache", "--out", str(o)], ours=True),
        Case(
            "--no-cache --pipeline 16",
            lambda o: [*batch, "--no-cache", "--pipeline", "16", "--out", str(o)],
            ours=True,
        ),
        Case("cache, 1st run", lambda o: [*batch, "--cache-dir", str(cache), "--out", str(o)]),
        Case("cache, 2nd run", lambda o: [*batch, "--cache-dir", str(cache), "--out", str(o)]),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_rounds(pairs: list[tuple[Case, Case]], setup: Setup, repeat: int) -> dict[int, list[float]]:
    """Run every pair ``repeat`` times, alternating which goes first; the CPU seconds of each
    run by ``id`` of its case (nginx is not reaped until the end, so only the client counts)."""
    cpu: dict[int, list[float]] = {}
    for round_no in range(repeat):
        print(f"  round {round_no + 1}", file=sys.stderr, flush=True)
        for index, (a, b) in enumerate(pairs):
            order = (a, b) if round_no % 2 == 0 else (b, a)
            for case in order:
                if index == 2:  # the first cache run starts from an empty cache
                    label = "a" if case is a else "b"
                    shutil.rmtree(setup.tmp / f"cache-{label}", ignore_errors=True)
                runs = len(case.times)
                start = _children_cpu()
                run_case(case, setup, setup.tmp / "out")
                if len(case.times) > runs:
                    cpu.setdefault(id(case), []).append(_children_cpu() - start)
    return cpu


def report(pairs: list[tuple[Case, Case]], cpu: dict[int, list[float]], count: int) -> str:
    rows = []
    for a, b in pairs:
        if a.error or b.error or not a.times or not b.times:
            rows.append([a.name, a.error or "-", b.error or "-", "-", "-", "-", "-", "-"])
            continue
        ratios = [y / x for x, y in zip(a.times, b.times, strict=False)]
        cpu_a, cpu_b = statistics.median(cpu[id(a)]), statistics.median(cpu[id(b)])
        rows.append(
            [
                a.name,
                f"{statistics.median(a.times):.3f}",
                f"{statistics.median(b.times):.3f}",
                f"{statistics.median(b.times) / statistics.median(a.times):.3f}",
                f"{min(ratios):.2f}..{max(ratios):.2f}",
                f"{cpu_a:.3f}",
                f"{cpu_b:.3f}",
                f"{cpu_b / cpu_a:.3f}",
            ]
        )
    header = [
        "case",
        "before median s",
        "after median s",
        "after / before",
        "per-round range",
        "before CPU s",
        "after CPU s",
        "CPU after / before",
    ]
    legend = (
        f"{count} files of 1 KiB from nginx; wall-clock seconds for the whole command, and the "
        "client process's CPU seconds (user + system), medians. after / before below 1 means "
        "the change is faster."
    )
    return markdown_table(header, rows) + "\n\n" + legend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 40 or not 1 <= args.files <= 10000:
        parser.error("--repeat must be 1..40 and --files 1..10000")
    for tree in (args.before, args.after):
        if not (tree / "webclient" / "cli.py").is_file():
            parser.error(f"{tree} holds no webclient/cli.py")
        compileall.compile_dir(tree / "webclient", quiet=1)
    meter = CpuMeter()
    for line in host_description():
        print(line)
    root = Path(TMPFS) if Path(TMPFS).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-ab-", dir=root) as tmp_name:
        tmp = Path(tmp_name)
        names = make_files(tmp / "www", args.files)
        access_log = tmp / "access.log"
        try:
            nginx = start_nginx(
                tmp, tmp / "www", location_extra="expires 1h;", access_log=access_log
            )
        except BenchError as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        try:
            nginx.start()
            check_get(nginx.port, f"/{names[0]}", FILE_SIZE)
            setup = Setup(tmp, nginx.port, names, access_log)
            pairs = list(
                zip(
                    cases_for(args.before.resolve(), setup, "a"),
                    cases_for(args.after.resolve(), setup, "b"),
                    strict=True,
                )
            )
            cpu = run_rounds(pairs, setup, args.repeat)
        finally:
            nginx.stop()
    print(meter.summary() + "\n")
    print(report(pairs, cpu, args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
