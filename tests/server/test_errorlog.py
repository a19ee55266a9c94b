"""Bounded error-log entries: tracebacks cut, repeats in a second counted, installed at start."""

from __future__ import annotations

import http.client
import logging

import pytest

from webserver import Server
from webserver._errorlog import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    BoundedErrorLog,
    bound_error_log,
)
from webserver.handler import Handler
from webserver.request import Request
from webserver.response import Response
from webserver.testing import running_server

from .conftest import NET_TIMEOUT

#: Room for the "[... N characters cut ...]" line and the repeat note.
SLACK = 200


def deep_recursion_error() -> RecursionError:
    """A real RecursionError raised while handling 300 chained errors (as ``Path.mkdir`` did),
    whose traceback formats to far more than the bound."""

    def down(n: int) -> None:
        try:
            raise FileNotFoundError(f"level {n}")
        except FileNotFoundError as exc:
            if n >= 300:
                raise RecursionError("maximum recursion depth exceeded") from exc
            down(n + 1)

    try:
        down(0)
    except RecursionError as exc:
        return exc
    raise AssertionError("no RecursionError")  # pragma: no cover


def record_for(
    logger: logging.Logger, exc: BaseException, msg: str = "failed"
) -> logging.LogRecord:
    return logger.makeRecord(
        logger.name, logging.ERROR, __file__, 1, msg, (), (type(exc), exc, None)
    )


def test_traceback_is_cut_to_a_few_kib() -> None:
    """A recursion error's traceback (hundreds of KiB) is cut to MAX_TRACEBACK_CHARS, keeping its
    start and its last line, which says what failed."""
    exc = deep_recursion_error()
    record = record_for(logging.getLogger("t"), exc)
    record.exc_info = (type(exc), exc, exc.__traceback__)
    assert BoundedErrorLog().filter(record)
    assert record.exc_text is not None
    assert len(record.exc_text) <= MAX_TRACEBACK_CHARS + SLACK
    assert record.exc_text.startswith("Traceback")
    assert "characters cut" in record.exc_text
    assert record.exc_text.rstrip().endswith("maximum recursion depth exceeded")
    assert (
        len(logging.Formatter().format(record)) <= MAX_MESSAGE_CHARS + MAX_TRACEBACK_CHARS + SLACK
    )


def test_long_message_is_cut() -> None:
    """A message longer than MAX_MESSAGE_CHARS is cut with a note."""
    record = logging.getLogger("t").makeRecord(
        "t", logging.ERROR, __file__, 1, "%s", ("x" * 100_000,), None
    )
    assert BoundedErrorLog().filter(record)
    assert len(record.getMessage()) <= MAX_MESSAGE_CHARS + SLACK
    assert "characters cut" in record.getMessage()


def test_repeats_within_a_second_are_one_entry_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same error logged 50 times at once is one entry; the count is logged on release."""
    logger = logging.getLogger("webserver.test-errorlog")
    release = bound_error_log(logger)
    exc = ValueError("same")
    with caplog.at_level(logging.ERROR, logger=logger.name):
        try:
            for _ in range(50):
                logger.error("handler failed", exc_info=exc)
            logger.error("another failure")
        finally:
            release()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "handler failed",
        "another failure",
        "handler failed [repeated 49 times within 1 s, not logged]",
    ]
    assert logger.filters == []


def test_repeat_after_the_window_is_logged_with_the_count() -> None:
    """An error seen again after the window is logged, saying how many repeats were dropped."""
    bounded = BoundedErrorLog()
    logger = logging.getLogger("t")
    exc = ValueError("same")
    first, second, later = (record_for(logger, exc) for _ in range(3))
    second.created = first.created + 0.5
    later.created = first.created + 1.5
    assert [bounded.filter(r) for r in (first, second, later)] == [True, False, True]
    assert (
        later.getMessage()
        == "failed [repeated 1 time within 1 s, not logged, after its previous entry]"
    )


class Explodes(Handler):
    """A handler whose failure has a traceback of a deep recursion."""

    def get(self, request: Request) -> Response:
        raise deep_recursion_error()


def test_server_bounds_its_error_log(caplog: pytest.LogCaptureFixture) -> None:
    """While a server runs, a failing handler's entry in webserver.error is bounded and three
    failures in a row are one entry."""
    server = Server(default_routes=False, port=0, access_log=False)
    server.route("/boom", Explodes())
    with caplog.at_level(logging.ERROR, logger="webserver.error"), running_server(server=server):
        statuses = [get_boom(server) for _ in range(3)]
    assert statuses == [500, 500, 500]
    entries = [r for r in caplog.records if r.name == "webserver.error" and r.exc_text]
    assert len(entries) == 1
    assert entries[0].exc_text is not None
    assert len(entries[0].exc_text) <= MAX_TRACEBACK_CHARS + SLACK


def get_boom(server: Server) -> int:
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request("GET", "/boom")
        return conn.getresponse().status
    finally:
        conn.close()
