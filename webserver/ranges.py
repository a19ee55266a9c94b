"""Range requests (RFC 9110 §14): which bytes of a representation a client asked for.

Pure functions over values, so they can be fuzzed. Rules kept (nginx's where the RFC leaves a
choice):

* Only the ``bytes`` unit is understood; any other unit, or a malformed ranges-specifier, is ignored
  and the whole representation is sent (RFC 9110 §14.2 allows ignoring).
* ``first-last``, ``first-`` and ``-suffix`` are accepted; ``last`` past the end is clipped. A range
  starting at or past the end, or a zero suffix, is unsatisfiable; when no range is satisfiable the
  answer is 416 with ``Content-Range: bytes */LEN``.
* Bounded against amplification (RFC 9110 §14.2 "ranges that overlap or are many"): more than
  :data:`MAX_RANGES` ranges, or satisfiable ranges adding up to more than the representation (only
  overlapping or repeated ranges can), and the whole representation is sent once instead.
* ``If-Range`` applies the range only when it names the current representation: a strong ETag
  equal to ours, or an HTTP date equal to our Last-Modified (RFC 9110 §13.1.5).
"""

from __future__ import annotations

import re

from .errors import RangeNotSatisfiable
from .httpdate import parse_http_date

#: Most ranges served in one multipart/byteranges response; more gets the whole file (nginx's
#: ``max_ranges`` is unlimited by default, but a bound keeps a 1-byte-per-part request from
#: costing 100 bytes of part headers per byte).
MAX_RANGES = 16

#: Digits of a byte position taken at face value: 10**18 bytes is beyond any file.
_MAX_DIGITS = 18

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The ``(start, stop)`` byte spans (``stop`` exclusive) to send, in the order asked.

    ``None`` means "ignore the header and send the whole representation". Raises
    :class:`~webserver.errors.RangeNotSatisfiable` when the header is valid but no range
    overlaps ``size`` bytes.
    """
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [part for part in specs.split(",") if part.strip()]
    if not parts:
        return None
    spans: list[tuple[int, int]] = []
    for part in parts:
        match = _SPEC.match(part)
        if match is None:
            return None
        first, last = match.groups()
        if not first and not last:
            return None
        if first and last and _number(last) < _number(first):
            return None  # an invalid range-spec: the whole header is ignored
        span = _span(first, last, size)
        if span is not None:
            spans.append(span)
    if not spans:
        raise RangeNotSatisfiable(size)
    if len(parts) > MAX_RANGES or sum(stop - start for start, stop in spans) > size:
        return None
    return spans


def _number(digits: str) -> int:
    """A byte position; beyond any file size it only needs to stay beyond (and Python refuses
    to convert more than 4,300 digits)."""
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _span(first: str, last: str, size: int) -> tuple[int, int] | None:
    """One valid range-spec as a span; ``None`` if unsatisfiable."""
    if not first:
        suffix = _number(last)
        if suffix == 0 or size == 0:
            return None
        return (max(size - suffix, 0), size)
    start = _number(first)
    stop = min(_number(last) + 1, size) if last else size
    if start >= size:
        return None
    return (start, stop)


def if_range_allows(if_range: str | None, etag: str, last_modified: str) -> bool:
    """Whether a request's ``If-Range`` (absent: ``None``) lets its Range apply."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag
    if value.startswith("W/"):
        return False  # a weak validator never matches for If-Range (strong comparison)
    asked = parse_http_date(value)
    return asked is not None and asked == parse_http_date(last_modified)


def content_range(start: int, stop: int, size: int) -> str:
    """The ``Content-Range`` value of one span."""
    return f"bytes {start}-{stop - 1}/{size}"
