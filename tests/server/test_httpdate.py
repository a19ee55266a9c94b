"""HTTP-date formatting and parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver.httpdate import format_http_date, http_date_now, parse_http_date


def test_format_is_imf_fixdate() -> None:
    """The preferred format of RFC 9110 §5.6.7."""
    assert format_http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    "text",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_parses_all_three_forms(text: str) -> None:
    """Recipients must accept IMF-fixdate, RFC 850 and asctime."""
    assert parse_http_date(text) == 784111777


@pytest.mark.parametrize("text", ["", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT", "0"])
def test_invalid_is_none(text: str) -> None:
    """Invalid dates are None, not an exception."""
    assert parse_http_date(text) is None


@given(st.integers(min_value=0, max_value=2**33))
def test_round_trip(seconds: int) -> None:
    """Whatever we format, we parse back to the same second."""
    assert parse_http_date(format_http_date(seconds)) == seconds


@given(st.text(max_size=40))
def test_fuzz_never_raises(text: str) -> None:
    """Arbitrary text parses to a number or None."""
    result = parse_http_date(text)
    assert result is None or isinstance(result, float)


def test_now_is_current() -> None:
    """The cached Date text parses back to within a second or two of now."""
    import time

    parsed = parse_http_date(http_date_now())
    assert parsed is not None
    assert abs(parsed - time.time()) < 2
