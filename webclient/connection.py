"""One client connection: a socket, requests written as bytes, responses read by h11.

h11 cannot pipeline as a client, so the two directions are split. Each request is serialised by a
throwaway h11 client (which checks it) and written straight to the socket, body bytes after it.
One long-lived h11 client reads the responses in order: before each, it is given the matching
request (so it knows, e.g., that a HEAD response has no body) and its output is thrown away; after
each complete response, ``start_next_cycle`` readies it for the next.

Rules: socket, timeout and h11 errors leave as :mod:`webclient.errors` exceptions; a server that
closes before sending a byte of a response raises :class:`ConnectionClosed` (the caller may retry
an idempotent request), anything later is a failure of that response; after a response that
announced a close, or any failure, the connection is not reused.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import h11

from .errors import (
    ConnectionClosed,
    ConnectionRefused,
    ConnectTimeout,
    LocalFileError,
    ProtocolError,
    ReadTimeout,
    ResolveError,
    TransportError,
)

#: Bytes asked of the socket per read, and sent per write of a file body.
CHUNK_SIZE = 64 * 1024
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

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = open_socket(host, port, timeout)
        self._reader = h11.Connection(h11.CLIENT)
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
        head = h11.Connection(h11.CLIENT).send(request.h11_request())
        assert head is not None
        try:
            self.sock.sendall(head)
            self.bytes_sent += len(head)
            if isinstance(request.body, bytes):
                self.sock.sendall(request.body)
                self._sent(request, len(request.body))
            elif request.body is not None:
                self._send_file(request, request.body)
        except TimeoutError as exc:
            self._broken = True
            raise ReadTimeout(
                f"{self.where} did not take the request within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            self._broken = True
            raise ConnectionClosed(f"{self.where} closed the connection while sending") from exc

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
                        f"{self.where} closed the connection mid-response ({exc})"
                    ) from exc
                raise ProtocolError(f"{self.where} sent an invalid response: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = self.sock.recv(CHUNK_SIZE)
            except TimeoutError as exc:
                self._broken = True
                raise ReadTimeout(
                    f"no response from {self.where} within {self.timeout:g} s"
                ) from exc
            except OSError as exc:
                self._broken = True
                raise ConnectionClosed(f"{self.where} reset the connection") from exc
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
        while True:
            event = self._next_event(started=False)
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                return ResponseHead(
                    status=event.status_code,
                    reason=event.reason.decode("latin-1"),
                    headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers],
                    http_version=event.http_version.decode("ascii"),
                )
            self._broken = True
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionClosed(f"{self.where} closed the connection without answering")
            raise ProtocolError(f"{self.where} sent {type(event).__name__} instead of a response")

    def iter_body(self) -> Iterator[bytes]:
        """The body of the response whose head was just read; readies the next response."""
        while True:
            event = self._next_event(started=True)
            if isinstance(event, h11.Data):
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


def file_length(file: BinaryIO) -> int:
    """Bytes left in an open file, for Content-Length."""
    return max(0, os.fstat(file.fileno()).st_size - file.tell())
