"""The Headers view."""

from __future__ import annotations

from webserver import Headers


def test_case_insensitive_and_joined() -> None:
    """Lookups ignore case; repeated fields are joined with ', '."""
    headers = Headers.from_raw([(b"accept", b"a"), (b"x", b"1"), (b"accept", b"b")])
    assert headers.get("Accept") == "a, b"
    assert headers.get_all("ACCEPT") == ["a", "b"]
    assert "X" in headers  # type: ignore[comparison-overlap]
    assert "y" not in headers  # type: ignore[comparison-overlap]
    assert headers.get("y", "d") == "d"
    assert len(headers) == 3
    assert headers[1] == ("x", "1")
    assert next(iter(headers)) == ("accept", "a")


def test_latin1_values() -> None:
    """Field values are decoded as ISO-8859-1, losslessly."""
    assert Headers.from_raw([(b"x", b"caf\xe9")]).get("x") == "café"
