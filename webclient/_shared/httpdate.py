"""HTTP-dates (RFC 9110 §5.6.7): parsed exactly, written as IMF-fixdate.

Rules: exactly the three forms -- IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), rfc850-date
(``Sunday, 06-Nov-94 08:49:37 GMT``; a two-digit year more than 50 years ahead of ``now`` is the
century before) and asctime-date (``Sun Nov  6 08:49:37 1994``) -- with real calendar days, hours
to 23, minutes to 59 and seconds to 60 (a leap second); day and month names and ``GMT`` in any
letter case; the day name is not checked against the date; spaces and tabs around the date are
ignored; anything else (another zone, a missing comma, doubled spaces, dashes in the fixdate
form, trailing text) is no date: ``None``, never an exception, so the caller treats the field as
absent or invalid as its rule says. The parser takes ``now`` as an argument (no clock inside)
and caches the clock-free part of its work.
"""

from __future__ import annotations

import functools
import re
import time

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DAY_NAMES = "mon|tue|wed|thu|fri|sat|sun"
_DAY_NAMES_LONG = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTH = "|".join(_MONTHS)
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
#: The three forms of RFC 9110 §5.6.7, each as (pattern, index of day, month, year, hour).
#: IMF-fixdate: ``Sun, 06 Nov 1994 08:49:37 GMT``
_IMF_FIXDATE = re.compile(
    rf"(?:{_DAY_NAMES}), ([0-9]{{2}}) ({_MONTH}) ([0-9]{{4}}) {_TIME} GMT", re.IGNORECASE
)
#: rfc850-date: ``Sunday, 06-Nov-94 08:49:37 GMT``
_RFC850_DATE = re.compile(
    rf"(?:{_DAY_NAMES_LONG}), ([0-9]{{2}})-({_MONTH})-([0-9]{{2}}) {_TIME} GMT", re.IGNORECASE
)
#: asctime-date: ``Sun Nov  6 08:49:37 1994`` (a one-digit day after a space)
_ASCTIME_DATE = re.compile(
    rf"(?:{_DAY_NAMES}) ({_MONTH}) ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})", re.IGNORECASE
)
#: An rfc850-date year more than this many years ahead of now is the century before (§5.6.7).
RFC850_YEARS_AHEAD = 50

#: (year, month, day, hour, minute, second, two-digit year?)
_DateFields = tuple[int, int, int, int, int, int, bool]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (days may run past the month)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


@functools.lru_cache(maxsize=256)
def _date_fields(text: str) -> _DateFields | None:
    """The parts of an HTTP-date in one of the three forms, or None (cached: no clock in it)."""
    text = text.strip(" \t")
    two_digit = False
    match = _IMF_FIXDATE.fullmatch(text)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
    elif (match := _RFC850_DATE.fullmatch(text)) is not None:
        day, month, year, hour, minute, second = match.groups()
        two_digit = True
    elif (match := _ASCTIME_DATE.fullmatch(text)) is not None:
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    fields = (int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second))
    # A two-digit year is checked against a leap year (2000) here, and again once it is known.
    if not 1 <= fields[2] <= _days_in_month(2000 if two_digit else fields[0], fields[1]):
        return None
    if fields[3] > 23 or fields[4] > 59 or fields[5] > 60:
        return None
    return (*fields, two_digit)


def is_http_date(text: str | None) -> bool:
    """Whether the text is an HTTP-date in one of the three forms of RFC 9110 §5.6.7."""
    return text is not None and _date_fields(text) is not None


def rfc850_year(two_digits: int, now: float) -> int:
    """The year an rfc850-date's two digits mean at ``now``: the most recent year with those last
    two digits that is not more than 50 years ahead (RFC 9110 §5.6.7)."""
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + two_digits
    if year > this_year + RFC850_YEARS_AHEAD:
        return year - 100
    return year + 100 if year <= this_year - 100 + RFC850_YEARS_AHEAD else year


def parse_http_date(text: str | None, now: float) -> float | None:
    """Seconds since the epoch for an HTTP-date in any of the three RFC 9110 forms, else None.

    ``now`` is when the date was received: it only decides the century of an rfc850-date.
    """
    if text is None:
        return None
    fields = _date_fields(text)
    if fields is None:
        return None
    year, month, day, hour, minute, second, two_digit = fields
    if two_digit:
        year = rfc850_year(year, now)
        if day > _days_in_month(year, month):
            return None  # 29-Feb of a year that turned out not to be a leap year
    days = _days_from_civil(year, month, day)
    return float(((days * 24 + hour) * 60 + minute) * 60 + second)


def format_http_date(when: float) -> str:
    """The IMF-fixdate form, the one an HTTP sender must use (RFC 9110 §5.6.7)."""
    import email.utils  # only senders need it: the client's start-up does not pay for it

    return email.utils.formatdate(when, usegmt=True)
