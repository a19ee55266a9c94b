"""One client connection: a socket, requests written as bytes, responses read by h11.

h11 cannot pipeline as a client, so the two directions are split. Each request is serialised by a
throwaway h11 client (which checks it) and written straight to the socket, body bytes after it.
One long-lived h11 client reads the responses in order: before each, it is given the matching
request (so it knows, e.g., that a HEAD response has no body) and its output is thrown away; after
each complete response, ``start_next_cycle`` readies it for the next.

Rules: socket, timeout and h11 errors leave as :mod:`webclient.errors` exceptions; a server that
closes before sending a byte of a response raises :class:`ConnectionClosed` (the caller may retry
an idempotent request), anything later is a failure of that response; a response head larger than
:data:`MAX_HEAD_SIZE` is a :class:`ProtocolError`, and a body larger than ``max_body_size`` is a
:class:`ResponseTooLarge`, raised before reading the body when its Content-Length says so, else as
soon as it grows past the limit, so a hostile server cannot fill memory or disk; after a response
that announced a close, or any failure, the connection is not reused.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import h11

from .config import DEFAULT_MAX_BODY_SIZE, human_size
from .errors import (
    ConnectionClosed,
    ConnectionRefused,
    ConnectTimeout,
    LocalFileError,
    ProtocolError,
    ReadTimeout,
    ResolveError,
    ResponseTooLarge,
    TransportError,
)

#: Bytes asked of the socket per read, and sent per write of a file body.
CHUNK_SIZE = 64 * 1024
#: Largest status line plus header fields accepted; servers rarely send more than a few KiB, and
#: without a limit a server could make the client buffer an endless head.
MAX_HEAD_SIZE = 64 * 1024
#: Characters of h11's explanation of an invalid response kept in the error message.
_REASON_MAX = 200
#: Statuses whose responses never have a body, whatever their Content-Length says (RFC 9112 §6.3).
_NO_BODY_STATUSES = frozenset({204, 304})
#: Header fields that describe a request's body; the reading state machine must not see them.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


@dataclass(eq=False)
class WireRequest:
    """A request as it goes on the wire; ``body`` is bytes or an open file of ``body_length``."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | BinaryIO | None = None
    body_length: int = 0
    #: Called with the number of body bytes just sent (for progress display).
    on_sent: Callable[[int], None] | None = field(default=None, repr=False)

    @property
    def idempotent(self) -> bool:
        return self.method in ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")

    @property
    def pipelinable(self) -> bool:
        """Safe methods may be written ahead of earlier responses (RFC 9112 §9.3.2)."""
        return self.method in ("GET", "HEAD")

    def h11_request(self, *, framing: bool = True) -> h11.Request:
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self.headers]
        if framing and (self.body is not None or self.method == "POST"):
            headers.append((b"Content-Length", str(self.body_length).encode("ascii")))
        if not framing:
            headers = [(n, v) for n, v in headers if n.lower() not in _FRAMING]
        return h11.Request(method=self.method, target=self.target.encode("ascii"), headers=headers)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    http_version: str


