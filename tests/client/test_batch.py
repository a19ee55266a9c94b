"""Tests of webclient/_batch.py, _outputs.py, _folders.py and _reporting.py, mostly by the CLI."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from webclient import Client, ClientConfig
from webclient._batch import BatchRun
from webclient._folders import STALE_TEMP_AGE, CreatedFolders, remove_stale_temps
from webclient._outputs import Destinations, OutputFile, destination
from webclient._reporting import CommandOutcome, is_binary
from webclient.cli import main
from webclient.commands import parse_commands
from webclient.errors import LocalFileError, UnsafePathError
from webserver import Request, Response, Server, StaticFiles, Uploads
from webserver.testing import running_server

from .conftest import (
    BROKEN,
    BROKEN_TIMEOUT,
    CLIENT_TIMEOUT,
    BadServer,
    Broken,
    Origin,
    fresh_python,
)

pytestmark = pytest.mark.timeout(30)


class CountingFiles(StaticFiles):
    """Static files that log each answer's status and body size."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.log: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()

    def get(self, request: Request) -> Response:
        response = super().get(request)
        size = response.file_length or (
            len(response.body) if isinstance(response.body, bytes) else 0
        )
        with self.lock:
            self.log.append((request.path, response.status, size))
        return response


@pytest.fixture
def counted(www: Path) -> Iterator[tuple[Server, CountingFiles]]:
    files = CountingFiles(www)

    def setup(server: Server) -> None:
        server.route("/", files, prefix=True)
        server.route("/", Uploads(www, max_size=10**9), prefix=True)

    server = Server(root=www, port=0, access_log=False, default_routes=False)
    with running_server(server=server, setup=setup) as srv:
        yield srv, files


def run(work: Path, lines: list[str], *options: str) -> Result:
    (work / "commands.txt").write_text("\n".join(lines) + "\n")
    return CliRunner().invoke(main, ["batch", "commands.txt", "--timeout", "5", *options])


def port_of(server: Server) -> int:
    return server.listen()[1]


def test_downloads_are_byte_exact_and_shown(
    counted: tuple[Server, CountingFiles], www: Path, work: Path
) -> None:
    """GET bodies land under --out byte for byte; text is shown on stdout; exit 0."""
    server, _ = counted
    port = port_of(server)
    result = run(
        work,
        [
            "# files",
            f"GET hello.txt 127.0.0.1 {port}",
            f"get /data.bin 127.0.0.1 ({port})",
            "",
            f"GET /sub/page.html 127.0.0.1 {port}",
        ],
        "--out",
        "out",
    )
    assert result.exit_code == 0, result.output
    for name in ("hello.txt", "data.bin", "sub/page.html"):
        assert (work / "out" / name).read_bytes() == (www / name).read_bytes()
    assert result.stdout_bytes.startswith(b"hello, world\n")
    assert b"<p>page</p>" in result.stdout_bytes
    assert "3 ok, 0 failed" in result.stderr
    assert "cache: 0 hit, 0 revalidated, 3 miss" in result.stderr
    assert not list((work / "out").glob(".*.part"))


def test_second_run_moves_no_body_bytes(counted: tuple[Server, CountingFiles], work: Path) -> None:
    """Unchanged files are revalidated (or fresh): the second run sends no body at all."""
    server, files = counted
    port = port_of(server)
    lines = [f"GET {name} 127.0.0.1 {port}" for name in ("hello.txt", "data.bin", "sub/page.html")]
    first = run(work, lines, "--no-print")
    assert first.exit_code == 0, first.output
    assert [status for _, status, _ in files.log] == [200, 200, 200]
    files.log.clear()
    second = run(work, lines, "--no-print")
    assert second.exit_code == 0, second.output
    assert all(status == 304 and size == 0 for _, status, size in files.log)
    assert "0 bytes received" in second.stderr
    assert "3 ok, 0 failed" in second.stderr
    assert (work / "data.bin").stat().st_size == 256 * 300


