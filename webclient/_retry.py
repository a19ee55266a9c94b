"""When to send a request again, and how long to wait first.

Rules: only GET and HEAD are retried (a POST is never sent twice by this layer: its body may
have been processed); they are retried after a connection failure (refused, reset, closed
before the answer, a failed TLS handshake) and after a 503 or 429 response, not after a DNS
failure, a read timeout (the server has the request and is slow: trying again doubles the wait)
nor an untrusted certificate. The wait before retry ``n`` (0-based) is drawn uniformly from
``[0, base * 2**n]`` ("full jitter", so clients that failed together do not return together),
unless the response said ``Retry-After`` (seconds or an HTTP-date), which is honoured exactly.
The waits of one call add up to at most ``max_wait`` seconds: a Retry-After beyond what is
left ends the retries and the 503/429 is the answer. Pure functions: the caller owns clocks and
randomness.
"""

from __future__ import annotations

from collections.abc import Callable

from ._freshness import HeaderList, header_value
from ._shared.httpdate import parse_http_date
from .errors import ReadTimeout, ResolveError, TransportError, WebClientError

#: Statuses that say "not now": service unavailable, too many requests.
RETRY_STATUSES = frozenset({429, 503})
#: Methods retried: safe ones only, so nothing is done twice on the server.
RETRY_METHODS = frozenset({"GET", "HEAD"})


def retry_after(headers: HeaderList, now: float) -> float | None:
    """Seconds the server asked to wait (``Retry-After``: delay-seconds or an HTTP-date);
    None when absent or invalid; a date in the past means now."""
    value = (header_value(headers, "retry-after") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit also takes "\xb2" and other digits
        return float(value)
    when = parse_http_date(value, now)
    return None if when is None else max(0.0, when - now)


def retryable_error(method: str, error: WebClientError) -> bool:
    """Whether a request that failed with ``error`` may be sent again."""
    return (
        method in RETRY_METHODS
        and isinstance(error, TransportError)
        and not isinstance(error, ResolveError | ReadTimeout)
    )


def retryable_status(method: str, status: int) -> bool:
    return method in RETRY_METHODS and status in RETRY_STATUSES


def backoff(attempt: int, base: float, uniform: Callable[[float, float], float]) -> float:
    """The full-jitter wait before retry ``attempt`` (0-based)."""
    return uniform(0.0, base * 2.0**attempt)


def wait_before_retry(
    attempt: int,
    *,
    asked: float | None,
    base: float,
    left: float,
    uniform: Callable[[float, float], float],
) -> float | None:
    """Seconds to wait before retry ``attempt``; None when the budget ``left`` cannot cover what
    the server asked (or nothing is left at all)."""
    if asked is not None:
        return asked if asked <= left else None
    if left <= 0 and base > 0:
        return None
    return min(backoff(attempt, base, uniform), left)
