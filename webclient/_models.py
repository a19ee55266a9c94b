"""The values a request and its response are made of, shared by the client, the exchange
logic, the pipeline and the connection.

Rules: models hold data and nothing that reads a socket, a file or the clock; public ones
(:class:`ClientRequest`, :class:`ClientResponse`, :class:`BodySink`) are re-exported by :mod:`webclient`;
:class:`ResponseHead` is what the connection hands up when a status line and header fields have
been read (names lower-case, values as ISO-8859-1 text), before any of the body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ._freshness import header_value
from ._status import CacheStatus
from .errors import WebClientError

__all__ = ["BodySink", "ClientRequest", "ClientResponse", "ResponseHead", "Result", "SinkFactory"]


class BodySink(Protocol):
    """Where a response body goes: ``close`` when it arrived whole, ``abort`` when it did not."""

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


#: Given the response (body not yet read), a sink for its body, or None to discard the body.
SinkFactory = Callable[["ClientResponse"], BodySink | None]


@dataclass(frozen=True)
class ClientRequest:
    """A request for :meth:`Client.request_all`; ``body`` is bytes or a local file to stream."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | Path | None = None
    sink: SinkFactory | None = field(default=None, compare=False)
    #: Called with each count of body bytes uploaded (for progress display).
    on_sent: Callable[[int], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ClientResponse:
    """A complete response; ``body`` is None when it went to a sink (or was discarded)."""

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    cache_status: CacheStatus
    body: bytes | None = None
    #: Length of the body as delivered (from the network or the cache).
    body_size: int = 0
    #: Body bytes that crossed the network for this response (0 for cache hits and 304s).
    bytes_received: int = 0
    #: Body bytes uploaded: those written before the response came (a server that refuses an
    #: upload and closes stops it short).
    bytes_sent: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        """A header field's value (repeated fields joined with ", ")."""
        return header_value(self.headers, name)

    @property
    def text(self) -> str:
        return (self.body or b"").decode("utf-8", "replace")


Result = ClientResponse | WebClientError


class ResponseHead:
    """A response's status line and header fields, read before its body."""

    __slots__ = ("headers", "http_version", "reason", "status")

    def __init__(
        self, status: int, reason: str, headers: list[tuple[str, str]], http_version: str
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.http_version = http_version

    def __repr__(self) -> str:
        return f"ResponseHead({self.status!r}, {self.reason!r}, {self.headers!r})"
