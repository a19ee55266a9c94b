"""One client connection: a socket, requests written as bytes, responses read in order.

h11 cannot pipeline as a client, so the two directions are split. A request is serialised
directly when it is plain (a token method, a printable target, one Host field, header fields
that h11 would write unchanged and that do not change the connection's state); anything else is
serialised by a throwaway h11 client, which checks it. Responses are read by a strict parser of
the common case (an HTTP/1.1 status line, valid header fields, a body framed by Content-Length or
none at all); the first response it does not fully vouch for, or the response to a request that
was not plain, hands the connection to one long-lived h11 client for the rest of its life, fed
the bytes not yet consumed. Before each response that client is given the matching request (so
it knows, e.g., that a HEAD response has no body) and its output is thrown away; after each
complete response, ``start_next_cycle`` readies it for the next. Both readers accept exactly the
same responses and report the same failures.

Requests without a body are collected and written together just before the next read, so a
pipelined window goes out in one system call.

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
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

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

if TYPE_CHECKING:
    import h11

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
#: Request fields that change h11's view of the connection: such requests go through h11.
_STATEFUL = frozenset({"connection", "expect", "upgrade", "content-length", "transfer-encoding"})
#: Longest Content-Length h11 accepts (digits).
_CONTENT_LENGTH_MAX_DIGITS = 20

# The grammar h11 checks (RFC 9110/9112), for the direct paths; they accept a subset of h11's.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET = re.compile(r"[\x21-\x7e]+")
_FIELD_VALUE = re.compile(r"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: ((?:[ \t]|[^\x00\s])*))?")
_HEADER_FIELD = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)

_h11: Any = None


def _h11_module() -> Any:
    """h11, imported the first time a request or response needs it."""
    global _h11
    if _h11 is None:
        import h11

        _h11 = h11
    return _h11


class WireRequest:
    """A request as it goes on the wire; ``body`` is bytes or an open file of ``body_length``."""

    __slots__ = ("_plain", "body", "body_length", "headers", "method", "on_sent", "target")

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | BinaryIO | None = None,
        body_length: int = 0,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.body_length = body_length
        #: Called with the number of body bytes just sent (for progress display).
        self.on_sent = on_sent
        self._plain: bytes | bool | None = False

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
    def pipelinable(self) -> bool:
        """Safe methods may be written ahead of earlier responses (RFC 9112 §9.3.2)."""
        return self.method in ("GET", "HEAD")

    def _framed(self) -> bool:
        return self.body is not None or self.method == "POST"

    def plain_head(self) -> bytes | None:
        """The request head exactly as h11 would write it, or None when h11 must handle it."""
        if self._plain is False:
            self._plain = self._serialise()
        assert self._plain is not True
        return self._plain

    def _serialise(self) -> bytes | None:
        method, target = self.method, self.target
        if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
            return None
        host = b""
        lines = []
        for name, value in self.headers:
            if (
                not _TOKEN.fullmatch(name)
                or not _FIELD_VALUE.fullmatch(value)
                or name.lower() in _STATEFUL
            ):
                return None
            line = b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
            if name.lower() == "host":
                if host:
                    return None
                host = line
            else:
                lines.append(line)
        if not host:
            return None
        if self._framed():
            lines.append(b"Content-Length: %d\r\n" % self.body_length)
        start = b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target.encode("ascii"))
        return b"".join([start, host, *lines, b"\r\n"])

    def h11_request(self, *, framing: bool = True) -> h11.Request:
        module = _h11_module()
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self.headers]
        if framing and self._framed():
            headers.append((b"Content-Length", str(self.body_length).encode("ascii")))
        if not framing:
            headers = [(n, v) for n, v in headers if n.lower() not in _FRAMING]
        request: h11.Request = module.Request(
            method=self.method, target=self.target.encode("ascii"), headers=headers
        )
        return request


class ResponseHead:
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
        #: The h11 reader, once a response needed it; from then on it reads every response.
        self._reader: h11.Connection | None = None
        #: Bytes received and not yet consumed by the direct reader.
        self._buffer = b""
        #: Bytes the direct reader received but left to h11, which has not been given them yet.
        self._pending_for_h11 = b""
        #: Request heads not yet written (flushed before any read).
        self._unsent: list[bytes] = []
        #: Body bytes left of the response being read by the direct reader.
        self._body: tuple[int, int] | None = None
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
        if self._broken or self._body is not None:
            return False
        reader = self._reader
        if reader is None:
            return True
        h11 = _h11_module()
        return reader.our_state is h11.IDLE and reader.their_state is h11.IDLE

    def close(self) -> None:
        self._broken = True
        self.sock.close()

    def dropped(self) -> bool:
        """Whether an idle connection was closed by the server (readable while idle = EOF), or
        is unusable because the server sent bytes nobody asked for."""
        if self._broken or self._buffer or self._pending_for_h11:
            return True
        if self._reader is not None and self._reader.trailing_data[0]:
            return True
        import select

        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    # -- sending ---------------------------------------------------------------------------------

    def send(self, request: WireRequest) -> None:
        """Write one request, streaming a file body; it is answered later, in order.

        A request without a body may wait in memory until :meth:`flush` (called before every
        read), so that pipelined requests leave together.
        """
        head = request.plain_head()
        if head is None:
            h11 = _h11_module()
            try:
                head = h11.Connection(h11.CLIENT).send(request.h11_request())
            except h11.LocalProtocolError as exc:
                raise ProtocolError(f"cannot send this request to {self.where}: {exc}") from exc
            assert head is not None
        if request.body is None:
            self._unsent.append(head)
            return
        with self._socket_errors(
            timeout=f"{self.where} did not take the request within {self.timeout:g} s",
            closed=f"{self.where} closed the connection while sending",
        ):
            self._write_unsent()
            self.sock.sendall(head)
            self.bytes_sent += len(head)
            if isinstance(request.body, bytes):
                self.sock.sendall(request.body)
                self._sent(request, len(request.body))
            else:
                self._send_file(request, request.body)

    def flush(self) -> None:
        """Write the requests waiting in memory.

        A failure is not raised here: the server may still have answered earlier requests, and
        the next read tells (a closed socket fails it).
        """
        if not self._unsent:
            return
        with (
            contextlib.suppress(TransportError),
            self._socket_errors(
                timeout=f"{self.where} did not take the request within {self.timeout:g} s",
                closed=f"{self.where} closed the connection while sending",
            ),
        ):
            self._write_unsent()

    def _write_unsent(self) -> None:
        if self._unsent:
            data = b"".join(self._unsent)
            self._unsent.clear()
            self.sock.sendall(data)
            self.bytes_sent += len(data)

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

    def _recv(self, started: bool) -> bytes:
        """The next bytes from the socket (b"" at EOF), with the client's errors."""
        self.flush()
        waited = (
            f"{self.where} stopped sending mid-response for {self.timeout:g} s"
            if started
            else f"no response from {self.where} within {self.timeout:g} s"
        )
        with self._socket_errors(timeout=waited, closed=f"{self.where} reset the connection"):
            data = self.sock.recv(CHUNK_SIZE)
        if not data:
            self._eof = True
        self.bytes_received += len(data)
        return data

    def _next_event(self, started: bool) -> Any:
        h11 = _h11_module()
        reader = self._reader
        assert reader is not None
        while True:
            try:
                event = reader.next_event()
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
            data = self._recv(started)
            if not data:
                if not started and not reader.trailing_data[0]:
                    self._broken = True
                    raise ConnectionClosed(f"{self.where} closed the connection without answering")
                if started:
                    self._broken = True
            reader.receive_data(data)

    def receive_head(self, request: WireRequest) -> ResponseHead:
        """The status line and header fields of the response to ``request`` (the next one)."""
        self.flush()
        if self._reader is None and request.plain_head() is not None:
            while True:
                head = self._direct_head(request)
                if head is not None:
                    return head
                if self._reader is not None:
                    break
                data = self._recv(started=False)
                if not data:
                    if not self._buffer:
                        self._broken = True
                        raise ConnectionClosed(
                            f"{self.where} closed the connection without answering"
                        )
                    break
                self._buffer += data
        return self._h11_head(request)

    def has_buffered(self) -> bool:
        """Whether bytes of the next response were already received (reading them will not wait
        for the server to start answering)."""
        return bool(self._buffer)

    def _direct_head(self, request: WireRequest) -> ResponseHead | None:
        """The head parsed from the buffer; None when more bytes are needed or h11 must read.

        Only a response h11 would read the same way is taken: an HTTP/1.1 final status, valid
        header fields, no Transfer-Encoding, no ``Connection: close``, and a body framed by one
        Content-Length (or none: HEAD, 204, 304). Anything else goes to h11 (``_reader`` set).
        """
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_SIZE)
        if end < 0:
            if len(buffer) > MAX_HEAD_SIZE or not b"HTTP/1.1 ".startswith(buffer[:9]):
                self._start_h11()
            return None
        lines = buffer[:end].split(b"\r\n")
        status_match = _STATUS_LINE.fullmatch(lines[0])
        if status_match is None:
            self._start_h11()
            return None
        headers: list[tuple[str, str]] = []
        length: int | None = None
        for line in lines[1:]:
            field = _HEADER_FIELD.fullmatch(line)
            if field is None:
                self._start_h11()
                return None
            name = field[1].lower()
            value = field[2]
            if name == b"content-length":
                if (
                    length is not None
                    or not value.isdigit()
                    or len(value) > _CONTENT_LENGTH_MAX_DIGITS
                ):
                    self._start_h11()
                    return None
                length = int(value)
            elif name == b"transfer-encoding" or (
                name == b"connection"
                and b"close" in [v.strip(b" \t").lower() for v in value.split(b",")]
            ):
                self._start_h11()
                return None
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        status = int(status_match[1])
        if request.method == "HEAD" or status in _NO_BODY_STATUSES:
            length = 0
        elif length is None:
            # Close-delimited: h11 reads it.
            self._start_h11()
            return None
        reason = status_match[2] or b""
        head = ResponseHead(status, reason.decode("latin-1"), headers, "1.1")
        self._buffer = buffer[end + 4 :]
        self._body = (length, length)
        self._check_announced_size(request, head)
        return head

    def _start_h11(self) -> None:
        """Hand the connection to h11 for the rest of its life, with the unconsumed bytes."""
        h11 = _h11_module()
        self._reader = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        pending, self._buffer = self._buffer, b""
        self._pending_for_h11 = pending

    def _h11_head(self, request: WireRequest) -> ResponseHead:
        h11 = _h11_module()
        if self._reader is None:
            self._start_h11()
        reader = self._reader
        assert reader is not None
        reader.send(request.h11_request(framing=False))
        reader.send(h11.EndOfMessage())
        pending = self._pending_for_h11
        if pending or self._eof:
            self._pending_for_h11 = b""
            reader.receive_data(pending)
            if self._eof and not reader.trailing_data[1]:
                reader.receive_data(b"")
        # h11 stops an incomplete head at MAX_HEAD_SIZE, but takes a longer one that arrives whole
        # in one read; counting what it consumed makes the limit exact.
        buffered = len(reader.trailing_data[0]) - self.bytes_received
        while True:
            event = self._next_event(started=False)
            consumed = buffered + self.bytes_received - len(reader.trailing_data[0])
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
        # The readers have checked that Content-Length is digits, and that repeated values agree.
        if lengths and int(lengths[0]) > self.max_body_size:
            self._broken = True
            raise ResponseTooLarge(
                f"{self.where} announced a body of {human_size(int(lengths[0]))}, more than the"
                f" limit of {human_size(self.max_body_size)}"
            )

    def iter_body(self) -> Iterator[bytes]:
        """The body of the response whose head was just read; readies the next response."""
        if self._body is not None:
            return self._direct_body()
        return self._h11_body()

    def _direct_body(self) -> Iterator[bytes]:
        assert self._body is not None
        length, remaining = self._body
        while remaining:
            buffer = self._buffer
            if not buffer:
                buffer = self._recv(started=True)
                if not buffer:
                    self._broken = True
                    raise ConnectionClosed(
                        f"{self.where} closed the connection mid-response (peer closed connection"
                        " without sending complete message body (received"
                        f" {length - remaining} bytes, expected {length}))"
                    )
            if len(buffer) <= remaining:
                self._buffer = b""
                chunk = buffer
            else:
                chunk, self._buffer = buffer[:remaining], buffer[remaining:]
            remaining -= len(chunk)
            self._body = (length, remaining)
            yield chunk
        self._body = None
        self.answered += 1

    def _h11_body(self) -> Iterator[bytes]:
        h11 = _h11_module()
        reader = self._reader
        assert reader is not None
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
        if reader.our_state is h11.DONE and reader.their_state is h11.DONE:
            reader.start_next_cycle()

    def fileno(self) -> int:
        return self.sock.fileno()


def _reason(exc: Exception) -> str:
    """h11's explanation, shortened, with ``bytearray(b'...')`` shown as the text it holds."""
    text = re.sub(r"bytearray\((b(['\"]).*?\2)\)", lambda m: m.group(1)[1:], str(exc))
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


def file_length(file: BinaryIO) -> int:
    """Bytes left in an open file, for Content-Length."""
    return max(0, os.fstat(file.fileno()).st_size - file.tell())
