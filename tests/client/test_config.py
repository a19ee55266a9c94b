"""Tests of webclient/config.py: validation and where the cache lives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from webclient.config import ClientConfig, default_cache_dir, human_size, parse_size
from webclient.errors import ClientConfigError


def test_defaults_and_frozen() -> None:
    """Defaults are sane and a config cannot change once built."""
    config = ClientConfig(cache_dir=Path("/tmp/x"))
    assert (config.pipeline, config.cache_max_size, config.use_cache) == (16, 1024**3, True)
    assert config.max_body_size == 1024**3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pipeline = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pipeline": 0}, "pipeline"),
        ({"pipeline": 65}, "pipeline"),
        ({"pipeline": True}, "pipeline"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"timeout": float("inf")}, "timeout must be at most 1000000 seconds"),
        ({"timeout": 1e300}, "timeout must be at most 1000000 seconds"),
        ({"timeout": float("nan")}, "timeout"),
        ({"max_time": 1e300}, "max_time must be at most 1000000 seconds"),
        ({"cache_max_size": -1}, "cache_max_size"),
        ({"max_body_size": -1}, "max_body_size"),
        ({"max_body_size": 1.5}, "max_body_size"),
        ({"use_cache": 1}, "use_cache"),
        ({"user_agent": "a\r\nb"}, "user_agent"),
        ({"verify_cache": "yes"}, "verify_cache"),
    ],
)
def test_invalid_settings(settings: dict[str, object], message: str) -> None:
    """Each out-of-range setting is a ClientConfigError naming it."""
    with pytest.raises(ClientConfigError, match=message):
        ClientConfig(**settings)  # type: ignore[arg-type]


def test_default_cache_dir_order(tmp_path: Path) -> None:
    """WEBCLIENT_CACHE_DIR, then an absolute XDG_CACHE_HOME, then ~/.cache."""
    assert default_cache_dir({"WEBCLIENT_CACHE_DIR": "/a", "XDG_CACHE_HOME": "/b"}) == Path("/a")
    assert default_cache_dir({"XDG_CACHE_HOME": "/b"}) == Path("/b/webclient")
    relative = default_cache_dir({"XDG_CACHE_HOME": "relative"})
    assert relative == Path.home() / ".cache" / "webclient"


@pytest.mark.parametrize(
    ("text", "size"), [("512", 512), ("64K", 65536), ("10MiB", 10 << 20), ("1g", 1 << 30)]
)
def test_parse_size(text: str, size: int) -> None:
    """Sizes take binary unit suffixes."""
    assert parse_size(text) == size


def test_parse_size_rejects_nonsense() -> None:
    """Anything else is a ClientConfigError."""
    with pytest.raises(ClientConfigError):
        parse_size("1.5G")


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"), (10 << 30, "10.0 GiB")],
)
def test_human_size(size: int, text: str) -> None:
    """Byte counts read in binary units, the way --max-size takes them."""
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"refresh": True, "offline": True}, "refresh and offline cannot be used together"),
        ({"refresh": True, "max_stale": 5}, "refresh and max_stale cannot be used together"),
        ({"offline": True, "use_cache": False}, "offline needs the cache"),
        ({"max_stale": -1}, "max_stale must be"),
        ({"max_stale": "1"}, "max_stale must be"),
        ({"refresh": 1}, "refresh must be True or False"),
    ],
)
def test_freshness_choices_are_checked(options: dict[str, object], message: str) -> None:
    """refresh, max_stale and offline exclude one another and need the cache."""
    with pytest.raises(ClientConfigError, match=message):
        ClientConfig(**options)  # type: ignore[arg-type]
