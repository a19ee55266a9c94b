"""Behind a reverse proxy: the forwarded client address, trusted proxies, the health endpoint."""

from __future__ import annotations

import http.client
import ipaddress
import logging
from pathlib import Path

import pytest

from webserver import ConfigError, Handler, Headers, Request, Response, ServerConfig
from webserver.proxy import client_address
from webserver.testing import running_server

from .conftest import NET_TIMEOUT

LOCAL = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "fields", "expected"),
    [
        ("203.0.113.9", [("x-forwarded-for", "1.2.3.4")], "203.0.113.9"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", [("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
        ("127.0.0.1", [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")], "1.2.3.4"),
        ("127.0.0.1", [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
        ("127.0.0.1", [("x-forwarded-for", "10.0.0.5, 10.0.0.2")], "10.0.0.5"),
        ("127.0.0.1", [("x-forwarded-for", "<script>, 10.0.0.2")], "10.0.0.2"),
        ("127.0.0.1", [("x-forwarded-for", "1.2.3.4:5678")], "1.2.3.4"),
        ("127.0.0.1", [("x-forwarded-for", "[2001:db8::1]:80")], "2001:db8::1"),
        (
            "127.0.0.1",
            [("forwarded", 'for=6.6.6.6, for="[2001:db8::7]:4711";proto=http')],
            "2001:db8::7",
        ),
        ("127.0.0.1", [("forwarded", "for=unknown")], "127.0.0.1"),
        ("127.0.0.1", [("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
        ("::ffff:127.0.0.1", [("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
    ],
    ids=[
        "untrusted-peer-ignored",
        "trusted-peer-without-fields",
        "trusted-peer",
        "rightmost-untrusted-hop",
        "repeated-fields-in-order",
        "all-trusted-leftmost",
        "garbage-stops-walk",
        "ipv4-with-port",
        "ipv6-bracketed",
        "forwarded-rfc7239",
        "forwarded-unknown",
        "x-forwarded-for-preferred",
        "ipv4-mapped-peer",
    ],
)
def test_client_address(peer: str, fields: list[tuple[str, str]], expected: str) -> None:
    """Forwarded fields count only from a trusted peer, read from the right (module rules)."""
    assert client_address(peer, Headers(fields), LOCAL) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trusted_proxies": ("10.0.0.0/33",)}, "trusted proxy must be an IP address or network"),
        ({"trusted_proxies": ("nginx",)}, "trusted proxy must be"),
        ({"health": "healthz"}, "health must be a path"),
        ({"health": "/health z"}, "health must be a path"),
    ],
)
def test_bad_settings_refused(settings: dict[str, object], message: str) -> None:
    """A trusted proxy that is no address or network, or a health path that is no path."""
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**settings)  # type: ignore[arg-type]


class WhoAmI(Handler):
    def get(self, request: Request) -> Response:
        return Response.text(request.client[0])


def fetch(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("trusted", "expected"), [(("127.0.0.1",), "198.51.100.7"), ((), "127.0.0.1")]
)
def test_access_log_and_request_name_the_forwarded_client_only_from_trusted_proxies(
    www: Path, caplog: pytest.LogCaptureFixture, trusted: tuple[str, ...], expected: str
) -> None:
    """With --trusted-proxy, request.client and the access line carry X-Forwarded-For's client;
    without it, the peer."""
    forwarded = {"X-Forwarded-For": "198.51.100.7"}
    with (
        caplog.at_level(logging.INFO, logger="webserver.access"),
        running_server(
            root=www,
            trusted_proxies=trusted,
            setup=lambda server: server.route("/whoami", WhoAmI),
        ) as server,
    ):
        port = server.listen()[1]
        assert fetch(port, "/whoami", forwarded) == (200, expected.encode())
        assert fetch(port, "/hello.txt", forwarded)[0] == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "webserver.access"]
    assert len(lines) == 2
    assert all(line.startswith(f"{expected} - - [") for line in lines)


def test_health_endpoint_answers_and_is_not_logged(
    www: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--health answers 200 'ok' (not cached), without an access line; other paths are logged."""
    with (
        caplog.at_level(logging.INFO, logger="webserver.access"),
        running_server(root=www, health="/healthz") as server,
    ):
        port = server.listen()[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
        try:
            for _ in range(3):
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"ok\n")
                assert response.getheader("Cache-Control") == "no-store"
            conn.request("GET", "/hello.txt")
            assert conn.getresponse().read() == b"hello, world\n"
        finally:
            conn.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "webserver.access"]
    assert len(lines) == 1 and '"GET /hello.txt HTTP/1.1" 200' in lines[0]


def test_health_options_on_the_command_line(www: Path) -> None:
    """--health and --trusted-proxy are checked like every option: one line, exit 2."""
    from click.testing import CliRunner

    from webserver.cli import main

    for args, message in [
        (["--health", "healthz"], "health must be a path"),
        (["--trusted-proxy", "nginx"], "trusted proxy must be an IP address or network"),
    ]:
        result = CliRunner().invoke(main, ["run", "--root", str(www), "--port", "0", *args])
        assert result.exit_code == 2 and message in result.output
