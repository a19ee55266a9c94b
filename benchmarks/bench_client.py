"""Wall-clock time of ``webclient batch`` fetching 1,000 small files, next to curl, wget and Python.

Why: a batch client is judged by how long a batch takes end to end, process start included, so
each client is timed as one command from start to exit on the same 1,000 files from the same
server, and the table gives each one's time divided by ours.

What it does: writes 1,000 files of 1 KiB into a temporary folder and serves them with nginx (one
worker, ``expires 1h`` so responses carry ``Cache-Control: max-age=3600``, access log on so the
number of requests each client really made can be counted) on an ephemeral port of 127.0.0.1.
Then, each ``--repeat`` times, into a fresh output folder:

* ``webclient batch --no-cache --no-print --quiet --out DIR``
* the same with ``--pipeline 16``
* ``webclient batch --cache-dir DIR`` twice on an empty cache: the first run fills it, the second
  may answer every request from it (max-age 3600), so nginx should see no requests
* one ``curl`` process given all 1,000 URLs through a ``--config`` file (``url`` + ``output``)
* ``wget -q -i urls.txt -P DIR``
* a ``requests.Session`` loop and an ``httpx.Client`` loop, each in a new Python process

If ``webclient batch`` fails, that is printed and the other clients are still measured.

Files and outputs go to tmpfs (``/dev/shm``) when it is writable, so what is timed is the clients,
not the disk's write-back. Cases run round-robin, ``--repeat`` rounds, and the median is reported.

Usage: python benchmarks/bench_client.py [--repeat 5] [--files 1000] [--webclient PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

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
    module_version,
    nginx_service,
)

FILE_SIZE = 1024
#: Parent of the private temporary folder (mkdtemp makes it 0700 with a unique name).
TMPFS = "/dev/shm"  # noqa: S108
RUN_TIMEOUT = 180.0

REQUESTS_LOOP = """
import pathlib, sys
import requests
urls = pathlib.Path(sys.argv[1]).read_text().split()
out = pathlib.Path(sys.argv[2])
with requests.Session() as session:
    for url in urls:
        response = session.get(url)
        response.raise_for_status()
        (out / url.rsplit("/", 1)[1]).write_bytes(response.content)
"""
HTTPX_LOOP = REQUESTS_LOOP.replace("import requests", "import httpx").replace(
    "requests.Session()", "httpx.Client()"
)


@dataclass
class Case:
    """One client command; ``argv`` is built for a given output folder."""

    name: str
    argv: Callable[[Path], list[str]]
    ours: bool = False
    writes_files: bool = True
    times: list[float] = field(default_factory=list)
    requests_seen: list[int] = field(default_factory=list)
    files: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


@dataclass
class Setup:
    tmp: Path
    port: int
    names: list[str]
    access_log: Path

    def urls(self) -> list[str]:
        return [f"http://{HOST}:{self.port}/{name}" for name in self.names]


def make_files(www: Path, count: int) -> list[str]:
    www.mkdir()
    names = [f"f{i:04d}.bin" for i in range(count)]
    for name in names:
        (www / name).write_bytes(os.urandom(FILE_SIZE))
        make_world_readable(www / name)
    make_world_readable(www.parent, www)
    return names


def start_origin(tmp: Path, files: int) -> tuple[Service, Setup]:
    """nginx serving ``files`` new 1 KiB files from ``tmp/www`` (``expires 1h``, so a cache may
    keep them; an access log, to count the requests that reached it), started and answering;
    the caller stops it. BenchError when it cannot run."""
    names = make_files(tmp / "www", files)
    access_log = tmp / "access.log"
    nginx = nginx_service(tmp, tmp / "www", location_extra="expires 1h;", access_log=access_log)
    try:
        nginx.start()
        check_get(nginx.port, f"/{names[0]}", FILE_SIZE)
    except BaseException:
        nginx.stop()
        raise
    return nginx, Setup(tmp, nginx.port, names, access_log)


def write_inputs(setup: Setup) -> tuple[Path, Path]:
    """The command file for webclient and the URL list for wget and the Python loops."""
    commands = setup.tmp / "commands.txt"
    commands.write_text("".join(f"GET {n} {HOST} {setup.port}\n" for n in setup.names))
    urls = setup.tmp / "urls.txt"
    urls.write_text("".join(f"{u}\n" for u in setup.urls()))
    return commands, urls


def curl_config(setup: Setup, out: Path) -> Path:
    """A curl config with a ``url`` and an ``output`` line per file, saving into ``out``."""
    path = setup.tmp / "curl.conf"
    lines = [
        f'url = "{u}"\noutput = "{out / n}"\n'
        for u, n in zip(setup.urls(), setup.names, strict=True)
    ]
    path.write_text("".join(lines))
    return path


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def run_case(case: Case, setup: Setup, out: Path) -> None:
    """Run one case once into ``out``; record time, requests nginx saw, files written."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    before = count_lines(setup.access_log)
    argv = case.argv(out)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            env=child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        case.error = f"did not finish within {RUN_TIMEOUT:g} s"
        return
    except OSError as exc:
        case.error = f"cannot run {argv[0]}: {exc}"
        return
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        text = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        case.error = f"exit status {done.returncode}: {text[-1] if text else 'no output'}"
        return
    time.sleep(0.05)  # nginx writes the access log line after the response
    case.times.append(elapsed)
    case.requests_seen.append(count_lines(setup.access_log) - before)
    case.files.append(count_files(out))


