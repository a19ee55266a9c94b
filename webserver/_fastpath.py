"""Requests and responses plain enough to frame without h11, byte for byte as h11 would.

Why: profiling the 1 KiB keep-alive load put half of the server's Python time inside h11
(parsing each head into events, validating every response header twice, stepping its state
machine four times per request; see docs/performance.md). Most requests a file server sees are a
GET or HEAD with no body, and most answers have a known length: for exactly those this module
parses the head and writes the response head itself.

The contract, checked by differential tests against h11 itself (``tests/server/test_fastpath.py``):

* :func:`parse_plain_request` accepts only heads h11 accepts, and yields the same method, target,
  version and fields h11 would. Anything else (a body, ``Expect``, an upgrade, a byte outside the
  plain grammar, a head the strict checks in :mod:`webserver.framing` or the size limits would
  refuse) returns ``None``, and the connection hands its bytes to h11 unchanged.
* :func:`plain_response_head` writes the head h11 would write for the same response, or returns
  ``None`` (unknown length, framing or hop-by-hop fields set by a handler, an unusual status),
  and the response goes through h11.

h11 stays the state machine for every connection: it is idle and empty between plain exchanges,
exactly as after ``start_next_cycle``, and takes over at the first request or response this
module declines.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from webclient._shared.grammar import FIELD_NAME as _NAME
from webclient._shared.grammar import FIELD_VALUE as _VALUE
from webclient._shared.grammar import NO_BODY_STATUSES

from ._authority import valid_host
from .framing import HeadLimits

# Field values stricter than h11's (which also allows control characters): any head with one of
# those goes to h11.
_FIELD = rf"({_NAME}):[ \t]*({_VALUE})[ \t]*\r\n"
_PLAIN_HEAD = re.compile(
    rf"(GET|HEAD) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n((?:{_NAME}:[ \t]*{_VALUE}[ \t]*\r\n)*)\r\n"
)
_FIELDS = re.compile(_FIELD)
_FIELD_NAME = re.compile(_NAME)
_FIELD_VALUE = re.compile(_VALUE)
_DIGITS = re.compile(r"[0-9]+")
#: h11 refuses a Content-Length of more digits (its CONTENT_LENGTH_MAX_DIGITS).
_MAX_LENGTH_DIGITS = 20

#: Request fields whose presence needs h11: message bodies, 100-continue, and ``Upgrade``
#: (h11 takes any as a proposal to switch protocols).
_H11_REQUEST_FIELDS = frozenset({"content-length", "transfer-encoding", "expect", "upgrade"})
#: Response fields a handler may set that change framing or that h11 reorders.
_H11_RESPONSE_FIELDS = frozenset({"transfer-encoding", "connection", "host"})
#: Response fields whose check is remembered (see ``_checked_field``), least recently used
#: first out.
FIELD_CACHE_SIZE = 1024
#: ``valid_host``, remembered: clients send the same few Host values again and again.
_valid_host = functools.lru_cache(maxsize=FIELD_CACHE_SIZE)(valid_host)


@dataclass(slots=True)
class PlainRequest:
    """A bodiless GET or HEAD, decoded as ISO-8859-1 text; names are lower-case."""

    method: str
    target: str
    http_version: str
    fields: tuple[tuple[str, str], ...]
    #: The client will not send another request: ``Connection: close`` or HTTP/1.0.
    close: bool


def parse_plain_request(head: bytes, limits: HeadLimits) -> PlainRequest | None:
    """Parse ``head`` (request line to blank line) if it is plain; see the module docstring."""
    if len(head) > limits.max_head_size:
        return None
    text = head.decode("latin-1")
    match = _PLAIN_HEAD.fullmatch(text)
    if match is None:
        return None
    method, target, minor, block = match.groups()
    if len(method) + len(target) + 10 > limits.max_request_line:  # "M T HTTP/1.1"
        return None
    fields = tuple((name.lower(), value) for name, value in _FIELDS.findall(block))
    if len(fields) > limits.max_header_count:
        return None
    hosts = 0
    bad_host = False
    close = minor == "0"
    for name, value in fields:
        if name == "host":
            hosts += 1
            bad_host = bad_host or not _valid_host(value)  # the strict checks answer 400
        elif name == "connection":
            tokens = {token.strip(" \t").lower() for token in value.split(",")}
            if "upgrade" in tokens:
                return None
            if "close" in tokens:
                close = True
        elif name in _H11_REQUEST_FIELDS:
            return None
    # h11 requires exactly one Host on HTTP/1.1 and at most one on HTTP/1.0.
    if bad_host or hosts > 1 or (hosts == 0 and minor == "1"):
        return None
    return PlainRequest(method, target, "1." + minor, fields, close)


def plain_response_head(
    status: int,
    reason: str,
    fields: list[tuple[str, str]],
    *,
    body_length: int | None,
    close: bool,
) -> bytes | None:
    """The response head h11 would write, or ``None`` when the response needs h11.

    ``fields`` are those the response carries (``Date``, ``Server`` and ``Content-Length``
    included); ``body_length`` is the size of the body that will follow, ``None`` when none
    will (HEAD, 204, 304); ``close`` adds ``Connection: close`` as h11 does, last.
    """
    if not 200 <= status < 600:
        return None
    length: str | None = None
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    for name, value in fields:
        checked = _checked_field(name, value)
        if checked is None:
            return None
        lowered, line = checked
        if lowered == "content-length":
            if (
                length is not None
                or len(value) > _MAX_LENGTH_DIGITS
                or not _DIGITS.fullmatch(value)
            ):
                return None
            length = value
        elif lowered in _H11_RESPONSE_FIELDS:
            return None
        lines.append(line)
    if status in NO_BODY_STATUSES:
        if body_length:
            return None  # h11 refuses a body on these
    else:
        # h11 would frame an unknown length with chunked coding (or by closing, for HTTP/1.0).
        if length is None:
            return None
        if body_length is not None and int(length) != body_length:
            return None  # h11 refuses a body that disagrees with its Content-Length
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


@functools.lru_cache(maxsize=FIELD_CACHE_SIZE)
def _checked_field(name: str, value: str) -> tuple[str, str] | None:
    """The lower-case name and the line of a response field h11 would accept, else None.

    Remembered: a server sends the same few fields again and again (``Server``, a file's type,
    ``ETag`` and ``Last-Modified``, this second's ``Date``), and a lookup costs a fraction of the
    two pattern matches (they were a tenth of a small request's time).
    """
    if not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
        return None
    return name.lower(), f"{name}: {value}\r\n"
