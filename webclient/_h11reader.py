"""The responses h11 frames, and the requests only h11 writes: the client's h11 code, typed.

Rules: this module is imported the first time a connection needs h11 (a request the fast path
does not write, a response it does not read), so a batch of plain GETs never loads h11; every h11
exception leaves it as a :mod:`webclient.errors` exception; the reader is one long-lived
``h11.Connection`` per client connection, given each request it reads the answer to (its output
thrown away: the requests were written already) and every byte received from then on; a response
head larger than the connection's limit is refused exactly at the limit, whether it trickles in or
arrives whole in one read; after a complete response, :meth:`H11Reader.next_cycle` readies it for
the next and says whether it is idle with nothing buffered, when the fast path reads again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol, TypeVar

import h11

from ._models import ResponseHead
from .config import human_size
from .errors import ConnectionClosed, ProtocolError, ResponseTooLarge, WebClientError

#: Characters of h11's explanation of an invalid response kept in the error message.
_REASON_MAX = 200
#: ``h11.EndOfMessage()``, made once: events are immutable, so one serves every request.
_END = h11.EndOfMessage()

_E = TypeVar("_E", bound=WebClientError)


class Source(Protocol):
    """What the reader needs of its connection: the bytes, and the way it fails."""

    @property
    def where(self) -> str: ...

    def recv(self, started: bool) -> bytes:
        """The next bytes from the socket (b"" at the end), or the client's error."""

    def fail(self, error: _E) -> _E:
        """Mark the connection unusable; returns ``error`` for the caller to raise."""

    def head_too_large(self) -> ProtocolError: ...


def make_request(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> h11.Request:
    """The request as an h11 event; a :class:`ProtocolError` when h11 refuses it."""
    try:
        return h11.Request(method=method, target=target.encode("ascii"), headers=headers)
    except h11.LocalProtocolError as exc:
        raise ProtocolError(str(exc)) from exc


def request_head(request: h11.Request) -> bytes:
    """The request line and header fields as a fresh h11 client writes them."""
    try:
        head = h11.Connection(h11.CLIENT).send(request)
    except h11.LocalProtocolError as exc:
        raise ProtocolError(str(exc)) from exc
    assert head is not None
    return head


class H11Reader:
    """One connection's h11 state machine, reading responses in order."""

    __slots__ = ("_arrived", "_eof", "_machine", "_max_head", "_source")

    def __init__(self, source: Source, max_head_size: int) -> None:
        self._source = source
        self._max_head = max_head_size
        self._machine = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_size)
        #: Bytes received since the head being read was started.
        self._arrived = 0
        self._eof = False

    @property
    def idle(self) -> bool:
        """Between responses, with the connection kept open."""
        machine = self._machine
        return machine.our_state is h11.IDLE and machine.their_state is h11.IDLE

    @property
    def buffered(self) -> bool:
        """Whether bytes of the next response were already received."""
        return bool(self._machine.trailing_data[0])

    def start(self, request: h11.Request, data: bytes = b"", *, eof: bool = False) -> None:
        """Read the answer to ``request`` next, from ``data`` (bytes already received) on."""
        machine = self._machine
        machine.send(request)
        machine.send(_END)
        if data:
            machine.receive_data(data)
        if eof:
            self.receive(b"")

    def receive(self, data: bytes) -> None:
        """Bytes from the socket (b"" for its end)."""
        if not data:
            self._eof = True
        self._machine.receive_data(data)

    def _next_event(self, started: bool) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        source, machine = self._source, self._machine
        while True:
            try:
                event = machine.next_event()
            except h11.RemoteProtocolError as exc:
                if started and self._eof:
                    raise source.fail(
                        ConnectionClosed(
                            f"{source.where} closed the connection mid-response ({_reason(exc)})"
                        )
                    ) from exc
                if exc.error_status_hint == 431:
                    raise source.fail(source.head_too_large()) from exc
                raise source.fail(
                    ProtocolError(f"{source.where} sent an invalid response ({_reason(exc)})")
                ) from exc
            if event is not h11.NEED_DATA:
                return event
            data = source.recv(started)
            self._arrived += len(data)
            if not data:
                if not started and not machine.trailing_data[0]:
                    raise source.fail(
                        ConnectionClosed(f"{source.where} closed the connection without answering")
                    )
                if started:
                    # The end of the stream mid-response: whatever h11 makes of it (the end of a
                    # body read to the close, or a cut one), the connection is not reused.
                    source.fail(ConnectionClosed(f"{source.where} closed the connection"))
            self.receive(data)

    def read_head(self) -> ResponseHead:
        """The status line and header fields of the final response (1xx are skipped)."""
        source, machine, limit = self._source, self._machine, self._max_head
        # h11 stops an incomplete head at the limit, but takes a longer one that arrives whole
        # in one read; counting what it consumed makes the limit exact. It consumed at most what
        # it held plus what arrived since, so the exact count is needed only above the limit.
        held = len(machine.trailing_data[0])
        self._arrived = 0
        while True:
            event = self._next_event(started=False)
            total = held + self._arrived
            if total > limit and total - len(machine.trailing_data[0]) > limit:
                raise source.fail(source.head_too_large())
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                return ResponseHead(
                    event.status_code,
                    event.reason.decode("latin-1"),
                    # Names lowercased, as h11 compares them.
                    [
                        (n.lower().decode("latin-1"), v.decode("latin-1"))
                        for n, v in event.headers.raw_items()
                    ],
                    event.http_version.decode("ascii"),
                )
            if isinstance(event, h11.ConnectionClosed):
                raise source.fail(
                    ConnectionClosed(f"{source.where} closed the connection without answering")
                )
            raise source.fail(ProtocolError(f"{source.where} sent something other than a response"))

    def read_body(self, limit: int) -> Iterator[bytes]:
        """The body of the response whose head was just read, refused past ``limit`` bytes."""
        source = self._source
        size = 0
        while True:
            event = self._next_event(started=True)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise source.fail(
                        ResponseTooLarge(
                            f"the body from {source.where} grew past the limit of"
                            f" {human_size(limit)}; it was cut off"
                        )
                    )
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise source.fail(
                    ConnectionClosed(f"{source.where} closed the connection mid-response")
                )

    def next_cycle(self) -> bool:
        """After a complete response: ready for the next one; whether the machine is idle with
        nothing buffered (the fast path may read what comes next)."""
        machine = self._machine
        if machine.our_state is h11.DONE and machine.their_state is h11.DONE:
            machine.start_next_cycle()
            return machine.trailing_data == (b"", False)
        return False


def _reason(exc: Exception) -> str:
    """h11's explanation, shortened, with ``bytearray(b'...')`` shown as the text it holds."""
    text = re.sub(r"bytearray\((b(['\"]).*?\2)\)", lambda m: m.group(1)[1:], str(exc))
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."
