"""Tests of webclient/cli.py: the command group, cache commands and option errors."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from webclient.cli import main
from webclient.config import human_size
from webserver import Server
from webserver.testing import running_server

from .conftest import Certificates

pytestmark = pytest.mark.timeout(30)


def test_cache_info_and_clear(
    static_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache info counts what a batch stored; cache clear empties it."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "c"
    port = static_server.listen()[1]
    (tmp_path / "cmds.txt").write_text(
        f"GET hello.txt 127.0.0.1 {port}\nGET data.bin 127.0.0.1 {port}\n"
    )
    runner = CliRunner()
    ran = runner.invoke(main, ["batch", "cmds.txt", "--cache-dir", str(cache), "--no-print"])
    assert ran.exit_code == 0, ran.output
    info = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert info.exit_code == 0
    assert f"folder: {cache}" in info.stdout
    assert "responses: 2" in info.stdout
    assert f"({13 + 256 * 300} bytes)" in info.stdout
    cleared = runner.invoke(main, ["cache", "clear", "--cache-dir", str(cache)])
    assert cleared.exit_code == 0
    assert "cleared 2 responses" in cleared.stdout
    after = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert "responses: 0" in after.stdout
    runner.invoke(main, ["get", "--cache-dir", str(cache), f"http://127.0.0.1:{port}/hello.txt"])
    one = runner.invoke(main, ["cache", "clear", "--cache-dir", str(cache)])
    assert one.stdout == f"cleared 1 response from {cache}\n"


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WEBCLIENT_CACHE_DIR picks the folder when --cache-dir is not given."""
    monkeypatch.setenv("WEBCLIENT_CACHE_DIR", str(tmp_path / "env-cache"))
    result = CliRunner().invoke(main, ["cache", "info"])
    assert result.exit_code == 0
    assert f"folder: {tmp_path / 'env-cache'}" in result.stdout


def test_cache_command_on_a_file_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache folder that is a file is one error line with status 1."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("WEBCLIENT_CACHE_DIR", str(blocker))
    result = CliRunner().invoke(main, ["cache", "info"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "is a file" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--no-cache", "--offline"], "cannot be used together"),
        (["--refresh", "--max-stale=60"], "cannot be used together"),
        (["--max-stale=soon"], "not a number of seconds"),
        (["--max-stale=\u00b2"], "not a number of seconds"),
        (["--max-size", "\u00b2M"], "not a size"),
        (["--cache-max-size", "\u0661K"], "not a size"),
        (["--pipeline", "0"], "--pipeline"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "inf"], "timeout must be at most 1000000 seconds"),
        (["--cache-max-size", "lots"], "not a size"),
        (["--max-size", "1.5G"], "not a size"),
        (["--max-size", "-1"], "not a size"),
        (["--cacert", "missing.pem"], "no such CA file"),
        (["--cacert", "c.pem", "--insecure"], "cannot be used together"),
        (["--max-time", "0"], "--max-time"),
        (["--retries", "-1"], "--retries"),
        (["--max-redirects", "-1"], "--max-redirects"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, options: list[str], message: str) -> None:
    """Invalid option values are one error line (status 2) naming the problem."""
    commands = tmp_path / "c.txt"
    commands.write_text("")
    result = CliRunner().invoke(main, ["batch", str(commands), *options])
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch"], "Missing argument 'COMMAND_FILE'"),
        (["fetch"], "No such command 'fetch'"),
        (["cache", "purge"], "No such command 'purge'"),
        (["batch", ".", "--no-cache"], "is a directory"),
        (["batch", "c.txt", "--bogus"], "No such option '--bogus'"),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """Missing arguments, unknown commands and options: one error line, status 2, no usage dump."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text("")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_missing_command_file_exit_2(tmp_path: Path) -> None:
    """A command file that cannot be read is reported with status 2."""
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_installed_script_runs(tmp_path: Path) -> None:
    """The console script answers --version and reports bad files without a traceback."""
    script = Path(sys.executable).parent / "webclient"
    version = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=20)
    assert version.returncode == 0
    assert "0.1.0" in version.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("GET\n")
    result = subprocess.run([script, "batch", str(bad)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip() == f"{bad}:1: missing file name after GET"


def test_short_help_option() -> None:
    result = CliRunner().invoke(main, ["-h"])
    assert result.exit_code == 0
    assert "batch" in result.output


def test_a_file_without_commands_is_said_once(tmp_path: Path) -> None:
    commands = tmp_path / "c.txt"
    commands.write_text("# nothing yet\n\n")
    result = CliRunner().invoke(main, ["batch", str(commands), "--no-cache", "--quiet"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"warning: {commands} has no commands (lines are: GET|POST file host [port])"
    ]


def test_a_warning_is_printed_once(tmp_path: Path) -> None:
    """The client's warnings reach stderr through the CLI only, not also through logging's
    last-resort handler (a real process: pytest's own log handler would hide that)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    commands = tmp_path / "c.txt"
    commands.write_text("# none\n")
    script = Path(sys.executable).parent / "webclient"
    args = ["batch", str(commands), "--cache-dir", str(blocker / "sub"), "--quiet"]
    result = subprocess.run([script, *args], capture_output=True, text=True, timeout=20)
    lines = [line for line in result.stderr.splitlines() if "without the cache" in line]
    assert len(lines) == 1
    assert lines[0].startswith("warning: ")


def test_cache_info_does_not_create_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "never"
    result = CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(folder)])
    assert result.exit_code == 0
    assert f"folder: {folder} (not created yet)" in result.output
    assert "responses: 0" in result.output
    assert not folder.exists()


