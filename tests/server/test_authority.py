"""The Host and absolute-form authority grammar: reg-name / IPv4 / IP-literal, port <= 65535,
no userinfo."""

from __future__ import annotations

import pytest

from webserver._authority import valid_absolute_target, valid_host
from webserver._fastpath import parse_plain_request
from webserver.framing import HeadLimits

LIMITS = HeadLimits(max_request_line=8192, max_head_size=32768, max_header_count=100)

VALID = [
    "x",
    "",
    "example.com",
    "127.0.0.1:8080",
    "x:",
    "x:65535",
    "[::1]",
    "[::1]:80",
    "[v1.fe]",
    "a%20b",
    "xn--bcher-kva.example",
]
INVALID = [
    "a b/c@d",
    "x:99999999",
    "x:65536",
    "user@evil",
    "a/b",
    "[::g]",
    "[fe80::1%25eth0]",
    "[::1",
    "x:1:2",
    "a\tb",
    "a?b",
    "a#b",
]


@pytest.mark.parametrize("value", VALID)
def test_valid_hosts_pass(value: str) -> None:
    """Names, addresses, IP literals and ports up to 65535 are valid Host values."""
    assert valid_host(value)


@pytest.mark.parametrize("value", INVALID)
def test_invalid_hosts_fail_and_the_fast_path_declines_them(value: str) -> None:
    """Spaces, slashes, userinfo, big ports and bad literals are refused, and the fast path hands
    such a request to the strict checks instead of answering it."""
    assert not valid_host(value)
    head = f"GET / HTTP/1.1\r\nHost: {value}\r\n\r\n".encode("latin-1")
    assert parse_plain_request(head, LIMITS) is None


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("http://x/", True),
        ("https://[::1]:8443/a?b", True),
        ("http://x", True),
        ("http://a:b@x/", False),
        ("http://@x/", False),
        ("http:///a", False),
        ("http://:80/", False),
        ("http://x:99999/", False),
    ],
)
def test_absolute_targets(target: str, ok: bool) -> None:
    """An absolute-form target needs a non-empty host and no userinfo."""
    assert valid_absolute_target(target) is ok
