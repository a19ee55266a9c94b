"""Tests of webclient/_shared/sizes.py: one size grammar for both command lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import webclient.config
import webclient.errors
import webserver.config
import webserver.errors
from webclient._shared.sizes import GIB, KIB, MIB, human_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("64K", 64 * KIB), ("10MiB", 10 * MIB), ("1g", GIB), (" 2 kb ", 2 * KIB)],
)
def test_sizes_are_read_in_binary_units(text: str, size: int) -> None:
    """Digits with an optional K/M/G/T (and B or iB), any case, spaces around."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "K", "1.5M", "-1", "10 X", "1 MBB", "1e3"])
def test_anything_else_is_one_sentence_in_each_packages_error(text: str) -> None:
    """A bad size is a ValueError here, and each package's own ConfigError with the same
    sentence: the rule lives once, the error tree stays each package's."""
    with pytest.raises(ValueError, match="not a size") as shared:
        parse_size(text)
    with pytest.raises(webserver.errors.ConfigError) as server:
        webserver.config.parse_size(text)
    with pytest.raises(webclient.errors.ClientConfigError) as client:
        webclient.config.parse_size(text)
    assert str(server.value) == str(client.value) == str(shared.value)


@given(st.integers(0, 2**40), st.sampled_from(["", "K", "M", "G", "T"]))
def test_both_packages_read_sizes_alike(number: int, unit: str) -> None:
    """The server's and the client's parse_size agree on every size."""
    text = f"{number}{unit}"
    assert webserver.config.parse_size(text) == webclient.config.parse_size(text)


def test_human_size() -> None:
    """Bytes below 1 KiB, then one decimal in the largest unit up to GiB."""
    assert human_size(512) == "512 bytes"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(3 * GIB) == "3.0 GiB"
    assert human_size(5000 * GIB) == "5000.0 GiB"
