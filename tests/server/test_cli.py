"""The ``webserver`` command, run as a real process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from webserver.cli import main

from .conftest import NET_TIMEOUT, http_get, serving_process, webserver_process
from .conftest import SERVING as SERVING_ONE


def test_port_zero_prints_real_port_and_serves(www: Path) -> None:
    """--port 0 picks a free port, announced on the first stdout line with the absolute root."""
    with webserver_process("--port", "0", "--root", str(www), "--no-access-log") as (_, match):
        assert match["root"] == str(www.resolve())
        port = int(match["port"])
        assert port > 0
        assert http_get(port, "/hello.txt") == (200, b"hello, world\n")


def test_sigterm_stops_gracefully_with_status_0(www: Path) -> None:
    """SIGTERM stops the server; it exits 0."""
    with webserver_process("--port", "0", "--root", str(www)) as (proc, match):
        assert http_get(int(match["port"]), "/hello.txt")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(NET_TIMEOUT) == 0


def test_sigint_stops_with_status_0(www: Path) -> None:
    """Ctrl-C (SIGINT) stops the server; it exits 0 without a traceback."""
    with webserver_process("--port", "0", "--root", str(www)) as (proc, _):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(NET_TIMEOUT) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


def test_access_log_to_file(www: Path, tmp_path: Path) -> None:
    """--access-log FILE gets one Common Log Format line per response."""
    log = tmp_path / "access.log"
    with webserver_process("--port", "0", "--root", str(www), "--access-log", str(log)) as (
        proc,
        match,
    ):
        http_get(int(match["port"]), "/hello.txt")
        http_get(int(match["port"]), "/nope")
        proc.send_signal(signal.SIGTERM)
        proc.wait(NET_TIMEOUT)
    # One line each; a line is written once its response is sent, so the order may vary.
    lines = sorted(line.split('"', 1)[1] for line in log.read_text().splitlines())
    assert lines == ['GET /hello.txt HTTP/1.1" 200 13', 'GET /nope HTTP/1.1" 404 14']


def test_access_log_on_stderr_by_default(www: Path) -> None:
    """Without options the access log goes to stderr."""
    with webserver_process("--port", "0", "--root", str(www)) as (proc, match):
        http_get(int(match["port"]), "/hello.txt")
        proc.send_signal(signal.SIGTERM)
        proc.wait(NET_TIMEOUT)
        assert proc.stderr is not None
        assert '"GET /hello.txt HTTP/1.1" 200 13' in proc.stderr.read()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webserver", *args],
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT,
        check=False,
    )


def test_missing_root_is_one_line_exit_2(tmp_path: Path) -> None:
    """A missing root: one Error line, exit status 2, no traceback."""
    result = run_cli("run", "--port", "0", "--root", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: root folder does not exist: {tmp_path / 'missing'}"


def test_port_in_use_is_one_line_exit_2(www: Path) -> None:
    """A port already in use: one Error line naming it, exit status 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--port", str(port), "--root", str(www))
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: port {port} on 127.0.0.1 is already in use"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "70000 is not in the range 0<=x<=65535"),
        (["--threads", "0"], "0 is not in the range 1<=x<=1024"),
        (["--max-upload", "lots"], "not a size: 'lots'"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_options_exit_2(www: Path, args: list[str], message: str) -> None:
    """Bad option values are reported by name with exit status 2, in one Error line (no usage
    block above it), as the server's own start-up errors are."""
    result = CliRunner().invoke(main, ["run", "--root", str(www), *args])
    assert result.exit_code == 2
    assert message in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ")


def test_help_explains_every_option() -> None:
    """--help describes each option of run."""
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--root",
        "--threads",
        "--max-upload",
        "--access-log",
        "--no-access-log",
        "--keep-alive-timeout",
        "--grace-period",
        "--no-listing",
        "--show-hidden",
        "--read-only",
        "--no-compress",
        "-p, --port",
        "-b, --bind",
        "-d, --root, --directory",
    ):
        assert option in result.output
    assert "0 picks a free one" in result.output


