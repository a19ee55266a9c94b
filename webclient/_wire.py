"""A request as it goes on the wire: its head serialised once, as h11 would, and kept.

Rules: a plain request (a GET or HEAD without a body) is written by the fast path
(:func:`webclient._plainhead.plain_request_head`, byte for byte what h11 writes), any other by a
throwaway h11 client, which checks it (:class:`~webclient.errors.ProtocolError` when h11 refuses
it); the bytes are kept, so a request sent again goes out exactly the same. Its response is read
by the fast path only when the request is plain and has no field that changes how the response
is framed (``Connection``, ``Upgrade``, ``Expect``, ``TE``, framing fields). h11 is imported only
when a request needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from ._plainhead import plain_request_head

if TYPE_CHECKING:
    import h11

#: Header fields that describe a request's body; the reading state machine must not see them.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
#: Request fields after which the response is read by h11 (they change how it is framed).
_H11_ONLY_FIELDS = frozenset({*_FRAMING, "connection", "upgrade", "expect", "te"})


@dataclass(slots=True, repr=False, eq=False)
class WireRequest:
    """A request as it goes on the wire; ``body`` is bytes or an open file of ``body_length``."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | BinaryIO | None = None
    body_length: int = 0
    #: Called with the number of body bytes just sent (for progress display).
    on_sent: Callable[[int], None] | None = None
    #: Body bytes written to the socket so far (fewer than ``body_length`` when the server
    #: answered and closed before taking the whole body).
    body_sent: int = field(default=0, init=False)
    #: What h11 made of this request, once asked (the fields above are not changed after).
    _request: h11.Request | None = field(default=None, init=False)
    _for_reader: h11.Request | None = field(default=None, init=False)
    _head: bytes | None = field(default=None, init=False)

    def __repr__(self) -> str:
        return f"WireRequest({self.method!r}, {self.target!r}, {self.headers!r})"

    def replace(self, *, headers: list[tuple[str, str]]) -> WireRequest:
        return WireRequest(
            self.method, self.target, headers, self.body, self.body_length, self.on_sent
        )

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")

    @property
    def plain(self) -> bool:
        """A bodiless GET or HEAD without framing or hop-by-hop fields: its response may be
        read by the fast path."""
        return (
            self.method in ("GET", "HEAD")
            and self.body is None
            and not any(n.lower() in _H11_ONLY_FIELDS for n, _ in self.headers)
        )

    @property
    def pipelinable(self) -> bool:
        """Safe methods may be written ahead of earlier responses (RFC 9112 §9.3.2)."""
        return self.method in ("GET", "HEAD")

    def _framed(self) -> bool:
        return self.body is not None or self.method == "POST"

    def wire_head(self) -> bytes:
        """The request line and header fields as a fresh h11 client writes them.

        Raises :class:`ProtocolError` for a request h11 refuses. The bytes are kept: h11
        writes the same request the same way, so a request sent again reuses them.
        """
        head = self._head
        if head is None:
            if self.body is None and self.method != "POST":
                head = plain_request_head(self.method, self.target, self.headers)
            if head is None:
                from ._h11reader import request_head

                head = request_head(self.h11_request())
            self._head = head
        return head

    def h11_request(self, *, framing: bool = True) -> h11.Request:
        """The request as an h11 event; without ``framing``, as the reading state machine needs
        it (no field describing a request body). Each is made once."""
        if framing:
            if self._request is None:
                self._request = self._make(framing=True)
            return self._request
        if self._for_reader is None:
            plain = not self._framed() and not any(n.lower() in _FRAMING for n, _ in self.headers)
            # Without a body or framing fields, both are the same request: h11 checks it once.
            self._for_reader = self.h11_request() if plain else self._make(framing=False)
        return self._for_reader

    def _make(self, *, framing: bool) -> h11.Request:
        from ._h11reader import make_request

        headers = [
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in self.headers
            if framing or n.lower() not in _FRAMING
        ]
        if framing and self._framed():
            headers.append((b"Content-Length", str(self.body_length).encode("ascii")))
        return make_request(self.method, self.target, headers)


def file_length(file: BinaryIO) -> int:
    """Bytes left in an open file, for Content-Length."""
    return max(0, os.fstat(file.fileno()).st_size - file.tell())
