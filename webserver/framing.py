"""Request-head checks stricter than h11, applied to the raw bytes before h11 parses them.

h11 is lenient where real servers have been attacked through leniency (request smuggling,
CVE-2022-24761 in waitress, gunicorn 22.0): it prefers chunked when Content-Length is also
present, merges ``Content-Length: 3, 3``, accepts bare LF line endings and unfolds obsolete line
folding. Each of those is refused here, before the request reaches a handler:

* ``Content-Length`` with ``Transfer-Encoding``, ``Transfer-Encoding`` on HTTP/1.0, a
  ``Content-Length`` that is a list, signed, repeated, not all digits or has a tab around it
  (nginx refuses that too; spaces around it are fine) → 400
* a transfer coding other than ``chunked`` → 501
* a bare LF line ending, obsolete line folding, a byte the request line or field grammar does not
  allow → 400
* a request line over the limit → 414; a head over the size or field-count limit → 431
* an HTTP version of 2.0 or above → 505
* a target that is not origin form, absolute form (``http``/``https`` with a valid authority and
  no userinfo) or ``*`` (OPTIONS only) → 400; ``CONNECT`` → 501
* a ``Host`` that is not ``host[:port]`` by :mod:`webserver._authority` → 400

The rules that a prefix of the head can already break (a byte outside the grammar, a line ending,
the sizes) are checked in byte order by :func:`check_head_prefix`, on a head still arriving as on
a whole one, so a head is refused at the first byte that makes it invalid, with the same answer
however its bytes were split.

A pure function over bytes, so it is fuzzed directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from webclient._shared.grammar import HEAD_END as _HEAD_END

from ._authority import valid_absolute_target, valid_host
from .errors import HTTPError

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
#: h11's field value bytes (``[^\x00\s]`` and the spaces between them), with OWS around.
_VALUE = rb"[^\x00\n\r\x0b\x0c]"
_REQUEST_LINE = re.compile(_TOKEN + rb"+ ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
#: Every prefix of a valid request line (without its LF): a byte outside it is refused at once.
_REQUEST_LINE_PREFIX = re.compile(
    rb"(?:" + _TOKEN + rb"+(?: (?:[\x21-\x7e]+"
    rb"(?: (?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?)?)?)?)?"
)
#: A field line's bytes, read from its start, from inside its name, or from inside its value.
_FIELD_FROM_START = re.compile(rb"(?:" + _TOKEN + rb"+(?::" + _VALUE + rb"*\r?)?)?")
_FIELD_FROM_NAME = re.compile(_TOKEN + rb"*(?::" + _VALUE + rb"*\r?)?")
_FIELD_FROM_VALUE = re.compile(_VALUE + rb"*\r?")
_DIGITS = re.compile(rb"[0-9]+")


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


def check_head_prefix(data: bytes | bytearray, checked: int, limits: HeadLimits) -> None:
    """Raise :class:`HTTPError` (with ``close``) if ``data``, the start of a request head, can no
    longer become a valid one: a byte outside the request-line or field grammar, a bare LF, a
    folded line, a request line over the limit (414), too many fields or bytes (431), a version
    of 2.0 or above (505), or a target refused by the rules in the module docstring.

    ``data[:checked]`` already passed this check (0 if not), so a head trickling in is looked at
    once, not again with each byte. Empty lines before the request line are skipped.
    """
    pos = 0
    while data.startswith(b"\r\n", pos):
        pos += 2
    if data[pos:] == b"\r":
        return  # perhaps another empty line
    limit = min(len(data), pos + limits.max_head_size)
    first_lf = data.find(b"\n", pos, limit)
    if first_lf < 0 or first_lf >= checked:
        _check_request_line(data[pos : first_lf if first_lf >= 0 else limit], first_lf >= 0, limits)
    if first_lf >= 0:
        _check_field_lines(data, first_lf + 1, max(checked, first_lf + 1), limit, limits)
    if len(data) - pos > limits.max_head_size:
        raise _bad("request head too large", 431)


def _check_request_line(line: bytes | bytearray, complete: bool, limits: HeadLimits) -> None:
    text = bytes(line[: limits.max_request_line + 1])
    if complete and len(line) <= limits.max_request_line + 1:
        match = _REQUEST_LINE.fullmatch(text[:-1]) if text.endswith(b"\r") else None
        if match is None:
            raise _bad("malformed request line" if text.endswith(b"\r") else "bare LF line ending")
        target, major, _ = match.groups()
        if int(major) >= 2:
            raise _bad("HTTP version not supported", 505)
        _check_target(text.partition(b" ")[0], target)
        return
    if not _REQUEST_LINE_PREFIX.fullmatch(text[: limits.max_request_line]):
        raise _bad("malformed request line")
    if len(line.removesuffix(b"\r")) > limits.max_request_line:
        raise _bad("request line too long", 414)


def _check_field_lines(
    data: bytes | bytearray, first: int, checked: int, limit: int, limits: HeadLimits
) -> None:
    """Check the field lines in ``data[first:limit]`` from ``checked`` on (where a line may have
    been cut); a line is judged by its bytes, never by looking ahead."""
    start = data.rfind(b"\n", first - 1, checked) + 1  # the line holding ``checked``
    blank = data.find(b"\n\r", first - 1, checked)
    if blank >= 0 and data[blank + 2 : blank + 3] in (b"\n", b""):
        return  # the blank line ending the head began before ``checked``: nothing more to check
    count = data.count(b"\n", first, start)
    while start < limit:
        end = data.find(b"\n", start, limit)
        complete = end >= 0
        end = end if complete else limit
        count += 1
        if count > limits.max_header_count and data[start] != 0x0D:
            raise _bad("too many header fields", 431)
        if end == start + 1 and data[start] == 0x0D:
            return  # the blank line ending the head, or its start (however it was split)
        if checked > start:
            in_value = data.find(b":", start, checked) >= 0
            pattern = _FIELD_FROM_VALUE if in_value else _FIELD_FROM_NAME
            piece = data[checked - 1 if data[checked - 1] == 0x0D else checked : end]
        else:
            if data[start] in b" \t":
                raise _bad("obsolete line folding in request head")
            pattern, piece = _FIELD_FROM_START, data[start:end]
        if pattern.fullmatch(piece) is None:
            raise _bad("malformed header field line")
        if complete:
            if not piece.endswith(b"\r"):
                raise _bad("bare LF line ending in request head")
            if data.find(b":", start, end) < 0:
                raise _bad("header field line without a colon")
        start, checked = end + 1, 0


def check_request_head(head: bytes, limits: HeadLimits) -> None:
    """Raise :class:`HTTPError` (with ``close``) if ``head`` breaks a rule in the module docstring.

    ``head`` is the request line and header fields up to and including the blank line. The
    prefix rules come first, in byte order, exactly as they are applied to a head still arriving.
    """
    check_head_prefix(head, 0, limits)
    if not head.endswith(b"\r\n\r\n"):
        raise _bad("bare LF line ending in request head")
    lines = head[:-4].lstrip(b"\r\n").split(b"\r\n")
    major, minor = lines[0][-3:-2], lines[0][-1:]
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            lengths.append(value.strip(b" "))  # as nginx: a tab is part of the value
        elif name == b"transfer-encoding":
            codings.append(value.strip(b" \t"))
        elif name == b"host" and not valid_host(value.strip(b" \t").decode("latin-1")):
            raise _bad("invalid Host")
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
    if method == b"CONNECT":
        raise _bad("CONNECT is not supported", 501)
    if target.startswith(b"/"):
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise _bad("'*' is a target for OPTIONS only")
        return
    lowered = target.lower()
    if lowered.startswith((b"http://", b"https://")):
        if not valid_absolute_target(target.decode("latin-1")):
            raise _bad("invalid authority in the request target")
        return
    raise _bad("request target is not a path")