@pytest.mark.parametrize("where", ["file", "under-file"])
@pytest.mark.parametrize("command", ["info", "clear"])
def test_cache_commands_on_a_file_path_exit_1(tmp_path: Path, where: str, command: str) -> None:
    """--cache-dir naming a file, or a path under one, is one error line with status 1, as
    documented for a cache folder that cannot be used."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    folder = blocker if where == "file" else blocker / "cache"
    result = CliRunner().invoke(main, ["cache", command, "--cache-dir", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "file" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert blocker.read_text() == "x"


def _filled_cache(static_server: Server, tmp_path: Path, *options: str) -> Path:
    """A cache folder after a batch fetched hello.txt and data.bin."""
    cache = tmp_path / "c"
    port = static_server.listen()[1]
    (tmp_path / "cmds.txt").write_text(
        f"GET hello.txt 127.0.0.1 {port}\nGET data.bin 127.0.0.1 {port}\n"
    )
    args = ["batch", "cmds.txt", "--cache-dir", str(cache), "--no-print", *options]
    ran = CliRunner().invoke(main, args)
    assert ran.exit_code == 0, ran.output
    return cache


def _spoil_row(cache: Path, key_part: str) -> None:
    with sqlite3.connect(cache / "index.sqlite3") as db:
        db.execute("UPDATE entries SET status = 'abc' WHERE key LIKE ?", (f"%{key_part}",))
    db.close()


def test_a_bad_row_does_not_stop_a_batch(
    static_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that cannot be read is dropped with one warning line; the run fetches and succeeds."""
    monkeypatch.chdir(tmp_path)
    cache = _filled_cache(static_server, tmp_path)
    _spoil_row(cache, "/hello.txt")
    args = ["batch", "cmds.txt", "--cache-dir", str(cache), "--no-print"]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unreadable entry" in warnings[0]
    (line,) = [line for line in again.stderr.splitlines() if line.startswith("GET /hello.txt")]
    assert "200 OK" in line and line.endswith("(cache miss)")


def test_cache_info_check_drops_what_cannot_be_used(
    static_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache info --check reads every row and hashes every body: a bad row, a tampered body and
    a body file no row names are dropped and counted; plain cache info reported all as fine."""
    monkeypatch.chdir(tmp_path)
    cache = _filled_cache(static_server, tmp_path)
    _spoil_row(cache, "/hello.txt")
    (data,) = [p for p in (cache / "bodies").rglob("*") if p.is_file() and p.stat().st_size > 99]
    data.write_bytes(b"X" + data.read_bytes()[1:])  # same size: only the hash tells
    orphan = cache / "bodies" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left by a crash")
    runner = CliRunner()
    plain = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert plain.exit_code == 0 and "responses: 2" in plain.stdout
    checked = runner.invoke(main, ["cache", "info", "--check", "--cache-dir", str(cache)])
    assert checked.exit_code == 0, checked.output
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2
    assert "status" in problems[0] + problems[1] and "SHA-256" in problems[0] + problems[1]
    assert "responses: 0" in checked.stdout
    assert "dropped 2 responses, removed 1 unused body files" in checked.stdout
    assert not orphan.exists() and not data.exists()
    assert [p for p in (cache / "bodies").rglob("*") if p.is_file()] == []


def test_cache_info_counts_temporary_files(tmp_path: Path) -> None:
    """Files left in tmp/ are counted (recent ones are kept: a run may be writing them)."""
    cache = tmp_path / "c"
    assert CliRunner().invoke(main, ["cache", "clear", "--cache-dir", str(cache)]).exit_code == 0
    (cache / "tmp" / "body-1").write_bytes(b"x" * 2048)
    result = CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert result.exit_code == 0
    assert "temporary files: 1 (2.0 KiB)" in result.stdout


def test_verify_cache_refetches_a_tampered_body(
    static_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batch --verify-cache hashes stored bodies: one changed on disk is fetched again."""
    monkeypatch.chdir(tmp_path)
    cache = _filled_cache(static_server, tmp_path)
    (data,) = [p for p in (cache / "bodies").rglob("*") if p.is_file() and p.stat().st_size > 99]
    data.write_bytes(b"X" + data.read_bytes()[1:])
    args = ["batch", "cmds.txt", "--cache-dir", str(cache), "--no-print", "--verify-cache"]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "data.bin").read_bytes() == bytes(range(256)) * 300
    (line,) = [line for line in again.stderr.splitlines() if line.startswith("GET /data.bin")]
    assert "200 OK" in line and line.endswith("(cache miss)")
    assert sum("SHA-256" in line for line in again.stderr.splitlines()) == 1