def test_a_run_answered_from_the_cache_loads_no_connection_module(tmp_path: Path) -> None:
    """A batch whose every answer is fresh in the cache saves its files without importing
    socket or the connection modules (they are loaded by the first request that needs them)."""
    from webclient._cache import Cache

    cache = Cache(tmp_path / "cache", max_size=1 << 20)
    writer = cache.begin()
    writer.write(b"stored body")
    now = time.time()
    fields = [("Cache-Control", "max-age=600"), ("Content-Length", "11")]
    url = "http://127.0.0.1:9/x.txt"  # (the discard port: nothing may be sent there)
    cache.store(url, [], 200, "OK", fields, writer, request_time=now, response_time=now)
    cache.close()
    commands = tmp_path / "commands.txt"
    commands.write_text("GET x.txt 127.0.0.1 9\n")
    code = (
        "import sys\n"
        "from webclient.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = ('socket', 'selectors', 'webclient._origin', 'webclient._wire')\n"
        "print(sorted(m for m in loaded if m in sys.modules))\n"
    )
    options = ["--quiet", "--no-print", "--cache-dir", str(tmp_path / "cache")]
    loaded = fresh_python(code, "batch", str(commands), *options, "--out", str(tmp_path))
    assert loaded == "[]"
    assert (tmp_path / "x.txt").read_bytes() == b"stored body"


def test_not_found_is_reported_and_the_run_goes_on(
    counted: tuple[Server, CountingFiles], work: Path
) -> None:
    """A 404 is one failed command: nothing written, later commands still run, exit 1."""
    server, _ = counted
    port = port_of(server)
    result = run(work, [f"GET /missing.txt 127.0.0.1 {port}", f"GET /hello.txt 127.0.0.1 {port}"])
    assert result.exit_code == 1
    assert "error: GET /missing.txt 127.0.0.1:" in result.stderr
    assert "404 Not Found" in result.stderr
    assert not (work / "missing.txt").exists()
    assert (work / "hello.txt").read_bytes() == b"hello, world\n"
    assert "1 ok, 1 failed" in result.stderr


def test_post_uploads_and_reports_location(
    counted: tuple[Server, CountingFiles], www: Path, work: Path
) -> None:
    """POST streams the local file; the server's 201 Created counts as success and the stored
    name is reported; a missing file fails alone."""
    server, _ = counted
    port = port_of(server)
    (work / "report.txt").write_bytes(b"quarterly numbers\n")
    result = run(
        work,
        [
            f"POST report.txt 127.0.0.1 {port}",
            f"POST /report.txt 127.0.0.1 {port}",
            f"POST nothere.txt 127.0.0.1 {port}",
        ],
    )
    assert result.exit_code == 1
    assert "201 Created, sent 18 bytes, stored at /report.txt" in result.stderr
    assert "stored at /report-1.txt" in result.stderr
    assert re.search(r"2 ok, 1 failed; \d+ bytes received, 36 bytes sent", result.stderr)
    assert "no such file to upload: nothere.txt" in result.stderr
    assert (www / "report-1.txt").read_bytes() == b"quarterly numbers\n"


