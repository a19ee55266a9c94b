"""HTTP-date formatting and parsing (RFC 9110 §5.6.7).

Formatting the ``Date`` header is on every response's path, so the text is cached per second.
Parsing and formatting are the toolkit's (:mod:`webclient._shared.httpdate`), shared with the
client: exactly the three forms, anything else is ``None`` (the field is then ignored).
"""

from __future__ import annotations

import time

from webclient._shared import httpdate
from webclient._shared.httpdate import format_http_date as format_http_date

_cached_second = -1
_cached_text = ""


def http_date_now() -> str:
    """The current time as an HTTP-date, recomputed at most once a second."""
    global _cached_second, _cached_text
    now = int(time.time())
    if now != _cached_second:
        # Two threads racing here both compute the same text; the pair of writes is harmless.
        _cached_text = format_http_date(now)
        _cached_second = now
    return _cached_text


def parse_http_date(text: str) -> float | None:
    """Seconds since the epoch, or ``None`` for anything but the three HTTP-date forms.

    Recipients must accept IMF-fixdate, RFC 850 and asctime dates; an invalid date is ignored (the
    caller treats the header as absent), never an error. An RFC 850 date's century is read
    against the current time.
    """
    return httpdate.parse_http_date(text, time.time())