@pytest.mark.timeout(15)
@pytest.mark.parametrize(
    "command", [["batch", "cmds.txt", "--verify-cache"], ["cache", "info", "--check"]]
)
def test_a_named_pipe_in_place_of_a_body_never_hangs(
    static_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A stored body replaced by a named pipe (opening one waits for a writer for ever) is a
    body that is not a file: --verify-cache and cache info --check drop it, never wait."""
    monkeypatch.chdir(tmp_path)
    cache = _filled_cache(static_server, tmp_path)
    (data,) = [p for p in (cache / "bodies").rglob("*") if p.is_file() and p.stat().st_size > 99]
    data.unlink()
    os.mkfifo(data)
    result = CliRunner().invoke(main, [*command, "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "is not a file" in result.output
    if command[0] == "batch":
        assert (tmp_path / "data.bin").read_bytes() == bytes(range(256)) * 300


def test_python_m_webclient() -> None:
    """`python -m webclient` runs the webclient command, like `python -m webserver`."""
    result = subprocess.run(
        [sys.executable, "-m", "webclient", "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0 and "webclient, version" in result.stdout


DAY = 24 * 60 * 60.0


def _batch(cache: Path, *options: str) -> Any:
    """``webclient batch cmds.txt`` (in the current folder) with the cache at ``cache``."""
    args = ["batch", "cmds.txt", "--cache-dir", str(cache), "--no-print", *options]
    return CliRunner().invoke(main, args)


def _line(result: Any, path: str) -> str:
    (line,) = [x for x in result.stderr.splitlines() if path in x]
    return str(line)


def _edit(file: Path, body: bytes, *, age: float) -> None:
    """Change a served file and date it ``age`` seconds back (so a heuristic finds it old)."""
    file.write_bytes(body)
    then = time.time() - age
    os.utime(file, (then, then))


def _never_fresh(www: Path) -> None:
    """Date the served files a minute ahead: a heuristic then gives them no freshness at all
    (a file written in the same second it is served would get a fraction of a second)."""
    ahead = time.time() + 60
    for name in ("hello.txt", "data.bin"):
        os.utime(www / name, (ahead, ahead))


def test_no_cache_run_removes_the_older_stored_copy(
    static_server: Server, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After --no-cache fetched a changed file, a normal run saves that version, not the
    heuristically fresh older copy the cache held."""
    monkeypatch.chdir(tmp_path)
    _edit(www / "hello.txt", b"old\n", age=30 * DAY)  # fresh for a day by the heuristic
    cache = _filled_cache(static_server, tmp_path)
    _edit(www / "hello.txt", b"new version\n", age=20 * DAY)
    fetched = _batch(cache, "--no-cache")
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "hello.txt").read_bytes() == b"new version\n"
    again = _batch(cache)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "hello.txt").read_bytes() == b"new version\n"
    assert _line(again, "GET /hello.txt").endswith("(cache miss)")
    assert _line(again, "GET /data.bin").endswith("(cache miss)")