def _describe(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket, or one of the transport errors with a clear sentence."""
    where = _describe(host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionRefused(f"connection refused by {where}") from exc
    except TimeoutError as exc:
        raise ConnectTimeout(f"no connection to {where} within {timeout:g} s") from exc
    except OSError as exc:
        raise TransportError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Connection:
    """A keep-alive connection to one server; one thread uses it at a time."""

    def __init__(
        self, host: str, port: int, *, timeout: float, max_body_size: int = DEFAULT_MAX_BODY_SIZE
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_body_size = max_body_size
        self.sock = open_socket(host, port, timeout)
        self._reader = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        #: Responses completely read on this connection.
        self.answered = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._broken = False
        self._eof = False

    @property
    def where(self) -> str:
        return _describe(self.host, self.port)

    @property
    def reusable(self) -> bool:
        """Whether another request may be sent: alive, between responses, not closing."""
        return (
            not self._broken
            and self._reader.our_state is h11.IDLE
            and self._reader.their_state is h11.IDLE
        )

    def close(self) -> None:
        self._broken = True
        self.sock.close()

    def dropped(self) -> bool:
        """Whether an idle connection was closed by the server (readable while idle = EOF)."""
        if self._broken:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    # -- sending ---------------------------------------------------------------------------------

    def send(self, request: WireRequest) -> None:
        """Write one request, streaming a file body; it is answered later, in order."""
        try:
            head = h11.Connection(h11.CLIENT).send(request.h11_request())
        except h11.LocalProtocolError as exc:
            raise ProtocolError(f"cannot send this request to {self.where}: {exc}") from exc
        assert head is not None
        with self._socket_errors(
            timeout=f"{self.where} did not take the request within {self.timeout:g} s",
            closed=f"{self.where} closed the connection while sending",
        ):
            self.sock.sendall(head)
            self.bytes_sent += len(head)
            if isinstance(request.body, bytes):
                self.sock.sendall(request.body)
                self._sent(request, len(request.body))
            elif request.body is not None:
                self._send_file(request, request.body)

    @contextlib.contextmanager
    def _socket_errors(self, *, timeout: str, closed: str) -> Iterator[None]:
        """Socket failures as the client's errors; either one leaves the connection unusable."""
        try:
            yield
        except TimeoutError as exc:
            self._broken = True
            raise ReadTimeout(timeout) from exc
        except OSError as exc:
            self._broken = True
            raise ConnectionClosed(closed) from exc

    def _sent(self, request: WireRequest, count: int) -> None:
        self.bytes_sent += count
        if request.on_sent is not None:
            request.on_sent(count)

    def _send_file(self, request: WireRequest, file: BinaryIO) -> None:
        remaining = request.body_length
        while remaining > 0:
            try:
                chunk = file.read(min(CHUNK_SIZE, remaining))
            except OSError as exc:
                self.close()
                raise LocalFileError(f"cannot read the file to upload: {exc.strerror}") from exc
            if not chunk:
                self.close()
                raise LocalFileError("the file to upload got shorter while it was sent")
            self.sock.sendall(chunk)
            remaining -= len(chunk)
            self._sent(request, len(chunk))

    # -- receiving -------------------------------------------------------------------------------

    def _next_event(self, started: bool) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            try:
                event = self._reader.next_event()
            except h11.RemoteProtocolError as exc:
                self._broken = True
                if started and self._eof:
                    raise ConnectionClosed(
                        f"{self.where} closed the connection mid-response ({_reason(exc)})"
                    ) from exc
                if exc.error_status_hint == 431:
                    raise self._head_too_large() from exc
                raise ProtocolError(
                    f"{self.where} sent an invalid response ({_reason(exc)})"
                ) from exc
            if event is not h11.NEED_DATA:
                return event
            waited = (
                f"{self.where} stopped sending mid-response for {self.timeout:g} s"
                if started
                else f"no response from {self.where} within {self.timeout:g} s"
            )
            with self._socket_errors(timeout=waited, closed=f"{self.where} reset the connection"):
                data = self.sock.recv(CHUNK_SIZE)
            if not data:
                self._eof = True
                if not started and not self._reader.trailing_data[0]:
                    self._broken = True
                    raise ConnectionClosed(f"{self.where} closed the connection without answering")
                if started:
                    self._broken = True
            self.bytes_received += len(data)
            self._reader.receive_data(data)

    def receive_head(self, request: WireRequest) -> ResponseHead:
        """The status line and header fields of the response to ``request`` (the next one)."""
        self._reader.send(request.h11_request(framing=False))
        self._reader.send(h11.EndOfMessage())
        # h11 stops an incomplete head at MAX_HEAD_SIZE, but takes a longer one that arrives whole
        # in one read; counting what it consumed makes the limit exact.
        buffered = len(self._reader.trailing_data[0]) - self.bytes_received
        while True:
            event = self._next_event(started=False)
            consumed = buffered + self.bytes_received - len(self._reader.trailing_data[0])
            if consumed > MAX_HEAD_SIZE:
                self._broken = True
                raise self._head_too_large()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                head = ResponseHead(
                    status=event.status_code,
                    reason=event.reason.decode("latin-1"),
                    headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers],
                    http_version=event.http_version.decode("ascii"),
                )
                self._check_announced_size(request, head)
                return head
            self._broken = True
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionClosed(f"{self.where} closed the connection without answering")
            raise ProtocolError(f"{self.where} sent something other than a response")

    def _head_too_large(self) -> ProtocolError:
        return ProtocolError(
            f"{self.where} sent a response head larger than {human_size(MAX_HEAD_SIZE)}"
        )

    def _check_announced_size(self, request: WireRequest, head: ResponseHead) -> None:
        """Refuse a body whose Content-Length is over the limit, before reading any of it."""
        if request.method == "HEAD" or head.status in _NO_BODY_STATUSES:
            return
        lengths = [v for n, v in head.headers if n.lower() == "content-length"]
        # h11 has checked that Content-Length is digits, and that repeated values agree.
        if lengths and int(lengths[0]) > self.max_body_size:
            self._broken = True
            raise ResponseTooLarge(
                f"{self.where} announced a body of {human_size(int(lengths[0]))}, more than the"
                f" limit of {human_size(self.max_body_size)}"
            )

    def iter_body(self) -> Iterator[bytes]:
        """The body of the response whose head was just read; readies the next response."""
        size = 0
        while True:
            event = self._next_event(started=True)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body_size:
                    self._broken = True
                    raise ResponseTooLarge(
                        f"the body from {self.where} grew past the limit of"
                        f" {human_size(self.max_body_size)}; it was cut off"
                    )
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                self._broken = True
                raise ConnectionClosed(f"{self.where} closed the connection mid-response")
        self.answered += 1
        if self._reader.our_state is h11.DONE and self._reader.their_state is h11.DONE:
            self._reader.start_next_cycle()

    def fileno(self) -> int:
        return self.sock.fileno()


def _reason(exc: h11.RemoteProtocolError) -> str:
    """h11's explanation, shortened, with ``bytearray(b'...')`` shown as the text it holds."""
    text = re.sub(r"bytearray\((b(['\"]).*?\2)\)", lambda m: m.group(1)[1:], str(exc))
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


def file_length(file: BinaryIO) -> int:
    """Bytes left in an open file, for Content-Length."""
    return max(0, os.fstat(file.fileno()).st_size - file.tell())
