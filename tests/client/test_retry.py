"""Tests of webclient/_retry.py and the rounds that retry (webclient/_rounds.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from webclient import (
    CertificateError,
    Client,
    ClientConfig,
    ConnectionClosed,
    ConnectionRefused,
    ReadTimeout,
    ResolveError,
    WebClientError,
)
from webclient._retry import retry_after, retryable_error, wait_before_retry
from webclient._shared.httpdate import format_http_date
from webserver import Server

from .conftest import CLIENT_TIMEOUT, BadServer, FakeClock, Origin

pytestmark = pytest.mark.timeout(30)

Where = tuple[Server, Origin]


def _client(
    tmp_path: Path, waits: list[float], clock: FakeClock | None = None, **settings: object
) -> Client:
    settings.setdefault("retry_base_delay", 0.001)
    config = ClientConfig(cache_dir=tmp_path / "cache", timeout=CLIENT_TIMEOUT, **settings)  # type: ignore[arg-type]
    return Client(config, clock=clock or FakeClock(), sleep=waits.append)


# -- the rules ----------------------------------------------------------------------------------


def test_retry_after_in_seconds_or_as_a_date() -> None:
    """Retry-After is delay-seconds or an HTTP-date (a past date means now); else ignored."""
    now = 1_700_000_000.0
    assert retry_after([("retry-after", "120")], now) == 120.0
    assert retry_after([("retry-after", format_http_date(now + 30))], now) == 30.0
    assert retry_after([("retry-after", format_http_date(now - 30))], now) == 0.0
    for bad in ("soon", "-1", "1.5", ""):
        assert retry_after([("retry-after", bad)], now) is None
    assert retry_after([], now) is None


def test_retry_after_with_non_ascii_digits_is_ignored() -> None:
    """A Retry-After of digits other than 0-9 (U+00B2 from a latin-1 byte) is invalid, so
    ignored, not a ValueError out of the run; two Retry-After fields are invalid too."""
    for bad in ("\xb2", "1\xb9", "\u0661\u0662"):
        assert retry_after([("retry-after", bad)], 0.0) is None
    assert retry_after([("retry-after", "5"), ("retry-after", "7")], 0.0) is None


def test_a_retry_after_of_latin1_digits_gets_the_503_back(
    bad_server: Callable[..., BadServer], tmp_path: Path
) -> None:
    """A 503 with ``Retry-After: \\xb2`` is retried with backoff and ends as the 503."""
    server = bad_server(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
    waits: list[float] = []
    with _client(tmp_path, waits, retries=1) as client:
        response = client.get(server.url)
    assert response.status == 503 and len(waits) == 1


def test_which_failures_are_retried() -> None:
    """Connection failures of GET/HEAD are retried; DNS failures, read timeouts, untrusted
    certificates and POSTs not."""
    assert retryable_error("GET", ConnectionRefused("x"))
    assert retryable_error("HEAD", ConnectionClosed("x"))
    assert not retryable_error("POST", ConnectionRefused("x"))
    assert not retryable_error("GET", ResolveError("x"))
    assert not retryable_error("GET", ReadTimeout("x"))
    assert not retryable_error("GET", WebClientError("x"))
    assert not retryable_error("GET", CertificateError("x"))


def test_backoff_has_full_jitter_within_the_budget() -> None:
    """The wait is drawn from [0, base * 2**n], capped by what is left; Retry-After is exact
    and refused when it does not fit."""
    widest = lambda low, high: high  # noqa: E731 - the top of the draw
    assert wait_before_retry(0, asked=None, base=0.5, left=30, uniform=widest) == 0.5
    assert wait_before_retry(3, asked=None, base=0.5, left=30, uniform=widest) == 4.0
    assert wait_before_retry(10, asked=None, base=0.5, left=3, uniform=widest) == 3
    assert wait_before_retry(0, asked=None, base=0.5, left=0, uniform=widest) is None
    assert wait_before_retry(0, asked=7, base=0.5, left=30, uniform=widest) == 7
    assert wait_before_retry(0, asked=31, base=0.5, left=30, uniform=widest) is None


# -- against a server ---------------------------------------------------------------------------


def test_a_503_twice_then_200(origin: Where, tmp_path: Path) -> None:
    """A GET answered 503 twice is retried and gets the 200, with a backoff wait before each."""
    server, handler = origin
    handler.script("/x", (503, [], b"busy"), (503, [], b"busy"), (200, [], b"done"))
    waits: list[float] = []
    with _client(tmp_path, waits) as client:
        response = client.get(server.url + "x")
    assert (response.status, response.body) == (200, b"done")
    assert len(handler.requests_to("/x")) == 3
    assert len(waits) == 2 and 0 <= waits[0] <= 0.001 and 0 <= waits[1] <= 0.002


def test_retries_stop_at_the_limit(origin: Where, tmp_path: Path) -> None:
    """With retries=1 the second 503 is the answer; with retries=0 the first."""
    server, handler = origin
    handler.script("/x", (503, [], b"busy"))
    for retries in (1, 0):
        waits: list[float] = []
        with _client(tmp_path, waits, retries=retries) as client:
            assert client.get(server.url + "x").status == 503
        assert len(waits) == retries
    assert len(handler.requests_to("/x")) == 2 + 1


def test_retry_after_is_honoured(origin: Where, tmp_path: Path) -> None:
    """429 with Retry-After: 2 waits exactly 2 s (an HTTP-date is read with the client's clock)."""
    server, handler = origin
    clock = FakeClock()
    date = format_http_date(int(clock.now) + 5)
    handler.script(
        "/x",
        (429, [("Retry-After", "2")], b""),
        (503, [("Retry-After", date)], b""),
        (200, [], b"ok"),
    )
    waits: list[float] = []
    with _client(tmp_path, waits, clock) as client:
        assert client.get(server.url + "x").body == b"ok"
    assert waits[0] == 2.0 and 4.0 <= waits[1] <= 5.0


def test_a_retry_after_beyond_the_cap_is_not_waited(origin: Where, tmp_path: Path) -> None:
    """A Retry-After longer than what is left of retry_max_wait ends the retries at once."""
    server, handler = origin
    handler.script("/x", (503, [("Retry-After", "3600")], b"later"))
    waits: list[float] = []
    with _client(tmp_path, waits, retry_max_wait=30) as client:
        response = client.get(server.url + "x")
    assert response.status == 503 and response.body == b"later" and waits == []


def test_total_wait_is_capped(origin: Where, tmp_path: Path) -> None:
    """The waits of one call add up to at most retry_max_wait."""
    server, handler = origin
    handler.script("/x", (503, [("Retry-After", "4")], b""))
    waits: list[float] = []
    with _client(tmp_path, waits, retries=10, retry_max_wait=10) as client:
        assert client.get(server.url + "x").status == 503
    assert waits == [4.0, 4.0]


def test_post_is_never_retried(origin: Where, tmp_path: Path) -> None:
    """A POST answered 503 is not sent again."""
    server, handler = origin
    handler.script("/up", (503, [], b""))
    waits: list[float] = []
    with _client(tmp_path, waits) as client:
        assert client.post(server.url + "up", b"data").status == 503
    assert len(handler.requests_to("/up")) == 1 and waits == []


def test_a_refused_connection_is_retried(refused_port: int, tmp_path: Path) -> None:
    """Connection refused: retried with backoff, then the error."""
    waits: list[float] = []
    with _client(tmp_path, waits) as client, pytest.raises(ConnectionRefused):
        client.get(f"http://127.0.0.1:{refused_port}/x")
    assert len(waits) == 2


def test_the_real_wait_is_short_with_a_small_base(origin: Where, tmp_path: Path) -> None:
    """With the real sleep, a tiny base delay keeps retries fast (no fixed second-long waits)."""
    server, handler = origin
    handler.script("/x", (503, [], b""), (200, [], b"ok"))
    config = ClientConfig(cache_dir=tmp_path / "c", timeout=CLIENT_TIMEOUT, retry_base_delay=0.01)
    started = time.monotonic()
    with Client(config) as client:
        assert client.get(server.url + "x").body == b"ok"
    assert time.monotonic() - started < 2