def test_refresh_revalidates_every_stored_response(
    static_server: Server, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--refresh asks the server about each stored response: a changed file is fetched, an
    unchanged one is confirmed by a 304 without its body."""
    monkeypatch.chdir(tmp_path)
    _edit(www / "hello.txt", b"old\n", age=30 * DAY)
    os.utime(www / "data.bin", (time.time() - 30 * DAY,) * 2)
    cache = _filled_cache(static_server, tmp_path)
    _edit(www / "hello.txt", b"new version\n", age=20 * DAY)
    plain = _batch(cache)
    assert (tmp_path / "hello.txt").read_bytes() == b"old\n"  # what --refresh is for
    assert _line(plain, "GET /hello.txt").endswith("(cache hit)")
    refreshed = _batch(cache, "--refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert (tmp_path / "hello.txt").read_bytes() == b"new version\n"
    assert _line(refreshed, "GET /hello.txt").endswith("(cache miss)")
    assert _line(refreshed, "GET /data.bin").endswith("(cache revalidated)")
    assert f"{human_size(len(b'new version') + 1)} received" in _line(refreshed, "summary:")


def test_max_stale_serves_a_stale_copy_without_asking(
    static_server: Server, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-stale=N serves a stored response up to N seconds past its freshness, saying it is
    stale; without it the stale copy is revalidated."""
    monkeypatch.chdir(tmp_path)
    _never_fresh(www)
    cache = _filled_cache(static_server, tmp_path)
    _edit(www / "hello.txt", b"new version\n", age=0)
    stale = _batch(cache, "--max-stale=3600")
    assert stale.exit_code == 0, stale.output
    assert _line(stale, "GET /hello.txt").endswith("(cache stale)")
    assert (tmp_path / "hello.txt").read_bytes() == b"hello, world\n"
    assert "0 bytes received" in _line(stale, "summary:") and "2 stale" in stale.stderr
    fresh = _batch(cache)
    assert (tmp_path / "hello.txt").read_bytes() == b"new version\n"
    assert _line(fresh, "GET /hello.txt").endswith("(cache miss)")


def test_offline_serves_what_is_stored_and_fails_the_rest(
    static_server: Server, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--offline uses no network: a stored response is served however old, and the line says
    offline; a URL not stored is one error line for its command, and the run exits 1."""
    monkeypatch.chdir(tmp_path)
    _never_fresh(www)
    cache = _filled_cache(static_server, tmp_path)
    _edit(www / "hello.txt", b"new version\n", age=0)
    port = static_server.listen()[1]
    (tmp_path / "up.txt").write_bytes(b"upload")
    with (tmp_path / "cmds.txt").open("a") as commands:
        commands.write(f"GET sub/page.html 127.0.0.1 {port}\nPOST up.txt 127.0.0.1 {port}\n")
    result = _batch(cache, "--offline")
    assert result.exit_code == 1
    assert _line(result, "GET /hello.txt").endswith("(cache stale, offline)")
    assert (tmp_path / "hello.txt").read_bytes() == b"hello, world\n"
    assert _line(result, "/sub/page.html") == (
        f"error: GET /sub/page.html 127.0.0.1:{port}: offline: not in the cache"
    )
    assert _line(result, "POST /up.txt").startswith("error: ") and "not sent" in result.stderr
    assert not (tmp_path / "sub").exists()
    shown = CliRunner().invoke(
        main, ["get", f"http://127.0.0.1:{port}/hello.txt", "--offline", "--cache-dir", str(cache)]
    )
    assert shown.exit_code == 0, shown.output
    assert _line(shown, "GET /hello.txt").endswith("(cache stale, offline)")  # get says it too


def test_cache_clear_urls_removes_only_those(
    static_server: Server, www: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache clear URL... removes every stored variant of the URLs named and says how many."""
    monkeypatch.chdir(tmp_path)
    _never_fresh(www)
    cache = _filled_cache(static_server, tmp_path)
    port = static_server.listen()[1]
    url = f"http://127.0.0.1:{port}/hello.txt"
    args = ["cache", "clear", "--cache-dir", str(cache), url, url.replace("hello", "nope")]
    cleared = CliRunner().invoke(main, args)
    assert cleared.exit_code == 0, cleared.output
    assert cleared.stdout.splitlines() == [
        f"cleared 1 response of {url}",
        f"cleared 0 responses of {url.replace('hello', 'nope')}",
    ]
    info = CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert "responses: 1" in info.stdout
    again = _batch(cache)
    assert _line(again, "GET /hello.txt").endswith("(cache miss)")
    assert _line(again, "GET /data.bin").endswith("(cache revalidated)")


def test_cache_clear_refuses_a_bad_url(tmp_path: Path) -> None:
    """A URL that is not http:// is one error line, status 2, and nothing is removed."""
    args = ["cache", "clear", "--cache-dir", str(tmp_path / "c"), "ftp://x/y"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.stderr.startswith("error: only http://")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_files_get_the_umask_mode(
    static_server: Server,
    www: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    umask: int,
) -> None:
    """Saved files are 0o666 & ~umask, whether fetched, served from the cache or replacing a
    file that was there with another mode."""
    monkeypatch.chdir(tmp_path)
    _never_fresh(www)
    (tmp_path / "hello.txt").write_bytes(b"there before")
    (tmp_path / "hello.txt").chmod(0o600 if umask != 0o077 else 0o644)
    old = os.umask(umask)
    try:
        cache = _filled_cache(static_server, tmp_path)
        modes = {p: (tmp_path / p).stat().st_mode & 0o777 for p in ("hello.txt", "data.bin")}
        again = _batch(cache)
        served = {p: (tmp_path / p).stat().st_mode & 0o777 for p in ("hello.txt", "data.bin")}
    finally:
        os.umask(old)
    assert _line(again, "GET /hello.txt").endswith("(cache revalidated)")  # the stored body
    assert modes == served == {"hello.txt": 0o666 & ~umask, "data.bin": 0o666 & ~umask}


# -- one-off commands, URLs, stdin and --json ----------------------------------------------------


def test_get_shows_the_body_and_saves_nothing(static_server: Server, work: Path) -> None:
    """``get URL...`` writes each body to stdout in the order given, like curl, and no file."""
    port = static_server.listen()[1]
    base = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(main, ["get", f"{base}/hello.txt", f"{base}/sub/page.html"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"hello, world\n<p>page</p>\n"
    assert "GET /hello.txt 127.0.0.1" in result.stderr and "summary: 2 ok" in result.stderr
    assert list(work.iterdir()) == []


def test_get_with_out_saves_the_file_through_the_shared_cache(
    static_server: Server, work: Path
) -> None:
    """``get URL -o FILE`` saves the body there (showing nothing); a batch then finds it in
    the same cache (no body crosses the network again)."""
    port = static_server.listen()[1]
    url = f"http://127.0.0.1:{port}/data.bin"
    runner = CliRunner()
    first = runner.invoke(main, ["get", url, "-o", "got/copy.bin"])
    assert first.exit_code == 0, first.output
    assert first.stdout_bytes == b""
    assert (work / "got" / "copy.bin").read_bytes() == bytes(range(256)) * 300
    assert "(cache miss)" in first.stderr
    (work / "cmds.txt").write_text(f"GET {url}\n")
    again = runner.invoke(main, ["batch", "cmds.txt", "--no-print"])
    assert again.exit_code == 0, again.output
    assert "0 bytes received" in again.stderr and "(cache miss)" not in again.stderr


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["get", "ftp://127.0.0.1/x"], 2, "error: not an http:// or https:// URL: 'ftp://"),
        (["get", "http://127.0.0.1:1/a", "http://127.0.0.1:1/b", "-o", "x"], 2, "-o names one"),
        (["get"], 2, "error: Missing argument 'URL...'"),
        (["get", "http://127.0.0.1:1/a", "-o", ""], 2, "error: -o needs a file name"),
        (["post", "nope.txt", "http://127.0.0.1:1/x"], 1, "no such file to upload: nope.txt"),
        (["post", os.devnull, "http://127.0.0.1:1/x"], 1, "not a regular file (a folder, a"),
        (["head", "http://127.0.0.1:1/x", "--offline", "--refresh"], 2, "cannot be used together"),
    ],
)
def test_one_off_mistakes_are_one_line_and_a_status(
    work: Path, args: list[str], status: int, message: str
) -> None:
    """A bad URL or option is one line and status 2 (nothing sent); a command that fails is
    status 1, as in a batch."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == status, result.output
    assert message in result.stderr.splitlines()[0]
    assert "Traceback" not in result.output


def test_get_exit_status_is_one_when_any_url_failed(static_server: Server, work: Path) -> None:
    """One 404 among good URLs: the others are shown, the 404 is an error line, status 1."""
    port = static_server.listen()[1]
    base = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(main, ["get", f"{base}/missing", f"{base}/hello.txt"])
    assert result.exit_code == 1
    assert result.stdout_bytes == b"hello, world\n"
    assert "error: GET /missing 127.0.0.1:" in result.stderr and "404" in result.stderr


def test_an_https_url_is_fetched_not_refused(work: Path, refused_port: int) -> None:
    """An https URL is sent like any other: where nothing listens its command is one transport
    error line and status 1, never a refusal of the scheme."""
    result = CliRunner().invoke(main, ["get", f"https://127.0.0.1:{refused_port}/x"])
    assert result.exit_code == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: GET /x 127.0.0.1:{refused_port}: ")
    assert "refused" in line and "only http://" not in line


@pytest.fixture
def tls_static_server(www: Path, certificates: Certificates) -> Iterator[Server]:
    """Our server on https, with the ``localhost`` certificate of the test CA."""
    with running_server(
        root=www, certfile=certificates.cert, keyfile=certificates.key, access_log=False
    ) as server:
        yield server


def test_get_and_batch_fetch_https_with_cacert(
    tls_static_server: Server, certificates: Certificates, www: Path, work: Path
) -> None:
    """``get`` and a command file fetch https URLs from our own TLS server, verified against
    --cacert; without it the certificate fails verification in one line, status 1."""
    port = tls_static_server.listen()[1]
    url = f"https://localhost:{port}/hello.txt"
    runner = CliRunner()
    got = runner.invoke(main, ["get", url, "--cacert", str(certificates.ca), "--no-cache"])
    assert got.exit_code == 0, got.output
    assert got.stdout_bytes == b"hello, world\n"
    (work / "cmds.txt").write_text(f"GET https://localhost:{port}/data.bin\nGET {url}\n")
    ran = runner.invoke(
        main,
        ["batch", "cmds.txt", "--out", "out", "--no-print", "--cacert", str(certificates.ca)],
    )
    assert ran.exit_code == 0, ran.output
    assert (work / "out" / "data.bin").read_bytes() == (www / "data.bin").read_bytes()
    assert (work / "out" / "hello.txt").read_bytes() == b"hello, world\n"
    untrusted = runner.invoke(main, ["get", url, "--no-cache"])
    assert untrusted.exit_code == 1
    (line,) = [x for x in untrusted.stderr.splitlines() if x.startswith("error:")]
    assert "certificate" in line


def test_head_shows_status_and_fields(static_server: Server, work: Path) -> None:
    """``head URL`` shows the status line and every header field, then a blank line."""
    port = static_server.listen()[1]
    result = CliRunner().invoke(main, ["head", f"http://127.0.0.1:{port}/hello.txt"])
    assert result.exit_code == 0, result.output
    text = result.stdout_bytes.decode()
    assert text.startswith("200 OK\r\n") and text.endswith("\r\n\r\n")
    assert "\r\nContent-Length: 13\r\n" in text.replace("content-length", "Content-Length")


def test_post_uploads_the_file_given(static_server: Server, www: Path, work: Path) -> None:
    """``post FILE URL`` sends FILE (from anywhere) to the URL's path."""
    port = static_server.listen()[1]
    (work / "local.csv").write_bytes(b"a,b\n1,2\n")
    result = CliRunner().invoke(main, ["post", "local.csv", f"http://127.0.0.1:{port}/up/may.csv"])
    assert result.exit_code == 0, result.output
    assert (www / "up" / "may.csv").read_bytes() == b"a,b\n1,2\n"
    assert "sent 8 bytes" in result.stderr


def test_post_reads_the_file_named_wherever_it_is(
    static_server: Server, www: Path, work: Path
) -> None:
    """``post ../FILE URL`` sends that file (no upload root); --json counts the bytes sent."""
    import json

    port = static_server.listen()[1]
    (work.parent / "elsewhere.csv").write_bytes(b"x,y\n")
    url = f"http://127.0.0.1:{port}/up/elsewhere.csv"
    result = CliRunner().invoke(main, ["post", "--json", "../elsewhere.csv", url])
    assert result.exit_code == 0, result.output
    assert (www / "up" / "elsewhere.csv").read_bytes() == b"x,y\n"
    record = json.loads(result.stdout.splitlines()[0])
    assert record["method"] == "POST" and record["sent"] == 4 and record["saved"] is None


def test_batch_dash_reads_the_command_file_from_stdin(static_server: Server, work: Path) -> None:
    """``batch -`` reads commands from stdin, both grammars; its errors name <stdin>."""
    port = static_server.listen()[1]
    lines = f"GET hello.txt 127.0.0.1 {port}\nGET http://127.0.0.1:{port}/sub/page.html\n"
    runner = CliRunner()
    result = runner.invoke(main, ["batch", "-", "--no-print"], input=lines)
    assert result.exit_code == 0, result.output
    assert (work / "hello.txt").read_bytes() == b"hello, world\n"
    assert (work / "sub" / "page.html").read_bytes() == b"<p>page</p>\n"
    bad = runner.invoke(main, ["batch", "-"], input="GET hello.txt\n")
    assert bad.exit_code == 2
    assert bad.stderr == "<stdin>:1: missing host name\n"


JSON_COMMAND_KEYS = {
    "type",
    "line",
    "method",
    "url",
    "ok",
    "status",
    "reason",
    "cache",
    "saved",
    "size",
    "received",
    "sent",
    "resumed",
    "message",
}
JSON_SUMMARY_KEYS = {
    "type",
    "ok",
    "failed",
    "received",
    "sent",
    "hits",
    "revalidated",
    "misses",
    "stale",
    "elapsed",
}


def test_json_prints_one_object_per_command_and_a_summary(
    static_server: Server, work: Path
) -> None:
    """--json: stdout is only JSON lines, one per command in file order with the documented
    keys, then the summary; the failure is also an error line on stderr."""
    import json

    port = static_server.listen()[1]
    (work / "cmds.txt").write_text(
        f"GET hello.txt 127.0.0.1 {port}\nGET missing 127.0.0.1 {port}\n"
    )
    result = CliRunner().invoke(main, ["batch", "cmds.txt", "--json"])
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(r) for r in records] == [JSON_COMMAND_KEYS] * 2 + [JSON_SUMMARY_KEYS]
    hello, missing, summary = records
    assert hello["ok"] is True and hello["status"] == 200 and hello["line"] == 1
    assert hello["saved"] == str(work / "hello.txt") and hello["size"] == 13
    assert hello["cache"] == "miss" and hello["url"] == f"http://127.0.0.1:{port}/hello.txt"
    assert missing["ok"] is False and missing["status"] == 404 and missing["saved"] is None
    assert summary == summary | {"type": "summary", "ok": 1, "failed": 1, "hits": 0}
    assert result.stderr.splitlines() == [f"error: {missing['message']}"]


def test_json_with_get_reports_without_showing_the_body(static_server: Server, work: Path) -> None:
    """``get --json`` reads the body and reports its size; stdout holds only JSON."""
    import json

    port = static_server.listen()[1]
    result = CliRunner().invoke(main, ["get", "--json", f"http://127.0.0.1:{port}/hello.txt"])
    assert result.exit_code == 0, result.output
    first, summary = (json.loads(line) for line in result.stdout.splitlines())
    assert first["size"] == 13 and first["saved"] is None and first["line"] is None
    assert summary["ok"] == 1


def test_json_says_bypass_for_what_the_cache_never_answers(
    static_server: Server, work: Path
) -> None:
    """Only a GET may be answered from the cache: a HEAD's and a POST's records say "bypass",
    as the JSON keys are documented, not "miss"."""
    import json

    port = static_server.listen()[1]
    (work / "up.txt").write_text("up")
    (work / "cmds.txt").write_text(f"POST up.txt 127.0.0.1 {port}\n")
    url = f"http://127.0.0.1:{port}/hello.txt"
    head = CliRunner().invoke(main, ["head", "--json", url])
    post = CliRunner().invoke(main, ["batch", "--json", "cmds.txt"])
    for result in (head, post):
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout.splitlines()[0])
        assert record["cache"] == "bypass"


