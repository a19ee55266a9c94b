"""Common Log Format lines."""

from __future__ import annotations

import json
import re

import pytest

from webserver import ConfigError, ServerConfig
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


FIELDS = (("referer", "http://r/\x1b[2J"), ("user-agent", 'curl/8 "x"\n'))


def test_combined_adds_referer_and_user_agent_escaped() -> None:
    """combined is CLF plus the quoted Referer and User-Agent, escaped like the request."""
    line = format_access_line("h", "GET / HTTP/1.1", 200, 5, 1.0, fmt="combined", fields=FIELDS)
    assert line.endswith(' 200 5 "http://r/\\x1b[2J" "curl/8 \\"x\\"\\x0a"')
    bare = format_access_line("h", "GET / HTTP/1.1", 200, 5, 1.0, fmt="combined")
    assert bare.endswith(' 200 5 "-" "-"')


def test_json_is_one_object_per_line() -> None:
    """json is one line holding every field; control characters are JSON escapes."""
    line = format_access_line(
        "h", "GET /\x1b\u009b HTTP/1.1", 404, 0, 1.0, fmt="json", fields=FIELDS
    )
    assert "\n" not in line and "\x1b" not in line and "\u009b" not in line
    data = json.loads(line)
    assert data["request"] == "GET /\x1b\u009b HTTP/1.1"
    assert (data["status"], data["size"], data["host"]) == (404, 0, "h")
    assert (data["referer"], data["user_agent"]) == (FIELDS[0][1], FIELDS[1][1])
    assert data["time"].startswith("1970-01-01T")


def test_c1_controls_escaped() -> None:
    """C1 controls (0x9b is a one-byte CSI to some terminals) are escaped too."""
    assert escape("a\u009b31mb") == "a\\x9b31mb"


def test_unknown_format_is_a_config_error() -> None:
    """Only common, combined and json are accepted."""
    with pytest.raises(ConfigError, match="access_log_format must be one of"):
        ServerConfig(access_log_format="apache")
