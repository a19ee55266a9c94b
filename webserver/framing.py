"""Request-head checks stricter than h11, applied to the raw bytes before h11 parses them.

h11 is lenient where real servers have been attacked through leniency (request smuggling,
CVE-2022-24761 in waitress, gunicorn 22.0): it prefers chunked when Content-Length is also
present, merges ``Content-Length: 3, 3``, accepts bare LF line endings and unfolds obsolete line
folding. Each of those is refused here, before the request reaches a handler:

* ``Content-Length`` with ``Transfer-Encoding``, ``Transfer-Encoding`` on HTTP/1.0, a
  ``Content-Length`` that is a list, signed, repeated or not all digits → 400
* a transfer coding other than ``chunked`` → 501
* a bare LF line ending, obsolete line folding → 400
* a request line over the limit → 414; a head over the size or field-count limit → 431
* an HTTP version of 2.0 or above → 505
* a target that is not origin form, absolute form, ``*`` (OPTIONS only) or authority form
  (CONNECT only) → 400

A pure function over bytes, so it is fuzzed directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import HTTPError

_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d)\.(\d)")
_DIGITS = re.compile(rb"[0-9]+")
_HEAD_END = re.compile(rb"\n\r?\n")


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Sizes a request head must keep within."""

    max_request_line: int
    max_head_size: int
    max_header_count: int


def find_head_end(data: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line ending the first head in ``data``, or -1 if incomplete.

    The end is found by h11's own rule (a LF, an optional CR, a LF), so that every head h11
    would parse is checked here first; one using bare LF anywhere is then refused. ``start``
    skips bytes already searched (the end is at most 3 bytes long, so start 2 before the end
    of what was searched).
    """
    match = _HEAD_END.search(data, start)
    return match.end() if match else -1


def _bad(detail: str, status: int = 400) -> HTTPError:
    return HTTPError(detail, status=status, close=True)


def check_request_head(head: bytes, limits: HeadLimits) -> None:
    """Raise :class:`HTTPError` (with ``close``) if ``head`` breaks a rule in the module docstring.

    ``head`` is the request line and header fields up to and including the blank line. A head
    h11 would reject anyway (garbage, missing Host) is left for h11 to report.
    """
    if len(head) > limits.max_head_size:
        raise _bad("request head too large", 431)
    if not head.endswith(b"\r\n\r\n"):
        raise _bad("bare LF line ending in request head")
    lines = head[:-4].split(b"\n")
    if any(not line.endswith(b"\r") for line in lines[:-1]):
        raise _bad("bare LF line ending in request head")
    lines = [line.removesuffix(b"\r") for line in lines]
    request_line = lines[0]
    if len(request_line) > limits.max_request_line:
        raise _bad("request line too long", 414)
    if len(lines) - 1 > limits.max_header_count:
        raise _bad("too many header fields", 431)
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        return  # h11 answers malformed request lines with 400
    method, target, major, minor = match.groups()
    if int(major) >= 2:
        raise _bad("HTTP version not supported", 505)
    _check_target(method, target)
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise _bad("obsolete line folding in request head")
        name, colon, value = line.partition(b":")
        if not colon:
            return  # h11 answers malformed fields with 400
        name = name.lower()
        if name == b"content-length":
            lengths.append(value.strip(b" \t"))
        elif name == b"transfer-encoding":
            codings.append(value.strip(b" \t"))
    if len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(lengths[0])):
        raise _bad("invalid Content-Length")
    if codings:
        if lengths:
            raise _bad("both Content-Length and Transfer-Encoding")
        if (major, minor) == (b"1", b"0"):
            raise _bad("Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) > 1 or codings[0].lower() != b"chunked":
            raise _bad("only Transfer-Encoding: chunked is supported", 501)


def _check_target(method: bytes, target: bytes) -> None:
    if target.startswith(b"/"):
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise _bad("'*' is a target for OPTIONS only")
        return
    lowered = target.lower()
    if lowered.startswith((b"http://", b"https://")):
        return
    if method == b"CONNECT":
        return  # authority form; CONNECT itself is answered 501
    raise _bad("request target is not a path")