def test_get_shows_bodies_in_url_order_when_hosts_answer_out_of_order(
    origin: tuple[Server, Any], bad_server: Any, work: Path
) -> None:
    """With --parallel, the first URL's host answering last still has its body shown first."""
    from webserver import Response

    fast = bad_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfast\n")
    server, handler = origin

    def slow(request: Any) -> Response:
        deadline = time.monotonic() + 5
        while not fast.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the fast answer has had time to arrive
        return Response(200, [], b"slow\n")

    handler.script("/slow", slow)
    urls = [f"http://127.0.0.1:{server.listen()[1]}/slow", fast.url + "x"]
    result = CliRunner().invoke(main, ["get", "--parallel", "2", "--no-cache", *urls])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"slow\nfast\n"
    assert fast.requests  # both hosts were asked


def test_batch_dash_uploads_from_the_current_folder_only(
    static_server: Server, www: Path, work: Path
) -> None:
    """Commands from stdin upload from the current folder (the default upload root), and
    nothing from outside it."""
    port = static_server.listen()[1]
    (work / "up.txt").write_bytes(b"up\n")
    (work.parent / "secret.txt").write_bytes(b"secret\n")
    lines = f"POST up.txt 127.0.0.1 {port}\nPOST ../secret.txt 127.0.0.1 {port}\n"
    result = CliRunner().invoke(main, ["batch", "-"], input=lines)
    assert result.exit_code == 1
    assert (www / "up.txt").read_bytes() == b"up\n"
    assert "refusing to upload ../secret.txt: it is outside ." in result.stderr
    assert not (www / "secret.txt").exists()


