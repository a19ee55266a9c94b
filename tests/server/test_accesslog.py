"""Common Log Format lines."""

from __future__ import annotations

import re

from webserver.accesslog import escape, format_access_line


def test_clf_shape() -> None:
    """host - - [date] "request" status size, with '-' for an empty body."""
    line = format_access_line("127.0.0.1", "GET / HTTP/1.1", 304, 0, 784111777)
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET / HTTP/1\.1" 304 -',
        line,
    )


def test_control_characters_escaped() -> None:
    """A request cannot inject newlines, escapes or quotes into the log."""
    line = format_access_line("h", 'GET /\x1b[31m\n"x\\ HTTP/1.1', 400, 5, 1.0)
    assert "\n" not in line
    assert "\x1b" not in line
    assert '\\x1b[31m\\x0a\\"x\\\\' in line
    assert escape("plain/text") == "plain/text"
