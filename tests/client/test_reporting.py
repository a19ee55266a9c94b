"""Tests of webclient/_reporting.py: progress on stderr (bytes, rate, ETA; a count of commands),
and where it is never shown. (Outcomes, the summary and --json are tested through the CLI in
test_cli.py and test_batch.py.)"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from webclient._reporting import PROGRESS_THRESHOLD, REDRAW_LINES, REDRAW_TTY, Progress
from webclient.cli import main
from webserver import Server

pytestmark = pytest.mark.timeout(30)

MIB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_large_transfer_shows_bytes_rate_and_eta() -> None:
    """Half of 4 MiB in 2 s reads 2.0 MiB / 4.0 MiB, 1.0 MiB/s, ETA 0:02, redrawn in place."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(stream, True, total=1, tty=True, clock=clock)
    bar = progress.bar("GET /big.bin", 4 * MIB)
    assert bar is not None
    clock.now += 2
    bar.update(2 * MIB)
    last = stream.getvalue().split("\r\x1b[K")[-1]
    assert last == "GET /big.bin 2.0 MiB / 4.0 MiB, 1.0 MiB/s, ETA 0:02"
    bar.finish()
    progress.close()
    assert stream.getvalue().endswith("\r\x1b[K")  # the line is cleared at the end


def test_only_one_large_transfer_at_a_time_and_small_ones_get_none() -> None:
    """A second large transfer runs without a bar while the first has it; a small one never
    gets one; after the first finishes, the next large one does."""
    progress = Progress(io.StringIO(), True, total=3, tty=True, clock=Clock())
    first = progress.bar("GET /a", 2 * MIB)
    assert first is not None
    assert progress.bar("GET /b", 2 * MIB) is None
    assert progress.bar("GET /small", PROGRESS_THRESHOLD - 1) is None
    assert progress.bar("GET /chunked", None) is None
    first.finish()
    assert progress.bar("GET /c", 2 * MIB) is not None


def test_many_small_files_show_an_overall_count() -> None:
    """With several commands the line counts finished ones: [2/5]."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(stream, True, total=5, tty=True, clock=clock)
    progress.command_done()
    clock.now += 1
    progress.command_done()
    assert stream.getvalue().split("\r\x1b[K")[-1] == "[2/5]"


def test_report_lines_do_not_mix_with_the_status_line() -> None:
    """A line written meanwhile clears the status line first, then redraws it after."""
    stream = io.StringIO()
    progress = Progress(stream, True, total=4, tty=True, clock=Clock())
    progress.command_done()
    progress.write("GET /a: 200 OK\n")
    assert stream.getvalue().endswith("\r\x1b[KGET /a: 200 OK\n[1/4]")


def test_outside_a_terminal_progress_is_lines_at_most_once_a_second() -> None:
    """Asked for with stderr not a terminal: ``progress:`` lines, throttled, and the final
    state once at the end; no carriage returns or escapes."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(stream, True, total=3, tty=False, clock=clock)
    progress.command_done()
    progress.command_done()  # within the same second: not written
    clock.now += REDRAW_LINES
    progress.command_done()
    progress.close()
    assert stream.getvalue() == "progress: [1/3]\nprogress: [3/3]\n"


def test_disabled_progress_writes_nothing() -> None:
    """Not enabled: no bar, no count, nothing on the stream."""
    stream = io.StringIO()
    progress = Progress(stream, False, total=3, tty=True, clock=Clock())
    assert progress.bar("GET /a", 2 * MIB) is None
    progress.command_done()
    progress.close()
    assert stream.getvalue() == ""


