"""Requests and responses plain enough to frame without h11, byte for byte as h11 would.

Why: in a batch of small files, h11 took about half of the client's Python time (a throwaway
state machine to write each request, five events and a cycle reset to read each response). Most
exchanges are a GET or HEAD without a body answered by an HTTP/1.1 response with a
Content-Length: for exactly those this module writes the request head and parses the response
head itself.

The contract, checked by differential tests against h11 (``tests/client/test_plainhead.py``):

* :func:`plain_request_head` returns the bytes a fresh h11 client writes for the request, or
  ``None`` when h11 would refuse it or it is not plain (a body, framing or hop-by-hop fields);
* :func:`parse_plain_response_head` accepts only heads h11 accepts, with the same status,
  reason and fields, and says how long the body is; anything else (1xx, chunked, a body that
  runs to the close, HTTP/1.0, a byte outside the plain grammar) returns ``None`` and the
  connection hands its bytes to h11, which reads until it is idle and empty again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._shared.grammar import FIELD_NAME as _NAME
from ._shared.grammar import FIELD_VALUE as _VALUE
from ._shared.grammar import HEAD_END as HEAD_END
from ._shared.grammar import NO_BODY_STATUSES

_FIELD_NAME = re.compile(_NAME)
_FIELD_VALUE = re.compile(_VALUE)
_TARGET = re.compile(r"[\x21-\x7e]+")
_RESPONSE_HEAD = re.compile(
    r"HTTP/1\.1 ([2-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?\r\n"
    rf"((?:{_NAME}:[ \t]*{_VALUE}[ \t]*\r\n)*)\r\n"
)
_FIELDS = re.compile(rf"({_NAME}):[ \t]*({_VALUE})[ \t]*\r\n")
_DIGITS = re.compile(r"[0-9]+")
#: h11 refuses a Content-Length of more digits (its CONTENT_LENGTH_MAX_DIGITS).
_MAX_LENGTH_DIGITS = 20

#: Request fields that need h11: framing, hop-by-hop and protocol switches.
_H11_REQUEST_FIELDS = frozenset(
    {"content-length", "transfer-encoding", "connection", "upgrade", "expect", "te"}
)


def plain_request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes | None:
    """The head h11 writes for a bodiless GET or HEAD, or ``None`` (see the module docstring)."""
    if method not in ("GET", "HEAD") or not _TARGET.fullmatch(target):
        return None
    hosts = []
    others = []
    for name, value in headers:
        if not _FIELD_NAME.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            return None
        lowered = name.lower()
        if lowered in _H11_REQUEST_FIELDS:
            return None
        line = f"{name}: {value}\r\n"
        if lowered == "host":
            hosts.append(line)
        else:
            others.append(line)
    if len(hosts) != 1:
        return None  # h11 requires exactly one Host on HTTP/1.1
    return f"{method} {target} HTTP/1.1\r\n{hosts[0]}{''.join(others)}\r\n".encode("latin-1")


@dataclass(slots=True)
class PlainResponse:
    """A final response head, decoded as ISO-8859-1 text; names are lower-case."""

    status: int
    reason: str
    fields: list[tuple[str, str]]
    #: Bytes of body that follow the head (0 for HEAD, 204 and 304).
    body_length: int
    #: The server closes the connection after this response.
    close: bool


def parse_plain_response_head(head: bytes, *, head_request: bool) -> PlainResponse | None:
    """Parse ``head`` (status line to blank line) if it is plain; see the module docstring."""
    match = _RESPONSE_HEAD.fullmatch(head.decode("latin-1"))
    if match is None:
        return None
    status_text, reason, block = match.groups()
    status = int(status_text)
    fields = [(name.lower(), value) for name, value in _FIELDS.findall(block)]
    length: str | None = None
    close = False
    for name, value in fields:
        if name == "content-length":
            if (
                length is not None
                or len(value) > _MAX_LENGTH_DIGITS
                or not _DIGITS.fullmatch(value)
            ):
                return None  # repeated, listed or absurd lengths: h11 checks or refuses them
            length = value
        elif name == "transfer-encoding":
            return None
        elif name == "connection":
            tokens = {token.strip(" \t").lower() for token in value.split(",")}
            close = close or "close" in tokens  # h11 reads the tokens of every Connection field
    if head_request or status in NO_BODY_STATUSES:
        body_length = 0
    elif length is None:
        return None  # the body runs to the close: h11 reads it
    else:
        body_length = int(length)
    return PlainResponse(status, reason or "", fields, body_length, close)