def test_uploads_from_outside_the_command_files_folder_are_refused(
    origin: tuple[Server, Origin], tmp_path: Path, work: Path
) -> None:
    """POST reads only files inside the command file's folder (symlinks resolved): "../x" and a
    link pointing out are refused before anything is sent; --upload-root allows another folder."""
    server, handler = origin
    handler.script("/secret.txt", (201, [], b""))
    handler.script("/link.txt", (201, [], b""))
    handler.script("/mine.txt", (201, [], b""))
    port = port_of(server)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (work / "link.txt").symlink_to(tmp_path / "secret.txt")
    (work / "mine.txt").write_bytes(b"mine")
    lines = [
        f"POST ../secret.txt 127.0.0.1 {port}",
        f"POST link.txt 127.0.0.1 {port}",
        f"POST mine.txt 127.0.0.1 {port}",
    ]
    result = run(work, lines)
    assert result.exit_code == 1
    assert result.stderr.count("refusing to upload") == 2
    assert "it is outside . (allow its folder with --upload-root)" in result.stderr
    assert [(s.path, s.body) for s in handler.seen] == [("/mine.txt", b"mine")]
    handler.seen.clear()
    result = run(work, lines[1:], "--upload-root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [s.body for s in handler.seen] == [b"secret", b"mine"]


def test_refused_uploads_are_not_counted_as_sent(tmp_path: Path, work: Path) -> None:
    """An upload the server refuses before reading it (413, then close) adds nothing to the
    summary's bytes sent; an accepted one adds its size."""
    root = tmp_path / "uploads"
    root.mkdir()
    (work / "big.bin").write_bytes(b"x" * (2 * 1024 * 1024))
    (work / "small.txt").write_bytes(b"a" * 100)

    def setup(server: Server) -> None:
        server.route("/", Uploads(root, max_size=1000), prefix=True)

    server = Server(root=root, port=0, access_log=False, default_routes=False)
    with running_server(server=server, setup=setup):
        port = port_of(server)
        result = run(work, [f"POST big.bin 127.0.0.1 {port}", f"POST small.txt 127.0.0.1 {port}"])
    assert result.exit_code == 1
    assert "413" in result.stderr
    assert re.search(r"1 ok, 1 failed; \d+ bytes received, 100 bytes sent", result.stderr)


def test_post_invalidates_the_cached_get(origin: tuple[Server, Origin], work: Path) -> None:
    """In one file, GET, POST, GET: the second GET is not served from the cache."""
    server, handler = origin
    handler.script("/doc.txt", (200, [("Cache-Control", "max-age=600")], b"v1"))
    (work / "doc.txt").write_bytes(b"upload")
    port = port_of(server)
    result = run(
        work,
        [
            f"GET doc.txt 127.0.0.1 {port}",
            f"POST doc.txt 127.0.0.1 {port}",
            f"GET doc.txt 127.0.0.1 {port}",
            f"GET doc.txt 127.0.0.1 {port}",
        ],
        "--out",
        "out",
        "--pipeline",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert [s.method for s in handler.requests_to("/doc.txt")] == ["GET", "POST", "GET"]
    assert "cache: 1 hit, 0 revalidated, 2 miss" in result.stderr


def test_names_outside_out_are_refused(origin: tuple[Server, Origin], work: Path) -> None:
    """A file name escaping --out is refused before anything is sent; others still run."""
    server, handler = origin
    handler.script("/ok.txt", (200, [], b"ok"))
    port = port_of(server)
    result = run(
        work,
        [
            f"GET ../escape.txt 127.0.0.1 {port}",
            f"GET /a/%2e%2e/%2e%2e/esc2.txt 127.0.0.1 {port}",
            f"GET ok.txt 127.0.0.1 {port}",
        ],
        "--out",
        "out",
    )
    assert result.exit_code == 1
    assert result.stderr.count("refusing to write") == 2
    assert not (work / "escape.txt").exists()
    assert not (work / "esc2.txt").exists()
    assert (work / "out" / "ok.txt").read_bytes() == b"ok"
    assert [s.path for s in handler.seen] == ["/ok.txt"]


def test_invalid_command_file_lists_every_error_and_sends_nothing(
    origin: tuple[Server, Origin], work: Path
) -> None:
    """Exit status 2, every bad line as FILE:LINE: message, and no request at all."""
    server, handler = origin
    port = port_of(server)
    result = run(
        work,
        [f"GET ok.txt 127.0.0.1 {port}", "PUT x 127.0.0.1", f"GET y 127.0.0.1 {port}0000", "GET z"],
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "commands.txt:2: unknown method 'PUT' (expected GET or POST)",
        f"commands.txt:3: port not in 1..65535: '{port}0000'",
        "commands.txt:4: missing host name",
    ]
    assert handler.seen == []
    assert "Traceback" not in result.output


def test_network_failures_are_one_line_each(
    refused_port: int, silent_port: int, work: Path
) -> None:
    """Refused connections and timeouts print one clear line each, never a traceback."""
    result = run(
        work,
        [
            f"GET a 127.0.0.1 {refused_port}",
            f"GET b 127.0.0.1 {refused_port}",
            f"GET c 127.0.0.1 {silent_port}",
        ],
        "--timeout",
        "0.3",
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "connection refused" in errors[0] and "connection refused" in errors[1]
    assert "no response from" in errors[2] and "0.3 s" in errors[2]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", BROKEN, ids=lambda case: case.name)
def test_broken_server_is_one_line_and_leaves_nothing(
    bad_server: Callable[..., BadServer], static_server: Server, work: Path, case: Broken
) -> None:
    """Each broken answer is one error line, exit 1, no file under --out, nothing cached."""
    server = bad_server(case.reply, hang=case.hang)
    result = run(
        work,
        [f"GET a.txt 127.0.0.1 {server.port}", f"GET hello.txt 127.0.0.1 {port_of(static_server)}"],
        *("--out", "out", "--cache-dir", "cache", "--max-size", "1K"),
        *("--timeout", str(BROKEN_TIMEOUT)),
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert re.search(r"^error: GET /a\.txt 127\.0\.0\.1:\d+: .*" + case.message, errors[0])
    assert "1 ok, 1 failed" in result.stderr
    assert sorted(p.name for p in (work / "out").iterdir()) == ["hello.txt"]
    info = CliRunner().invoke(main, ["cache", "info", "--cache-dir", "cache"])
    assert "responses: 1" in info.stdout  # hello.txt only
    bodies = [p.name for p in (work / "cache" / "bodies").rglob("*") if p.is_file()]
    assert bodies == [hashlib.sha256(b"hello, world\n").hexdigest()]
    assert list((work / "cache" / "tmp").iterdir()) == []


def test_max_size_keeps_bodies_up_to_the_limit(
    counted: tuple[Server, CountingFiles], work: Path
) -> None:
    """--max-size refuses the larger file only: the smaller one is saved and cached."""
    server, _ = counted
    port = port_of(server)
    result = run(
        work,
        [f"GET data.bin 127.0.0.1 {port}", f"GET hello.txt 127.0.0.1 {port}"],
        *("--out", "out", "--cache-dir", "cache", "--max-size", "1K", "--no-print"),
    )
    assert result.exit_code == 1
    assert re.search(
        r"error: GET /data\.bin .*announced a body of 75\.0 KiB, more than the limit"
        r" of 1\.0 KiB",
        result.stderr,
    )
    assert sorted(p.name for p in (work / "out").iterdir()) == ["hello.txt"]
    info = CliRunner().invoke(main, ["cache", "info", "--cache-dir", "cache"])
    assert "responses: 1" in info.stdout


def test_parallel_hosts_report_in_command_order(www: Path, work: Path) -> None:
    """With --parallel, work overlaps but reports and bodies follow the command file."""
    with (
        running_server(root=www, access_log=False) as a,
        running_server(root=www, access_log=False) as b,
        running_server(root=www, access_log=False) as c,
    ):
        ports = [port_of(s) for s in (a, b, c)]
        lines = [
            f"GET {name} 127.0.0.1 {port}"
            for name in ("hello.txt", "sub/page.html", "data.bin")
            for port in ports
        ]
        result = run(
            work,
            [*lines, f"GET nope 127.0.0.1 {ports[0]}"],
            "--parallel",
            "3",
            "--no-cache",
            "--no-print",
        )
    assert result.exit_code == 1
    lines_out = result.stderr.splitlines()[:-1]
    reported = [line.removeprefix("error: ").split(": ")[0] for line in lines_out]
    expected = [
        f"GET /{name} 127.0.0.1:{port}"
        for name in ("hello.txt", "sub/page.html", "data.bin")
        for port in ports
    ]
    assert reported == [*expected, f"GET /nope 127.0.0.1:{ports[0]}"]


def test_nginx_downloads_and_revalidates(nginx: int, www: Path, work: Path) -> None:
    """nginx files arrive byte-exact, pipelined; a second run revalidates them with 304s."""
    lines = [f"GET {name} 127.0.0.1 {nginx}" for name in ("hello.txt", "data.bin", "sub/page.html")]
    first = run(work, lines, "--pipeline", "3", "--no-print")
    assert first.exit_code == 0, first.output
    for name in ("hello.txt", "data.bin", "sub/page.html"):
        assert (work / name).read_bytes() == (www / name).read_bytes()
    second = run(work, lines, "--pipeline", "3", "--no-print")
    assert second.exit_code == 0, second.output
    assert "0 bytes received" in second.stderr
    assert "3 miss" not in second.stderr


def test_http_server_downloads_and_revalidates(http_server: int, www: Path, work: Path) -> None:
    """An HTTP/1.0 server with Last-Modified only: byte-exact files, then If-Modified-Since."""
    lines = [f"GET {name} 127.0.0.1 {http_server}" for name in ("hello.txt", "data.bin")]
    first = run(work, lines, "--pipeline", "4", "--no-print")
    assert first.exit_code == 0, first.output
    assert (work / "data.bin").read_bytes() == (www / "data.bin").read_bytes()
    second = run(work, lines, "--no-print")
    assert second.exit_code == 0, second.output
    assert "0 bytes received" in second.stderr


def test_corrupt_cache_is_rebuilt_by_the_cli(
    counted: tuple[Server, CountingFiles], work: Path, tmp_path: Path
) -> None:
    """A damaged cache index is reported as a warning, rebuilt, and the run succeeds."""
    server, _ = counted
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.sqlite3").write_bytes(b"\x00garbage" * 1000)
    result = run(work, [f"GET hello.txt 127.0.0.1 {port_of(server)}"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr
    assert "rebuilding" in result.stderr


def test_quiet_reports_only_failures(counted: tuple[Server, CountingFiles], work: Path) -> None:
    """--quiet drops the ok lines and the summary; --no-print drops the bodies."""
    server, _ = counted
    port = port_of(server)
    result = run(
        work,
        [f"GET hello.txt 127.0.0.1 {port}", f"GET nope 127.0.0.1 {port}"],
        "--quiet",
        "--no-print",
    )
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    assert len(result.stderr.splitlines()) == 1
    assert "404" in result.stderr


def test_binary_body_is_not_dumped_on_a_terminal(static_server: Server, tmp_path: Path) -> None:
    """On a terminal a binary body becomes a one-line note; text is shown."""
    port = port_of(static_server)
    commands = parse_commands([f"GET data.bin 127.0.0.1 {port}", f"GET hello.txt 127.0.0.1 {port}"])
    stdout, stderr = io.BytesIO(), io.StringIO()
    with Client(ClientConfig(use_cache=False, timeout=5)) as client:
        summary = BatchRun(
            client,
            commands,
            out_dir=tmp_path,
            stdout=stdout,
            stderr=stderr,
            stdout_is_tty=True,
            progress=True,
        ).run()
    assert summary.ok == 2
    lines = stdout.getvalue().splitlines()
    assert lines[0].startswith(b"[/data.bin: binary content (application/octet-stream")
    assert lines[1] == b"hello, world"
    assert b"\x00" not in stdout.getvalue()


def test_progress_bar_for_large_downloads(static_server: Server, www: Path, tmp_path: Path) -> None:
    """A large transfer draws a progress bar labelled with its path."""
    (www / "large.bin").write_bytes(b"\x01" * (2 * 1024 * 1024))
    commands = parse_commands([f"GET large.bin 127.0.0.1 {port_of(static_server)}"])
    stderr = io.StringIO()
    with Client(ClientConfig(use_cache=False, timeout=5)) as client:
        BatchRun(
            client,
            commands,
            out_dir=tmp_path,
            stdout=io.BytesIO(),
            stderr=stderr,
            progress=True,
            print_bodies=False,
        ).run()
    assert "GET /large.bin" in stderr.getvalue().split("summary")[0]
    assert (tmp_path / "large.bin").stat().st_size == 2 * 1024 * 1024


def test_destination_rules(tmp_path: Path) -> None:
    """Names resolve inside the output folder; escapes and control characters are refused."""
    assert destination(tmp_path, "a/b.txt") == tmp_path.resolve() / "a" / "b.txt"
    (tmp_path / "link").symlink_to(tmp_path.parent)
    for bad in ("../x", "a/../../x", "link/x", "nul\x00", ""):
        with pytest.raises(UnsafePathError):
            destination(tmp_path, bad)


@pytest.mark.parametrize(
    ("content_type", "sample", "binary"),
    [
        ("text/plain; charset=utf-8", b"hello", False),
        ("application/json", b"{}", False),
        ("image/png", b"\x89PNG", True),
        (None, b"plain text \xc3\xa9", False),
        (None, b"\x00\x01\x02", True),
        ("application/octet-stream", b"just text", False),
        ("text/plain", b"nul\x00inside", True),
    ],
)
def test_is_binary(content_type: str | None, sample: bytes, binary: bool) -> None:
    """Binary detection trusts a clear Content-Type, else looks at the bytes."""
    assert is_binary(content_type, sample) is binary


# -- the run's destinations are destination()'s ----------------------------------------------------


def test_destinations_agree_with_destination(tmp_path: Path) -> None:
    """Same path, or the same refusal, for plain names, odd names and names through symlinks."""
    out = tmp_path / "out"
    (out / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "link-out").symlink_to(tmp_path / "elsewhere")
    (out / "link-in").symlink_to(out / "sub")
    (out / "file-link").symlink_to(tmp_path / "secret")
    (out / "sub" / "back").symlink_to(out)
    names = [
        "a.txt",
        "sub/b.txt",
        "sub/deeper/c.txt",
        "new/dir/d.txt",
        "link-out/x",
        "link-in/x",
        "file-link",
        "sub/back/x",
        "sub/back",
        "../x",
        "a/../../x",
        "./a",
        "a//b",
        "sub/",
        "/etc/passwd",
        "",
        "tab\there",
        ".",
        "..",
        "sub/..",
    ]
    fast = Destinations(out)
    for name in names * 2:
        try:
            expected: object = destination(out, name)
        except UnsafePathError as exc:
            expected = str(exc)
        try:
            got: object = fast(name)
        except UnsafePathError as exc:
            got = str(exc)
        assert got == expected, name


# -- local names the OS refuses, folders left by failures ----------------------------------------


def test_post_local_name_the_os_refuses_is_one_line(
    origin: tuple[Server, Origin], work: Path
) -> None:
    """A POST whose local name is too long for the OS fails that command alone, in one line."""
    server, handler = origin
    handler.script("/ok.txt", (200, [], b"ok"))
    port = port_of(server)
    result = run(
        work,
        [f"POST {'a' * 300} 127.0.0.1 {port}", f"GET ok.txt 127.0.0.1 {port}"],
        *("--out", "out", "--no-print"),
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: POST /aaa")
    assert errors[0].endswith("File name too long")
    assert (work / "out" / "ok.txt").read_bytes() == b"ok"
    assert handler.requests_to("/" + "a" * 300) == []


def test_failed_nested_download_leaves_nothing_under_out(
    bad_server: Callable[..., BadServer], origin: tuple[Server, Origin], work: Path
) -> None:
    """A failed download removes the folders it created (deepest first), not the others'."""
    truncated = next(case for case in BROKEN if case.name == "truncated body")
    bad = bad_server(truncated.reply)
    server, handler = origin
    handler.script("/deep/ok.txt", (200, [], b"ok"))
    (work / "out" / "kept").mkdir(parents=True)
    result = run(
        work,
        [
            f"GET deep/er/a.txt 127.0.0.1 {bad.port}",
            f"GET kept/new/b.txt 127.0.0.1 {bad.port}",
            f"GET deep/ok.txt 127.0.0.1 {port_of(server)}",
            f"GET gone/c.txt 127.0.0.1 {bad.port}",
        ],
        *("--out", "out", "--no-cache", "--timeout", "2", "--no-print"),
    )
    assert result.exit_code == 1
    assert result.stderr.count("closed the connection mid-response") == 3
    left = sorted(str(p.relative_to(work / "out")) for p in (work / "out").rglob("*"))
    assert left == ["deep", "deep/ok.txt", "kept"]


def test_output_file_abort_removes_only_the_folders_it_created(tmp_path: Path) -> None:
    """Aborting removes the new empty folders, deepest first; existing or used ones stay."""
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    folders = CreatedFolders()
    used = OutputFile(out / "old" / "new" / "used.txt", folders=folders)
    failed = OutputFile(out / "old" / "new" / "deeper" / "f.txt", folders=folders)
    lone = OutputFile(out / "a" / "b" / "c.txt", folders=folders)
    used.write(b"kept")
    used.close()
    failed.abort()
    lone.abort()
    assert (out / "old" / "new" / "used.txt").read_bytes() == b"kept"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "old",
        "old/new",
        "old/new/used.txt",
    ]
    used.abort()  # after it was renamed into place: nothing happens
    assert (out / "old" / "new" / "used.txt").exists()
    # A folder name the system refuses: the folders made before it on the way go too.
    with pytest.raises(LocalFileError, match="File name too long"):
        OutputFile(out / "fresh" / ("x" * 300) / "f.txt", folders=folders)
    assert not (out / "fresh").exists()


def test_output_file_deferred_is_published_on_request(tmp_path: Path) -> None:
    """A deferred file stays in its temporary file after close until published."""
    target = tmp_path / "out" / "x.txt"
    file = OutputFile(target, deferred=True)
    file.write(b"body")
    file.close()
    assert not target.exists()
    file.publish()
    assert target.read_bytes() == b"body"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]
    with pytest.raises(LocalFileError, match="cannot write"):
        OutputFile(tmp_path / "out" / "x.txt" / "under-a-file")


# -- a hostile output folder -----------------------------------------------------------------------


def test_folder_swapped_for_a_symlink_mid_run_is_not_followed(
    origin: tuple[Server, Origin], tmp_path: Path, work: Path
) -> None:
    """A folder checked before the request and replaced by a symlink to elsewhere while the
    response is in flight: the body is refused, nothing lands outside --out."""
    server, handler = origin
    out = work / "out"
    (out / "sub").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def swap_then_answer(request: Request) -> Response:
        _swap_for_symlink(out / "sub", elsewhere)
        return Response(200, [], b"payload")

    handler.script("/sub/x.txt", swap_then_answer)
    handler.script("/ok.txt", (200, [], b"ok"))
    port = port_of(server)
    result = run(
        work,
        [f"GET sub/x.txt 127.0.0.1 {port}", f"GET ok.txt 127.0.0.1 {port}"],
        *("--out", "out", "--no-print", "--no-cache"),
    )
    assert result.exit_code == 1
    assert "it is no longer a folder (a symbolic link or a file took its place)" in result.stderr
    assert list(elsewhere.iterdir()) == []
    assert list((out / "sub-moved").iterdir()) == []
    assert (out / "ok.txt").read_bytes() == b"ok"


def _swap_for_symlink(folder: Path, target: Path) -> None:
    folder.rename(folder.with_name(folder.name + "-moved"))
    folder.symlink_to(target)


def test_out_swapped_for_a_symlink_mid_run_is_not_followed(
    origin: tuple[Server, Origin], tmp_path: Path, work: Path
) -> None:
    """--out itself is held open from the start of the run: replaced by a symlink while a
    response is in flight, the body still goes into the folder it was (now renamed)."""
    server, handler = origin
    out = work / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def swap_then_answer(request: Request) -> Response:
        _swap_for_symlink(out, elsewhere)
        return Response(200, [], b"payload")

    handler.script("/x.txt", swap_then_answer)
    result = run(
        work,
        [f"GET x.txt 127.0.0.1 {port_of(server)}"],
        *("--out", "out", "--no-print", "--no-cache"),
    )
    assert result.exit_code == 0, result.output
    assert list(elsewhere.iterdir()) == []
    assert (work / "out-moved" / "x.txt").read_bytes() == b"payload"


def test_out_created_by_a_failed_run_is_removed(
    bad_server: Callable[..., BadServer], work: Path
) -> None:
    """An output folder the run created for downloads that all failed is not left behind."""
    truncated = next(case for case in BROKEN if case.name == "truncated body")
    bad = bad_server(truncated.reply)
    result = run(
        work,
        [f"GET a/b.txt 127.0.0.1 {bad.port}"],
        *("--out", "new/out", "--no-cache", "--timeout", "2"),
    )
    assert result.exit_code == 1
    assert not (work / "new").exists()


def test_symlink_loops_fail_their_command_only(origin: tuple[Server, Origin], work: Path) -> None:
    """A loop of symlinks inside --out, or --out itself a loop, is one error line per command
    that would write there; the other commands run."""
    server, handler = origin
    handler.script("/ok.txt", (200, [], b"ok"))
    handler.script("/up.txt", (201, [], b""))
    port = port_of(server)
    (work / "out" / "loop").parent.mkdir()
    (work / "out" / "loop").symlink_to("loop")
    (work / "up.txt").write_bytes(b"up")
    result = run(
        work,
        [
            f"GET loop/x.txt 127.0.0.1 {port}",
            f"GET loop 127.0.0.1 {port}",
            f"GET ok.txt 127.0.0.1 {port}",
        ],
        *("--out", "out", "--no-print"),
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert all("Symlink loop" in line for line in errors)
    assert (work / "out" / "ok.txt").read_bytes() == b"ok"
    (work / "loop-out").symlink_to("loop-out")
    result = run(
        work,
        [f"GET ok.txt 127.0.0.1 {port}", f"POST up.txt 127.0.0.1 {port}"],
        *("--out", "loop-out", "--no-print"),
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    assert "error: GET /ok.txt" in result.stderr
    assert f"POST /up.txt 127.0.0.1:{port}: 201 Created" in result.stderr


def _part(folder: Path, name: str, age: float) -> Path:
    path = folder / f".{name}.{'a1b2c3d4'}0.part"
    path.write_bytes(b"partial")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_leftover_part_files_are_removed_at_start(
    origin: tuple[Server, Origin], work: Path
) -> None:
    """Temporary files of a killed run, old and unlocked, are removed from the folders the run
    writes to, and the run says so; recent or locked ones (a live run's) are kept."""
    server, handler = origin
    handler.script("/x.txt", (200, [], b"x"))
    out = work / "out"
    out.mkdir()
    stale = _part(out, "x.txt", STALE_TEMP_AGE + 60)
    recent = _part(out, "y.txt", 5)
    locked = _part(out, "z.txt", STALE_TEMP_AGE + 60)
    mine = out / ".notes.part"  # not a name the client gives
    mine.write_bytes(b"user file")
    os.utime(mine, (0, 0))
    with open(locked, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run(work, [f"GET x.txt 127.0.0.1 {port_of(server)}"], "--out", "out")
    assert result.exit_code == 0, result.output
    assert "removed 1 unfinished download (.part) of an interrupted run from out" in result.stderr
    assert not stale.exists()
    assert recent.exists() and locked.exists() and mine.exists()


def test_temporary_files_are_locked_while_written(tmp_path: Path) -> None:
    """Another process cannot take the file being written for a leftover: it is locked."""
    file = OutputFile(tmp_path / "out" / "x.txt")
    (temp,) = (tmp_path / "out").glob(".x.txt.*.part")
    with open(temp, "rb") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert remove_stale_temps(str(tmp_path / "out"), now=time.time() + 2 * STALE_TEMP_AGE) == 0
        file.write(b"x")
        file.close()
    assert (tmp_path / "out" / "x.txt").read_bytes() == b"x"


# -- several commands saving to one file -----------------------------------------------------------


def test_parallel_commands_with_one_file_name_print_their_own_bodies(
    origin: tuple[Server, Origin], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --parallel, each command prints its own body; the file left is the last command's."""
    server, handler = origin
    port = port_of(server)
    second_done = threading.Event()
    complete = BatchRun._complete

    def spy(self: BatchRun, index: int, outcome: CommandOutcome) -> None:
        complete(self, index, outcome)
        if index == 1:
            second_done.set()

    monkeypatch.setattr(BatchRun, "_complete", spy)

    def answer(request: Request) -> Response:
        if dict(request.headers).get("host", "").startswith("127.0.0.1"):
            # Answer the first command only once the second one has completed.
            assert second_done.wait(CLIENT_TIMEOUT)
            return Response(200, [], b"from 127.0.0.1\n")
        return Response(200, [], b"from localhost\n")

    handler.script("/same.txt", answer)
    result = run(
        work,
        [f"GET same.txt 127.0.0.1 {port}", f"GET same.txt localhost {port}"],
        *("--out", "out", "--no-cache", "--parallel", "2"),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "from 127.0.0.1\nfrom localhost\n"
    assert (work / "out" / "same.txt").read_bytes() == b"from localhost\n"
    assert [p.name for p in (work / "out").iterdir()] == ["same.txt"]


def test_commands_sharing_a_file_name_across_hosts_print_their_own_bodies(
    origin: tuple[Server, Origin], work: Path
) -> None:
    """Lanes run host by host, yet bodies print in command-file order and the last one stays."""
    server, handler = origin
    port = port_of(server)
    bodies = {"127.0.0.1": [b"one\n", b"three\n"], "localhost": [b"two\n"]}

    def answer(request: Request) -> Response:
        host = dict(request.headers)["host"].rsplit(":", 1)[0]
        return Response(200, [], bodies[host].pop(0))

    handler.script("/same.txt", answer)
    result = run(
        work,
        [
            f"GET same.txt 127.0.0.1 {port}",
            f"GET same.txt localhost {port}",
            f"GET same.txt 127.0.0.1 {port}",
        ],
        *("--out", "out", "--no-cache"),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "one\ntwo\nthree\n"
    assert (work / "out" / "same.txt").read_bytes() == b"three\n"
    assert [p.name for p in (work / "out").iterdir()] == ["same.txt"]


def test_a_failed_command_does_not_replace_a_shared_file(
    origin: tuple[Server, Origin], work: Path
) -> None:
    """The file left is the last successful command's: a failure replaces nothing."""
    server, handler = origin
    port = port_of(server)
    handler.script("/same.txt", (200, [], b"first\n"), (404, [], b"missing\n"))
    result = run(
        work,
        [f"GET same.txt 127.0.0.1 {port}", f"GET same.txt 127.0.0.1 {port}"],
        *("--out", "out", "--no-cache"),
    )
    assert result.exit_code == 1
    assert result.stdout == "first\n"
    assert (work / "out" / "same.txt").read_bytes() == b"first\n"


# -- a reader that goes away -----------------------------------------------------------------------


#: One connection per host without pipelining, so that commands run strictly one after the other.
ONE = ("--connections", "1", "--pipeline", "1")


def test_closed_stdout_stops_the_run_quietly(origin: tuple[Server, Origin], work: Path) -> None:
    """Once stdout's reader is gone (``| head``) the run stops: no warning, no traceback, exit 1."""
    server, handler = origin
    port = port_of(server)
    pipe_closed = threading.Event()

    def after_close(_request: Request) -> Response:
        assert pipe_closed.wait(CLIENT_TIMEOUT)
        return Response(200, [], b"second\n")

    handler.script("/first.txt", (200, [], b"first\n"))
    handler.script("/second.txt", after_close)
    handler.script("/later.txt", (200, [], b"later\n"))
    names = ["first.txt", "second.txt", *(["later.txt"] * 8)]
    (work / "commands.txt").write_text("".join(f"GET {name} 127.0.0.1 {port}\n" for name in names))
    script = Path(sys.executable).parent / "webclient"
    proc = subprocess.Popen(
        # One connection: with several, later commands are fetched while the first print waits.
        [script, "batch", "commands.txt", "--no-cache", "--out", "out", "--timeout", "5", *ONE],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"first\n"
        proc.stdout.close()  # the reader is gone, as when head has its lines
        pipe_closed.set()
        stderr = proc.stderr.read().decode()
        assert proc.wait(CLIENT_TIMEOUT) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert "Traceback" not in stderr and "Exception" not in stderr
    assert "warning" not in stderr and "summary" not in stderr
    assert stderr.startswith("GET /first.txt")
    # The run stopped: of the eight later commands, at most the one already queued was sent.
    assert len(handler.requests_to("/later.txt")) <= 1