@pytest.fixture
def large(www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    data = os.urandom(2 * MIB)
    (www / "large.bin").write_bytes(data)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("WEBCLIENT_CACHE_DIR", str(tmp_path / "cache"))
    return data


def test_progress_option_shows_progress_when_stderr_is_not_a_terminal(
    static_server: Server, large: bytes
) -> None:
    """``--progress`` with stderr a pipe: the large file's bytes and the count, as lines."""
    port = static_server.listen()[1]
    Path("cmds.txt").write_text(f"GET large.bin 127.0.0.1 {port}\nGET hello.txt 127.0.0.1 {port}\n")
    result = CliRunner().invoke(main, ["batch", "cmds.txt", "--no-print", "--progress"])
    assert result.exit_code == 0, result.output
    lines = [x for x in result.stderr.splitlines() if x.startswith("progress: ")]
    assert any(
        re.fullmatch(r"progress: \[0/2\] GET /large\.bin 0 bytes / 2\.0 MiB", x) for x in lines
    )
    assert lines[-1] == "progress: [2/2]"
    assert "\r" not in result.stderr


@pytest.mark.parametrize("options", [[], ["--json", "--progress"]], ids=["not a terminal", "json"])
def test_no_progress_unless_asked_and_never_with_json(
    static_server: Server, large: bytes, options: list[str]
) -> None:
    """Without a terminal (and without --progress), or with --json, stderr has no progress."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/large.bin"
    result = CliRunner().invoke(main, ["get", url, "-o", "large.bin", *options])
    assert result.exit_code == 0, result.output
    assert "progress" not in result.stderr and "MiB/s" not in result.stderr
    assert Path("large.bin").read_bytes() == large


def test_warnings_of_a_run_clear_the_status_line(tmp_path: Path) -> None:
    """A client warning during a run goes through the run: the status line is cleared first."""
    from webclient import Client, ClientConfig
    from webclient._batch import BatchRun
    from webclient.commands import parse_commands

    stderr = io.StringIO()
    commands = parse_commands(["GET a 127.0.0.1 1", "GET b 127.0.0.1 1"])
    with Client(ClientConfig(use_cache=False)) as client:
        run = BatchRun(
            client,
            commands,
            out_dir=tmp_path,
            stdout=io.BytesIO(),
            stderr=stderr,
            progress=True,
            progress_tty=True,
        )
        run.progress.command_done()
        run.warn("the cache is read-only")
    assert stderr.getvalue().endswith("[1/2]\r\x1b[Kwarning: the cache is read-only\n[1/2]")


def test_get_to_stdout_shows_progress_for_a_large_body(static_server: Server, large: bytes) -> None:
    """``get URL -o -`` (stdout) with --progress: the body on stdout, its bytes on stderr."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/large.bin"
    result = CliRunner().invoke(main, ["get", url, "-o", "-", "--progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == large
    assert "progress: GET /large.bin 0 bytes / 2.0 MiB" in result.stderr
    assert list(Path().iterdir()) == []


def test_on_a_terminal_the_line_is_redrawn_at_most_ten_times_a_second() -> None:
    """Updates closer together than REDRAW_TTY are not drawn; the next one after it is."""
    clock, stream = Clock(), io.StringIO()
    progress = Progress(stream, True, total=1, tty=True, clock=clock)
    bar = progress.bar("GET /big.bin", 4 * MIB)
    assert bar is not None
    drawn = stream.getvalue().count("\r\x1b[K")
    clock.now += REDRAW_TTY / 2
    bar.update(MIB)
    assert stream.getvalue().count("\r\x1b[K") == drawn
    clock.now += REDRAW_TTY
    bar.update(MIB)
    assert stream.getvalue().count("\r\x1b[K") == drawn + 1


def test_a_body_from_the_cache_shows_no_progress(
    static_server: Server, www: Path, large: bytes
) -> None:
    """A large file served fresh from the cache gets no bar (nothing crosses the network)."""
    ten_days_ago = time.time() - 10 * 24 * 3600
    os.utime(www / "large.bin", (ten_days_ago, ten_days_ago))  # heuristically fresh for a day
    url = f"http://127.0.0.1:{static_server.listen()[1]}/large.bin"
    runner = CliRunner()
    first = runner.invoke(main, ["get", url, "-o", "large.bin", "--progress"])
    assert "progress: GET /large.bin" in first.stderr
    again = runner.invoke(main, ["get", url, "-o", "large.bin", "--progress"])
    assert again.exit_code == 0, again.output
    assert "(cache hit)" in again.stderr and "progress" not in again.stderr