def build_cases(setup: Setup, webclient: list[str], python: str) -> list[Case]:
    commands, urls = write_inputs(setup)
    batch = [*webclient, "batch", str(commands), "--no-print", "--quiet"]
    cache = setup.tmp / "cache"
    cases = [
        Case("webclient --no-cache", lambda o: [*batch, "--no-cache", "--out", str(o)], ours=True),
        Case(
            "webclient --no-cache --pipeline 16",
            lambda o: [*batch, "--no-cache", "--pipeline", "16", "--out", str(o)],
            ours=True,
        ),
        Case(
            "webclient --cache-dir, 1st run (empty cache)",
            lambda o: [*batch, "--cache-dir", str(cache), "--out", str(o)],
            ours=True,
        ),
        Case(
            "webclient --cache-dir, 2nd run (fresh cache)",
            lambda o: [*batch, "--cache-dir", str(cache), "--out", str(o)],
            ours=True,
        ),
    ]
    if shutil.which("curl"):
        cases.append(
            Case(
                "curl (one process, --config)",
                lambda o: ["curl", "-sS", "--config", str(curl_config(setup, o))],
            )
        )
    if shutil.which("wget"):
        cases.append(Case("wget -i", lambda o: ["wget", "-q", "-i", str(urls), "-P", str(o)]))
    for dist, code in (("requests", REQUESTS_LOOP), ("httpx", HTTPX_LOOP)):
        version = module_version(python, dist)
        if version is not None:
            label = "requests.Session loop" if dist == "requests" else "httpx.Client loop"
            cases.append(Case(f"{label} ({dist} {version})", _python_loop(python, code, urls)))
    return cases


def _python_loop(python: str, code: str, urls: Path) -> Callable[[Path], list[str]]:
    """The argv builder of a Python loop client run in its own interpreter."""
    return lambda out: [python, "-c", code, str(urls), str(out)]


def run_all(cases: list[Case], setup: Setup, repeat: int) -> None:
    by_name = {c.name: c for c in cases}
    first, second = (
        by_name.get("webclient --cache-dir, 1st run (empty cache)"),
        by_name.get("webclient --cache-dir, 2nd run (fresh cache)"),
    )
    for round_no in range(repeat):
        for case in cases:
            if case.error or case is second:
                continue
            if case is first:
                shutil.rmtree(setup.tmp / "cache", ignore_errors=True)
            print(f"  round {round_no + 1}: {case.name}", file=sys.stderr, flush=True)
            run_case(case, setup, setup.tmp / "out")
            if case is first and second is not None:
                if first.error:
                    second.error = "not run: the first run failed"
                else:
                    run_case(second, setup, setup.tmp / "out")