def test_a_servers_escape_sequences_never_reach_the_terminal(bad_server: Any, work: Path) -> None:
    """A POST answered with ESC sequences in its reason phrase and Location reports them
    escaped (\\x1b), never as raw control characters on stderr."""
    server = bad_server(
        b"HTTP/1.1 201 Created\x1b[2J\r\nLocation: /up\x1b]0;owned\x07\r\nContent-Length: 0\r\n\r\n"
    )
    (work / "up.txt").write_text("data\n")
    result = CliRunner().invoke(main, ["post", "up.txt", server.url + "up", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "201 Created\\x1b[2J" in result.stderr and "stored at /up\\x1b]0;owned" in result.stderr


def test_get_o_dev_null_discards_the_body(static_server: Server, work: Path) -> None:
    """-o /dev/null (here through a link to it) fetches and reports, keeps nothing and leaves
    the name as it was: never a file renamed over it."""
    (work / "discard").symlink_to(os.devnull)
    url = f"http://127.0.0.1:{static_server.listen()[1]}/hello.txt"
    result = CliRunner().invoke(main, ["get", url, "-o", "discard", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[0])
    assert record["ok"] is True and record["size"] == len(b"hello, world\n")
    assert os.readlink(work / "discard") == os.devnull
    assert sorted(p.name for p in work.iterdir()) == ["discard"]


def test_get_o_to_a_pipe_is_refused_not_replaced(work: Path) -> None:
    """-o naming a FIFO (or a device, /dev/stdout) is refused (status 2) before anything is
    sent: renaming the body over it would replace it with a plain file."""
    os.mkfifo(work / "fifo")
    result = CliRunner().invoke(main, ["get", "http://127.0.0.1:1/x", "-o", "fifo"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: -o fifo is not a regular file: use -o -")
    assert stat.S_ISFIFO((work / "fifo").lstat().st_mode)


def test_get_o_dev_stdout_is_stdout(static_server: Server, work: Path) -> None:
    """-o /dev/stdout writes the body to stdout, as -o - does (and as curl does), and leaves
    /dev/stdout as it was."""
    url = f"http://127.0.0.1:{static_server.listen()[1]}/hello.txt"
    script = Path(sys.executable).parent / "webclient"
    done = subprocess.run(
        [script, "get", url, "-o", "/dev/stdout", "-q"],
        cwd=work, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello, world\n"
    assert os.path.islink("/dev/stdout")


def test_no_cache_run_also_forgets_a_stored_redirect(
    origin: tuple[Server, Any], work: Path, tmp_path: Path
) -> None:
    """A stored 301 that now leads elsewhere: after a --no-cache run fetched the new target, the
    next run does not follow the stored redirect back to the old one."""
    server, handler = origin
    permanent = ("Cache-Control", "max-age=600")
    handler.script("/a", (301, [("Location", "/b"), permanent], b""))
    handler.script("/b", (200, [permanent], b"old\n"))
    handler.script("/c", (200, [permanent], b"new\n"))
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert CliRunner().invoke(main, ["get", server.url + "a", *cache]).stdout == "old\n"
    handler.script("/a", (301, [("Location", "/c"), permanent], b""))
    fresh = CliRunner().invoke(main, ["get", server.url + "a", "--no-cache", *cache])
    assert fresh.stdout == "new\n"
    later = CliRunner().invoke(main, ["get", server.url + "a", *cache])
    assert later.exit_code == 0, later.output
    assert later.stdout == "new\n"


def test_get_o_a_plain_file_under_dev_is_saved(static_server: Server, work: Path) -> None:
    """Only special files are refused: a plain file under /dev/shm (a tmpfs) is saved as any."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm here")
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        url = f"http://127.0.0.1:{static_server.listen()[1]}/hello.txt"
        result = CliRunner().invoke(main, ["get", url, "-o", str(folder / "hello.txt")])
        assert result.exit_code == 0, result.output
        assert (folder / "hello.txt").read_bytes() == b"hello, world\n"
    finally:
        shutil.rmtree(folder)
