"""Tests of webclient/_shared/httpdate.py: HTTP-dates of RFC 9110 §5.6.7, read exactly.

The server's and the client's HTTP-dates are this one parser; ``tests/server/test_httpdate.py``
checks the server's use of it (no ``now`` to pass, a cached ``Date``).
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from webclient._shared.httpdate import (
    format_http_date,
    is_http_date,
    parse_http_date,
    rfc850_year,
)

NOW = 1_700_000_000.0


_MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_DAYS_LONG = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _format(when: int, form: str) -> str:
    """An HTTP-date in one of the three forms of RFC 9110 §5.6.7, written independently."""
    t = time.gmtime(when)
    hms = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    month = _MONTH_NAMES[t.tm_mon - 1]
    if form == "imf":
        return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {month} {t.tm_year:04d} {hms} GMT"
    if form == "rfc850":
        yy = t.tm_year % 100
        return f"{_DAYS_LONG[t.tm_wday]}, {t.tm_mday:02d}-{month}-{yy:02d} {hms} GMT"
    return f"{_DAYS[t.tm_wday]} {month} {t.tm_mday:2d} {hms} {t.tm_year}"


_whens = st.integers(0, 253402300799)  # 1970 .. 9999-12-31T23:59:59


@settings(max_examples=500)
@given(_whens, st.sampled_from(["imf", "rfc850", "asctime"]), st.integers(-49, 49))
def test_http_date_parser_reads_the_formatter(when: int, form: str, years: int) -> None:
    """Each of the three forms reads back to the time written; rfc850 within 50 years of now."""
    now = float(when) + years * 365.2425 * 86400 * 0.99
    if form == "rfc850" and not 1 <= time.gmtime(now).tm_year <= 9999:
        return
    assert parse_http_date(_format(when, form), now) == when


_MUTATIONS = [
    ("GMT", "UTC"),
    ("GMT", "+0000"),
    (", ", " "),
    (" ", "  "),
    (":", "."),
    (" GMT", ""),
]


@settings(max_examples=300)
@given(_whens, st.sampled_from(_MUTATIONS), st.text(max_size=3))
def test_http_date_parser_refuses_near_misses(
    when: int, mutation: tuple[str, str], extra: str
) -> None:
    """A fixdate with a wrong zone, comma, spacing or separator is no date; nor is any junk."""
    text = _format(when, "imf").replace(*mutation, 1)
    assert parse_http_date(text, NOW) is None
    assert parse_http_date(_format(when, "imf") + "x" + extra, NOW) is None
    assert parse_http_date(format_http_date(when), NOW) == when


@given(st.text(max_size=40))
def test_http_date_parser_takes_any_text(text: str) -> None:
    """Any text gives None or a time, never an error."""
    result = parse_http_date(text, NOW)
    assert result is None or is_http_date(text)


def test_rfc850_two_digit_year_is_at_most_50_years_ahead() -> None:
    """A two-digit year more than 50 years ahead is the century before (RFC 9110 §5.6.7)."""
    assert rfc850_year(50, NOW) == 2050  # NOW is in 2023
    assert rfc850_year(74, NOW) == 1974
    assert rfc850_year(73, NOW) == 2073


@settings(max_examples=100)
@given(_whens, st.sampled_from(["imf", "rfc850", "asctime"]))
def test_no_proper_prefix_of_a_date_is_a_date(when: int, form: str) -> None:
    """A date read as it arrives, byte by byte, is no date until it is whole."""
    text = _format(when, form)
    assert parse_http_date(text, NOW if form != "rfc850" else float(when)) == when
    for end in range(len(text)):
        assert parse_http_date(text[:end], NOW) is None
