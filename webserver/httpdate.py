"""HTTP-date formatting and parsing (RFC 9110 §5.6.7).

Formatting the ``Date`` header is on every response's path, so the text is cached per second.
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC

_cached_second = -1
_cached_text = ""


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return email.utils.formatdate(timestamp, usegmt=True)


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
    caller treats the header as absent), never an error.
    """
    try:
        parsed = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
