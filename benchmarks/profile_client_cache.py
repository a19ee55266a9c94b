"""Where a cached second run of ``webclient batch`` spends its time: start-up against per file.

Why: the cached second run of bench_client.py (1,000 x 1 KiB, every answer fresh in the cache,
no request sent) is compared with the first run that filled the cache; whether it can be made
faster depends on how much of it is the fixed cost of starting and how much is the work done for
each file, and on which part of that work costs what.

What it does: serves ``--files`` files of 1 KiB with nginx (``expires 1h``, as bench_client.py),
fills a cache with one run, then ``--repeat`` times, alternating, runs ``python -c pass``, a
cached run of one file and a cached run of all of them (each into a new output folder), and
reports the median CPU time (user + system) of each: the one-file run is the start-up, and the
difference between the two runs divided by the files added is the cost of a file. With
``--py-spy``, it then samples (py-spy, ``--rate`` per second) a process that repeats the cached
run of all files ``--in-process`` times in one interpreter, and charges each sample to the part
of the per-file work its innermost matching frame belongs to (the table's shares, times the
per-file cost, give microseconds per part; sampling slows Python a little, so read them as
shares).

Usage: python benchmarks/profile_client_cache.py [--files 1000] [--repeat 10]
       [--py-spy PATH] [--rate 1000] [--in-process 12]
"""

from __future__ import annotations

import argparse
import collections
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import BenchError, CpuMeter, child_env, host_description, markdown_table
from bench_client import TMPFS, compile_package, start_origin, write_inputs

#: Parts of the per-file work, each named by frames that belong to it. A sample goes to the part
#: of its innermost frame that matches one (most specific first within a stack).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    (
        "output file: temporary file made, written, its mode set, renamed",
        ("OutputFile.", "create_temp", "CreatedFolders."),
    ),
    ("output name checked (folder resolved once, symlink check)", ("Destinations.__call__",)),
    ("cache: rows of the batch read ahead (one query, JSON fields)", ("EntryStore.prefetch",)),
    ("cache: plan (Vary, body size, age, freshness)", ("Cache.plan",)),
    ("cache: body read, use noted, header fields served", ("Cache.open",)),
    ("cache: last-used times written at the end", ("Index.batch", "Index._flush_batch")),
    ("command file read and parsed", ("read_command_file",)),
    (
        "requests built (URL split, default fields, resume check)",
        ("split_url", "Client._headers", "BatchRun._request"),
    ),
    (
        "redirect/retry rounds (the sink wrapper, each answer's next step)",
        ("Rounds._prepared", "Rounds._decide", "Rounds._step", "Rounds._round_of.<locals>.done"),
    ),
    (
        "results: outcome line, summary, command-file order",
        ("BatchRun._outcome", "BatchRun._complete", "BatchRun._send.<locals>.on_result"),
    ),
    (
        "round trip: response objects, delivery, the lane loop",
        (
            "deliver",
            "Context.serve",
            "start",
            "Client._exchanges",
            "Lane.run",
            "Client._send_round",
        ),
    ),
]

IN_PROCESS = """
import shutil, sys
from webclient.cli import main
commands, cache, out, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(count):
    shutil.rmtree(out, ignore_errors=True)
    try:
        main(["batch", commands, "--no-print", "--quiet", "--cache-dir", cache, "--out", out],
             standalone_mode=False)
    except SystemExit:
        pass
"""


def cpu_ms(argv: list[str]) -> float:
    """CPU time (user + system) of one child process, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(),
        check=True,
        timeout=120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def batch_argv(commands: Path, cache: Path, out: Path) -> list[str]:
    options = ["--no-print", "--quiet", "--cache-dir", str(cache), "--out", str(out)]
    return [sys.executable, "-m", "webclient", "batch", str(commands), *options]


def split_costs(tmp: Path, commands: Path, files: int, repeat: int) -> tuple[float, float]:
    """Median CPU ms of the one-file cached run, and µs per further file; prints the table."""
    one = tmp / "one.txt"
    one.write_text(commands.read_text().splitlines()[0] + "\n")
    cache = tmp / "cache"
    subprocess.run(batch_argv(commands, cache, tmp / "fill"), env=child_env(), check=True)
    samples: dict[str, list[float]] = {"python -c pass": [], "1 file": [], f"{files} files": []}
    for _ in range(repeat):
        samples["python -c pass"].append(cpu_ms([sys.executable, "-c", "pass"]))
        for label, source in (("1 file", one), (f"{files} files", commands)):
            out = tmp / "out"
            shutil.rmtree(out, ignore_errors=True)
            samples[label].append(cpu_ms(batch_argv(source, cache, out)))
    rows = [[label, f"{statistics.median(v):.1f}", f"{min(v):.1f}"] for label, v in samples.items()]
    print(markdown_table(["cached run", "median CPU ms", "best CPU ms"], rows))
    start = statistics.median(samples["1 file"])
    per_file = (statistics.median(samples[f"{files} files"]) - start) / (files - 1) * 1000
    print(f"\nstart-up (one-file run) {start:.1f} ms; each further file {per_file:.0f} us\n")
    return start, per_file


def parts_table(raw: Path, per_file_us: float) -> str:
    """Each part's share of the samples taken inside the batch, and its µs per file."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if not any("BatchRun.run" in f or "read_command_file" in f for f in frames):
            continue  # start-up: imports, click
        total += int(count_text)
        counts[_part_of(frames)] += int(count_text)
    if not total:
        return "no samples inside the batch"
    labels = [label for label, _ in PARTS] + ["other"]
    rows = [
        [
            label,
            f"{100 * counts[label] / total:.0f} %",
            f"{per_file_us * counts[label] / total:.0f}",
        ]
        for label in labels
    ]
    return markdown_table(["part", "share of samples", "us per file"], rows)


def _part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        name = frame.split(" (")[0]
        for label, keys in PARTS:
            if any(name.startswith(key) for key in keys):
                return label
    return "other"


def sample(py_spy: str, tmp: Path, commands: Path, rate: int, count: int) -> Path:
    raw = tmp / "profile.txt"
    argv = [py_spy, "record", "--format", "raw", "--rate", str(rate), "--output", str(raw)]
    argv += ["--", sys.executable, "-c", IN_PROCESS, str(commands), str(tmp / "cache")]
    argv += [str(tmp / "sampled"), str(count)]
    done = subprocess.run(argv, capture_output=True, env=child_env(), check=False, timeout=600)
    if done.returncode != 0 or not raw.exists():
        raise BenchError(f"py-spy failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--py-spy", default=None, help="py-spy, to split the per-file work")
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--in-process", type=int, default=12, help="cached runs sampled")
    args = parser.parse_args(argv)
    if not 2 <= args.files <= 10000 or not 1 <= args.repeat <= 50:
        parser.error("--files must be 2..10000 and --repeat 1..50")
    compile_package(sys.executable)
    meter = CpuMeter()
    for line in host_description():
        print(line)
    root = Path(TMPFS) if Path(TMPFS).is_dir() else None
    with tempfile.TemporaryDirectory(prefix="profile-cache-", dir=root) as name:
        tmp = Path(name)
        try:
            nginx, setup = start_origin(tmp, args.files)
        except BenchError as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        try:
            commands, _ = write_inputs(setup)
            _, per_file = split_costs(tmp, commands, args.files, args.repeat)
            if args.py_spy:
                raw = sample(args.py_spy, tmp, commands, args.rate, args.in_process)
                print(parts_table(raw, per_file) + "\n")
        except BenchError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            return 2
        finally:
            nginx.stop()
    print(meter.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
