"""The configuration dataclass and size parsing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from webserver import ConfigError, ServerConfig, TCPAddress, UnixAddress, parse_bind, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", 512), ("64K", 65536), ("10MiB", 10 * 2**20), ("1g", 2**30), ("2 GB", 2 * 2**30)],
)
def test_parse_size(text: str, expected: int) -> None:
    """Sizes take binary K/M/G/T suffixes, with optional iB/B."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "ten", "1X"])
def test_parse_size_rejects(text: str) -> None:
    """Anything else is a ConfigError naming the value."""
    with pytest.raises(ConfigError, match="not a size"):
        parse_size(text)


def test_frozen_and_resolved(tmp_path: Path) -> None:
    """The root is made absolute, and the config cannot change afterwards."""
    config = ServerConfig(root=tmp_path / "." / "x" / "..")
    assert config.root == tmp_path.resolve()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "settings",
    [
        {"port": -1},
        {"port": 70000},
        {"threads": 0},
        {"max_upload": -1},
        {"keep_alive_timeout": 0},
        {"body_timeout": -1},
        {"backlog": 0},
    ],
)
def test_rejects_out_of_range(settings: dict[str, int]) -> None:
    """Out-of-range values fail at construction, naming the setting."""
    with pytest.raises(ConfigError, match=next(iter(settings))):
        ServerConfig(**settings)  # type: ignore[arg-type]


def test_check_root(tmp_path: Path) -> None:
    """A missing root or a file as root is reported in a sentence."""
    with pytest.raises(ConfigError, match="does not exist"):
        ServerConfig(root=tmp_path / "missing").check_root()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        ServerConfig(root=tmp_path / "file").check_root()


def test_keyword_only() -> None:
    """Positional construction is refused, so settings cannot be swapped by accident."""
    with pytest.raises(TypeError):
        ServerConfig("127.0.0.1")  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["webserver ", " webserver", "web\u2603", "a\r\nX: y", "", "a  b"])
def test_a_server_name_that_cannot_be_a_header_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="server_name"):
        ServerConfig(root=tmp_path, server_name=name)


def test_a_server_name_of_words_is_accepted(tmp_path: Path) -> None:
    assert ServerConfig(root=tmp_path, server_name="shop/2.1 (internal)").server_name == (
        "shop/2.1 (internal)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", TCPAddress("127.0.0.1", 80)),
        ("[::1]:8081", TCPAddress("::1", 8081)),
        ("[::1]", TCPAddress("::1", 9)),
        ("::", TCPAddress("::", 9)),
        ("localhost", TCPAddress("localhost", 9)),
        ("unix:/run/web.sock", UnixAddress(Path("/run/web.sock"))),
    ],
)
def test_bind_values_are_parsed(text: str, expected: object) -> None:
    """--bind reads HOST, HOST:PORT, bracketed IPv6 and unix:PATH; a bare host takes the port."""
    assert parse_bind(text, 9) == expected


@pytest.mark.parametrize("text", ["unix:", "[nothost]:80", "[::1]:", "host:99999", ":80"])
def test_bad_bind_values_are_refused(text: str) -> None:
    """A malformed bind value is a ConfigError, not a socket error later."""
    with pytest.raises(ConfigError):
        parse_bind(text, 9)
