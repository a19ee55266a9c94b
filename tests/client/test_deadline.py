"""Tests of webclient/_deadline.py: max_time and the minimum rate, by a clock and by a server
that drips its response."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from webclient import Client, ClientConfig, ReadTimeout, ResponseTimeout
from webclient._deadline import ResponseDeadline
from webclient.cli import main

pytestmark = pytest.mark.timeout(30)


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the rules, by the clock --------------------------------------------------------------------


def test_a_body_under_the_minimum_rate_is_cut() -> None:
    """1 byte every 2 s passes each 30 s read timeout, but is under 1 byte/s over 30 s."""
    ticks = Ticks()
    deadline = ResponseDeadline(window=30, min_rate=1.0, now=ticks)
    deadline.begin(buffered=False)
    deadline.received(1, "h")
    for _ in range(14):
        ticks.now += 2
        deadline.received(1, "h")
    ticks.now += 2  # the first window closes with 16 bytes in 30 s
    with pytest.raises(ResponseTimeout, match="too slowly"):
        deadline.received(1, "h")


def test_a_drip_just_under_the_window_is_cut_with_a_short_timeout() -> None:
    """1 byte every 1.9 s with a 2 s timeout (0.53 byte/s) is cut: the rate is measured over the
    time the window really lasted, not over its nominal length."""
    ticks = Ticks()
    deadline = ResponseDeadline(window=2, min_rate=1.0, now=ticks)
    deadline.begin(buffered=False)
    deadline.received(1, "h")
    ticks.now += 1.9
    deadline.received(1, "h")
    ticks.now += 1.9  # the window closes after 3.8 s with 3 bytes
    with pytest.raises(ResponseTimeout, match="too slowly"):
        deadline.received(1, "h")


def test_a_steady_body_is_not_cut() -> None:
    """1 byte every 0.5 s (2 byte/s) goes on for ever: each window is measured anew."""
    ticks = Ticks()
    deadline = ResponseDeadline(window=5, min_rate=1.0, now=ticks)
    deadline.begin(buffered=False)
    for _ in range(1000):
        ticks.now += 0.5
        deadline.received(1, "h")


def test_max_time_counts_from_the_first_byte() -> None:
    """Waiting for the first byte does not count; the reads after it get what is left."""
    ticks = Ticks()
    deadline = ResponseDeadline(window=30, min_rate=1.0, max_time=10, now=ticks)
    deadline.begin(buffered=False)
    ticks.now += 50  # the server thinks
    assert deadline.read_timeout(30, "h") == 30
    deadline.received(1000, "h")
    ticks.now += 4
    assert deadline.read_timeout(30, "h") == 6
    ticks.now += 7
    assert deadline.expired()
    with pytest.raises(ResponseTimeout, match="more than 10 s"):
        deadline.received(1000, "h")


def test_buffered_bytes_start_the_clock() -> None:
    """A pipelined response already received starts its clock when its reading begins."""
    ticks = Ticks()
    deadline = ResponseDeadline(window=30, min_rate=1.0, max_time=10, now=ticks)
    deadline.begin(buffered=True)
    ticks.now += 10
    with pytest.raises(ResponseTimeout):
        deadline.read_timeout(30, "h")


# -- against a dripping server ------------------------------------------------------------------


@contextlib.contextmanager
def dripping(body_size: int, *, pause: float, every: float) -> Iterator[int]:
    """A server that waits ``pause`` s, sends a head, then one body byte every ``every`` s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                stop.wait(pause)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % body_size)
                for _ in range(body_size):
                    if stop.wait(every):
                        return
                    conn.sendall(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _client(tmp_path: Path, **settings: object) -> Client:
    config = ClientConfig(use_cache=False, retries=0, **settings)  # type: ignore[arg-type]
    return Client(config)


def test_max_time_cuts_a_dripping_body(tmp_path: Path) -> None:
    """With max_time 0.3 s, a body dripped at 20 byte/s is cut soon after 0.3 s."""
    with (
        dripping(1000, pause=0, every=0.05) as port,
        _client(tmp_path, timeout=5, max_time=0.3) as c,
    ):
        started = time.monotonic()
        with pytest.raises(ResponseTimeout, match=r"more than 0\.3 s"):
            c.get(f"http://127.0.0.1:{port}/")
        assert time.monotonic() - started < 2


def test_max_time_does_not_count_the_wait_for_the_answer(tmp_path: Path) -> None:
    """A server that thinks 0.5 s and then answers at once is within max_time 0.3 s."""
    with dripping(3, pause=0.5, every=0) as port, _client(tmp_path, timeout=5, max_time=0.3) as c:
        assert c.get(f"http://127.0.0.1:{port}/").body == b"xxx"


def test_the_minimum_rate_cuts_a_dripping_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without max_time, a body slower than the minimum rate over a read timeout is cut
    (the rate raised to 100 byte/s here so the test takes a fraction of a second)."""
    monkeypatch.setattr("webclient._origin.MIN_RATE", 100.0)
    with dripping(1000, pause=0, every=0.02) as port, _client(tmp_path, timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(ResponseTimeout, match="too slowly"):
            c.get(f"http://127.0.0.1:{port}/")
        assert time.monotonic() - started < 2


def test_a_response_timeout_is_a_read_timeout() -> None:
    """Callers that catch ReadTimeout also catch the new deadline errors."""
    assert issubclass(ResponseTimeout, ReadTimeout)


def test_batch_max_time_fails_the_command_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webclient batch --max-time: a dripped body fails its command with one line, no file."""
    monkeypatch.chdir(tmp_path)
    with dripping(1000, pause=0, every=0.05) as port:
        (tmp_path / "cmds.txt").write_text(f"GET slow.bin 127.0.0.1 {port}\n")
        args = ["batch", "cmds.txt", "--no-cache", "--no-print", "-q", "--max-time", "0.3"]
        args += ["--retries", "0", "--timeout", "5"]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: GET /slow.bin 127.0.0.1:{port}: the response from 127.0.0.1:{port} took more"
        " than 0.3 s (max_time); it was cut off\n"
    )
    assert not (tmp_path / "slow.bin").exists()