def report(cases: list[Case], count: int) -> str:
    ours = next((c for c in cases if c.ours and c.median is not None), None)
    pipelined = next((c for c in cases if c.name.endswith("--pipeline 16")), None)
    base = ours.median if ours else None
    base_p = pipelined.median if pipelined else None
    header = [
        "client",
        "median s",
        "best s",
        "requests seen by nginx",
        "files written",
        "/ ours (--no-cache)",
        "/ ours (--pipeline 16)",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for case in cases:
        if case.error:
            notes.append(f"{case.name}: FAILED: {case.error}")
        med = case.median
        if med is None:
            rows.append([case.name, "failed", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                case.name,
                f"{med:.3f}",
                f"{min(case.times):.3f}",
                "/".join(sorted({str(n) for n in case.requests_seen})),
                "/".join(sorted({str(n) for n in case.files})),
                f"{med / base:.2f}" if base else "-",
                f"{med / base_p:.2f}" if base_p else "-",
            ]
        )
    legend = (
        f"{count} files of 1 KiB from nginx on {HOST}; seconds are wall-clock for the whole "
        "command, process start included. / ours = that time divided by ours: above 1 means ours "
        "is faster. 'requests seen by nginx' and 'files written' list the distinct counts over "
        "the repeats."
    )
    out = [markdown_table(header, rows), "", legend]
    if notes:
        out += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(out)


def default_webclient() -> list[str]:
    beside = Path(sys.executable).with_name("webclient")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("webclient")
    return [found] if found else [sys.executable, "-m", "webclient.cli"]


def interpreter_of(command: list[str]) -> str:
    """The Python that runs ``command``: its script's ``#!`` line, else this one."""
    try:
        with open(command[0], "rb") as script:
            first = script.readline().decode("utf-8", "replace").strip()
    except OSError:
        return sys.executable
    return first[2:].split()[0] if first.startswith("#!") and "python" in first else sys.executable


def compile_package(python: str) -> None:
    """Write the bytecode of our packages, as installing them does.

    An editable install run with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile every
    module from source on each start, a cost no installed copy pays (about 15 ms here).
    """
    code = (
        "import compileall, os, webclient, webserver\n"
        "for p in (webclient, webserver):\n"
        "    compileall.compile_dir(os.path.dirname(p.__file__), quiet=1)\n"
    )
    subprocess.run([python, "-c", code], check=False, timeout=60, env=child_env())


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each client (median)")
    parser.add_argument("--files", type=int, default=1000, help="number of 1 KiB files")
    parser.add_argument("--webclient", default=None, help="path of the webclient command")
    parser.add_argument(
        "--python", default=sys.executable, help="python with requests and httpx installed"
    )
    parser.add_argument(
        "--tmp-root",
        type=Path,
        default=Path(TMPFS) if os.access(TMPFS, os.W_OK) else None,
        help="where files and outputs go (default: tmpfs /dev/shm, so disk write-back is not "
        "measured)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 20 or not 1 <= args.files <= 10000:
        parser.error("--repeat must be 1..20 and --files 1..10000")
    webclient = [args.webclient] if args.webclient else default_webclient()
    compile_package(interpreter_of(webclient))
    signal.signal(signal.SIGTERM, _stop_on_signal)
    meter = CpuMeter()
    for line in host_description():
        print(line)
    print(f"curl: {command_output(['curl', '--version'])}")
    print(f"wget: {command_output(['wget', '--version'])}")
    print(f"webclient: {' '.join(webclient)}")
    print(f"files and outputs under: {args.tmp_root or tempfile.gettempdir()}")
    with tempfile.TemporaryDirectory(prefix="bench-client-", dir=args.tmp_root) as tmp_name:
        try:
            nginx, setup = start_origin(Path(tmp_name), args.files)
        except BenchError as exc:
            print(f"cannot run the client benchmark: {exc}", file=sys.stderr)
            return 2
        cases: list[Case] = []
        try:
            print(f"nginx: {command_output([nginx.argv[0], '-v'])}; port {nginx.port}\n")
            cases = build_cases(setup, webclient, args.python)
            run_all(cases, setup, args.repeat)
        except BenchError as exc:
            print(f"the client benchmark failed: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; partial results follow", file=sys.stderr)
        finally:
            nginx.stop()
    if any(c.ours and c.error for c in cases):
        print("webclient batch is NOT usable here; only the other clients were measured.\n")
    print(meter.summary() + "\n")
    print(report(cases, args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