def test_console_script_installed() -> None:
    """The 'webserver' console script exists beside this Python and answers --version."""
    script = Path(sys.executable).with_name("webserver")
    if not script.exists():
        pytest.skip(f"package not installed with scripts next to {sys.executable}")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=NET_TIMEOUT, check=False
    )
    assert result.returncode == 0 and "webserver, version" in result.stdout


def children(pid: int) -> set[int]:
    """The child processes of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        pytest.skip("/proc/PID/task/PID/children is not available here")
    return {int(child) for child in path.read_text().split()}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition about another process, bounded in time."""
    deadline = time.monotonic() + NET_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        threading.Event().wait(0.02)


def test_workers_share_the_port_and_are_restarted(www: Path) -> None:
    """--workers 2 runs two processes; one killed is replaced; SIGTERM stops all, exit 0."""
    with webserver_process(
        "--port", "0", "--root", str(www), "--workers", "2", "--no-access-log"
    ) as (proc, match):
        port = int(match["port"])
        wait_for(lambda: len(children(proc.pid)) == 2, "two workers")
        first = children(proc.pid)
        for _ in range(10):
            assert http_get(port, "/hello.txt") == (200, b"hello, world\n")
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid),
            "a replacement worker",
        )
        for _ in range(10):
            assert http_get(port, "/hello.txt") == (200, b"hello, world\n")
        workers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(NET_TIMEOUT) == 0
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_threads_help_says_handlers_at_once() -> None:
    """--threads is described as handlers running at once, --max-queue as requests ready to
    run."""
    result = CliRunner().invoke(main, ["run", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "Handlers running at once" in text
    assert "Requests ready to run" in text


def test_max_connections_above_the_open_files_limit_is_reported(www: Path) -> None:
    """The server raises its open-files limit to the hard one and says so on stderr when
    --max-connections still exceeds it; it serves anyway."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    args = ("--port", "0", "--root", str(www), "--no-access-log", "--max-connections")
    with webserver_process(*args, str(hard * 2)) as (proc, match):
        assert http_get(int(match["port"]), "/hello.txt")[0] == 200
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft_line = next(line for line in limits.splitlines() if "open files" in line)
        assert soft_line.split()[3] == str(hard)  # soft raised to the hard limit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(NET_TIMEOUT) == 0
        assert proc.stderr is not None
        assert f"open-files limit is {hard}" in proc.stderr.read()


def test_short_options_like_http_server(www: Path) -> None:
    """-p, -b and -d set the port, the address and the root, as http.server's do."""
    with webserver_process("-p", "0", "-b", "127.0.0.1", "-d", str(www), "--no-access-log") as (
        _,
        match,
    ):
        assert (match["root"], match["host"]) == (str(www.resolve()), "127.0.0.1")
        assert http_get(int(match["port"]), "/hello.txt") == (200, b"hello, world\n")


def test_port_as_the_argument(www: Path) -> None:
    """`webserver run 0` takes the argument as the port."""
    with webserver_process("0", "--root", str(www), "--no-access-log") as (_, match):
        assert http_get(int(match["port"]), "/hello.txt")[0] == 200


def test_two_different_ports_exit_2(www: Path) -> None:
    """A port argument contradicting --port is one error line with exit status 2."""
    result = CliRunner().invoke(main, ["run", "8000", "--port", "9000", "--root", str(www)])
    assert result.exit_code == 2
    assert "two ports given: 8000 and --port 9000" in result.output


@pytest.mark.parametrize("listing", [True, False])
def test_hint_when_the_first_page_would_be_404(tmp_path: Path, listing: bool) -> None:
    """With listings off and no index.html, the second stdout line says why / is 404; with
    listings on, / is a listing and there is no hint."""
    args = ["--port", "0", "--root", str(tmp_path), "--no-access-log"]
    if not listing:
        args.append("--no-listing")
    with webserver_process(*args) as (proc, match):
        status = http_get(int(match["port"]), "/")[0]
        proc.send_signal(signal.SIGTERM)
        proc.wait(NET_TIMEOUT)
        assert proc.stdout is not None
        rest = proc.stdout.read()
    if listing:
        assert (status, rest) == (200, "")
    else:
        assert status == 404
        assert rest.startswith(f"Note: {tmp_path.resolve()} has no index.html and listings are off")


def test_show_hidden_option(www: Path) -> None:
    """--show-hidden serves dot-files, which are 404 without it."""
    (www / ".env").write_bytes(b"K=1\n")
    with webserver_process("--port", "0", "--root", str(www), "--no-access-log") as (_, match):
        assert http_get(int(match["port"]), "/.env")[0] == 404
    with webserver_process(
        "--port", "0", "--root", str(www), "--no-access-log", "--show-hidden"
    ) as (_, match):
        assert http_get(int(match["port"]), "/.env") == (200, b"K=1\n")


def test_no_compress_option(www: Path) -> None:
    """A text file is gzipped for a client that accepts gzip; with --no-compress it goes out as
    it is, while a precompressed sibling is still sent."""
    page = b"function f() { return 1; }\n" * 200
    (www / "app.js").write_bytes(page)
    (www / "site.css").write_bytes(b"p { color: red }\n" * 100)
    (www / "site.css.gz").write_bytes(b"gzipped by hand")

    def encodings(port: int) -> list[tuple[str | None, bytes]]:
        found = []
        for path in ("/app.js", "/site.css"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
            try:
                conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
                response = conn.getresponse()
                found.append((response.getheader("Content-Encoding"), response.read()))
            finally:
                conn.close()
        return found

    base = ("--port", "0", "--root", str(www), "--no-access-log")
    with webserver_process(*base) as (_, match):
        (coding, _), sibling = encodings(int(match["port"]))
    assert coding == "gzip"
    with webserver_process(*base, "--no-compress") as (_, match):
        assert encodings(int(match["port"])) == [(None, page), sibling]
    assert sibling == ("gzip", b"gzipped by hand")


def test_read_only_option(www: Path) -> None:
    """--read-only answers POST and PUT with 405 and Allow, and stores nothing; GET serves."""
    args = ("--port", "0", "--root", str(www), "--no-access-log", "--read-only")
    with webserver_process(*args) as (_, match):
        port = int(match["port"])
        for method in ("POST", "PUT"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
            try:
                conn.request(method, "/new.txt", b"x")
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            assert (response.status, response.getheader("Allow")) == (405, "GET, HEAD, OPTIONS")
        assert http_get(port, "/hello.txt")[0] == 200
    assert not (www / "new.txt").exists()


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_access_log_format(www: Path, tmp_path: Path, fmt: str) -> None:
    """--access-log-format combined/json logs the Referer and User-Agent of each request,
    from plain GETs and from requests h11 parses alike."""
    log = tmp_path / "access.log"
    args = ["--port", "0", "--root", str(www), "--access-log", str(log)]
    with webserver_process(*args, "--access-log-format", fmt) as (proc, match):
        for method in ("GET", "POST"):
            conn = http.client.HTTPConnection("127.0.0.1", int(match["port"]), timeout=NET_TIMEOUT)
            headers = {"Referer": "http://r/", "User-Agent": "agent/1"}
            conn.request(method, "/up.txt" if method == "POST" else "/hello.txt", b"x", headers)
            conn.getresponse().read()
            conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(NET_TIMEOUT)
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        if fmt == "json":
            data = json.loads(line)
            assert (data["referer"], data["user_agent"]) == ("http://r/", "agent/1")
        else:
            assert line.endswith('"http://r/" "agent/1"')


# -- listening: several addresses, systemd socket activation -----------------------------------


@contextlib.contextmanager
def started(
    *args: str, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = ()
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``ARGS`` (a ``webserver run`` command line), wait for its first stdout line, and
    yield the process and the line; stop it with SIGTERM at the end, which must exit 0."""
    with serving_process(list(args), env=env, pass_fds=pass_fds) as (proc, line):
        yield proc, line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(NET_TIMEOUT) == 0


def activated(listener: socket.socket, *args: str, pid: str | None = None) -> list[str]:
    """A command line that starts ``webserver run ARGS`` as systemd would on socket activation:
    ``listener`` as descriptor 3, LISTEN_FDS=1 and LISTEN_PID naming the server's own process
    (kept by ``exec``), unless ``pid`` says otherwise."""
    launcher = (
        "import os, sys\n"
        f"os.dup2({listener.fileno()}, 3)\n"
        f"os.close({listener.fileno()})\n"
        f"os.environ['LISTEN_PID'] = {pid!r} or str(os.getpid())\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'webserver', 'run', *sys.argv[1:]])\n"
    )
    return [sys.executable, "-c", launcher, *args]


def get_unix(path: Path, target: str) -> bytes:
    """GET ``target`` over the Unix socket at ``path`` with real curl (--unix-socket)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [curl, "--silent", "--show-error", "--max-time", str(NET_TIMEOUT), "--unix-socket",
         str(path), f"http://localhost{target}"],
        capture_output=True,
        timeout=NET_TIMEOUT * 2,
        check=True,
    )  # fmt: skip
    return done.stdout


def ipv6_loopback() -> None:
    """Skip unless this machine can listen on ::1."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")


def test_first_line_names_every_address(www: Path, tmp_path: Path) -> None:
    """With IPv4, [::1] and unix: binds, the first stdout line names each address in order, and
    each answers (the Unix socket to real curl --unix-socket); the socket file goes at the stop."""
    ipv6_loopback()
    path = tmp_path / "web.sock"
    command = [sys.executable, "-m", "webserver", "run", "--root", str(www), "--no-access-log"]
    binds = ["--bind", "127.0.0.1:0", "--bind", "[::1]:0", "--bind", f"unix:{path}"]
    with started(*command, *binds) as (_, line):
        match = re.fullmatch(
            rf"Serving {re.escape(str(www.resolve()))} on http://127\.0\.0\.1:(\d+)/,"
            rf" http://\[::1\]:(\d+)/, unix:{re.escape(str(path))}",
            line,
        )
        assert match, line
        assert http_get(int(match[1]), "/hello.txt") == (200, b"hello, world\n")
        v6 = http.client.HTTPConnection("::1", int(match[2]), timeout=NET_TIMEOUT)
        v6.request("GET", "/hello.txt")
        assert v6.getresponse().read() == b"hello, world\n"
        v6.close()
        assert get_unix(path, "/hello.txt") == b"hello, world\n"
    assert not path.exists()


def test_socket_activation_serves_on_the_passed_socket(www: Path) -> None:
    """Given a listening socket as descriptor 3 with LISTEN_FDS/LISTEN_PID (systemd socket
    activation), the server serves on it instead of --port, and names its address."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        command = activated(listener, "--root", str(www), "--port", "1", "--no-access-log")
        with started(*command, pass_fds=(listener.fileno(),)) as (_, line):
            assert line == f"Serving {www.resolve()} on http://127.0.0.1:{port}/"
            assert http_get(port, "/hello.txt") == (200, b"hello, world\n")


def test_socket_activation_keeps_systemds_unix_socket(www: Path, tmp_path: Path) -> None:
    """A passed Unix socket is served (real curl --unix-socket) and its file is left in place
    at the stop: it belongs to systemd, which keeps listening on it."""
    path = tmp_path / "activated.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        command = activated(listener, "--root", str(www), "--no-access-log")
        with started(*command, pass_fds=(listener.fileno(),)) as (_, line):
            assert line == f"Serving {www.resolve()} on unix:{path}"
            assert get_unix(path, "/hello.txt") == b"hello, world\n"
        assert path.is_socket()


def test_socket_activation_for_another_process_is_ignored(www: Path) -> None:
    """LISTEN_FDS meant for another process (LISTEN_PID differs) is not taken: the server
    listens on its own --port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        command = activated(listener, "--root", str(www), "--port", "0", pid="1")
        with started(*command, pass_fds=(listener.fileno(),)) as (_, line):
            match = SERVING_ONE.match(line)
            assert match and int(match["port"]) != listener.getsockname()[1], line
            assert http_get(int(match["port"]), "/hello.txt")[0] == 200
