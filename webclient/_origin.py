"""One client connection: a socket, requests written as bytes, responses read in order.

h11 cannot pipeline as a client, so the two directions are split. Each request is serialised once
and the bytes are kept with it, so a request sent again goes out exactly the same: a plain GET or
HEAD by the fast path (:mod:`webclient._plainhead`, byte for byte what h11 writes), any other by a
throwaway h11 client (which checks it). Responses are read in order from the connection's input
buffer: a plain one (HTTP/1.1, ``Content-Length`` or no body) by the fast path, any other by one
long-lived h11 client per connection, made when first needed. Before each response it reads, h11
is given the matching request (so it knows, e.g., that a HEAD response has no body) and its output
is thrown away; it is handed every byte received from then on, and after a complete response,
``start_next_cycle`` readies it for the next; once it is idle with nothing buffered, the fast path
reads again. There is no third parser of responses. The h11 side lives in
:mod:`webclient._h11reader`, imported the first time a connection needs it.

The connection's state is one :class:`OriginState`, changed only by
:meth:`OriginConnection._set_state` (``OPEN`` → ``CLOSING`` when the server announced it closes
after the response being read, any state → ``BROKEN`` on a failure, through
:meth:`OriginConnection.fail`, the one failure helper); who reads the input is one
:class:`ReadMode` (``PLAIN``: the fast path, ``H11``: the h11 reader).

Requests without a body are collected and written together just before the next read, so a
pipelined window goes out in one system call; the socket is read in large chunks, so the responses
to such a window usually arrive in one read and are taken from the buffer one after the other.

Rules: socket, timeout and h11 errors leave as :mod:`webclient.errors` exceptions; a server that
closes before sending a byte of a response raises :class:`ConnectionClosed` (the caller may retry
an idempotent request), anything later is a failure of that response; a response head larger than
:data:`MAX_HEAD_SIZE` is a :class:`ProtocolError`, and a body larger than ``max_body_size`` is a
:class:`ResponseTooLarge`, raised before reading the body when its Content-Length says so, else as
soon as it grows past the limit, so a hostile server cannot fill memory or disk; after a response
that announced a close, one framed by both Transfer-Encoding and Content-Length, or any failure,
the connection is not reused; Transfer-Encoding in an HTTP/1.0 response is refused (RFC 9112
§6.1: faulty framing). Each response is bounded in time by :mod:`webclient._deadline` (from its
first byte: ``max_time``, and a minimum rate over each ``timeout`` window). Over TLS (an
``https`` origin, :mod:`webclient._https`), bytes the TLS layer has already decrypted count as
received (``select`` cannot see them), and a readable socket that yields no data (a TLS 1.3
session ticket) is not taken for the server closing an idle connection.
"""

from __future__ import annotations

import contextlib
import enum
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ._deadline import ResponseDeadline
from ._models import ResponseHead
from ._plainhead import parse_plain_response_head
from ._shared.grammar import HEAD_END, NO_BODY_STATUSES
from ._wire import WireRequest
from .config import DEFAULT_MAX_BODY_SIZE, MIN_RATE, human_size
from .errors import (
    ConnectionClosed,
    ConnectionRefused,
    ConnectTimeout,
    LocalFileError,
    ProtocolError,
    ReadTimeout,
    ResolveError,
    ResponseTimeout,
    ResponseTooLarge,
    TransportError,
    WebClientError,
)

if TYPE_CHECKING:
    import ssl

    from ._h11reader import H11Reader

#: Bytes asked of the socket per read, and sent per write of a file body.
CHUNK_SIZE = 64 * 1024
#: Bytes asked of the socket per read of a plain body with that much still to come: a quarter of
#: the reads (and file writes) of CHUNK_SIZE for a large file, each copied once (8 x 16 MiB over
#: the 20 ms delay proxy: 0.71x curl's speed before, 0.80x after, on a loaded machine).
BODY_CHUNK_SIZE = 256 * 1024
#: Largest status line plus header fields accepted; servers rarely send more than a few KiB, and
#: without a limit a server could make the client buffer an endless head.
MAX_HEAD_SIZE = 64 * 1024

_E = TypeVar("_E", bound=WebClientError)


class OriginState(enum.Enum):
    """Whether the connection may carry another request after the response being read."""

    OPEN = "open"
    #: The server announced it closes after the response being read (or its framing cannot be
    #: trusted past it): that response is read, nothing more is sent.
    CLOSING = "closing"
    #: Failed or closed: never used again.
    BROKEN = "broken"


class ReadMode(enum.Enum):
    """Who reads the input: the fast path, or h11 (until it is idle and empty again)."""

    PLAIN = "plain"
    H11 = "h11"


def _describe(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket, or one of the transport errors with a clear sentence."""
    where = _describe(host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    except UnicodeError as exc:  # IDNA: an empty or overlong label, a lone surrogate
        raise ResolveError(f"cannot resolve host {host!r}: not a valid host name") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionRefused(f"connection refused by {where}") from exc
    except TimeoutError as exc:
        raise ConnectTimeout(f"no connection to {where} within {timeout:g} s") from exc
    except OSError as exc:
        raise TransportError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class OriginConnection:
    """A keep-alive connection to one server; one thread uses it at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        tls: ssl.SSLContext | None = None,
        max_time: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_body_size = max_body_size
        self._deadline = ResponseDeadline(window=timeout, min_rate=MIN_RATE, max_time=max_time)
        self.sock = open_socket(host, port, timeout)
        #: "https" when the socket speaks TLS (the pool keeps the two kinds apart).
        self.scheme = "http"
        if tls is not None:
            from ._https import wrap

            self.sock = wrap(self.sock, tls, host, self.where)
            self.scheme = "https"
        #: The one state machine that reads every response h11 frames on this connection, made
        #: the first time one needs it; between such responses it is idle and empty.
        self._h11: H11Reader | None = None
        self._state = OriginState.OPEN
        #: H11 while h11 holds the input; PLAIN: received bytes gather in ``_inbuf`` and the
        #: fast path reads plain responses from it.
        self._mode = ReadMode.PLAIN
        self._inbuf = bytearray()
        #: Body bytes still to come of the plain response being read, else None.
        self._plain_remaining: int | None = None
        #: Request heads not yet written (flushed before any read).
        self._unsent: list[bytes] = []
        #: Responses completely read on this connection.
        self.answered = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._eof = False

    @property
    def where(self) -> str:
        return _describe(self.host, self.port)

    @property
    def state(self) -> OriginState:
        return self._state

    def _set_state(self, state: OriginState) -> None:
        """The one place the state changes; a broken connection stays broken."""
        if self._state is not OriginState.BROKEN:
            self._state = state

    def fail(self, error: _E) -> _E:
        """The connection cannot be used again; returns ``error`` for the caller to raise."""
        self._set_state(OriginState.BROKEN)
        return error

    @property
    def _reader(self) -> H11Reader:
        reader = self._h11
        if reader is None:
            from ._h11reader import H11Reader

            reader = self._h11 = H11Reader(self, MAX_HEAD_SIZE)
        return reader

    @property
    def reusable(self) -> bool:
        """Whether another request may be sent: alive, between responses, not closing."""
        if self._state is not OriginState.OPEN:
            return False
        if self._mode is ReadMode.PLAIN:
            return self._plain_remaining is None
        return self._reader.idle

    def close(self) -> None:
        self._set_state(OriginState.BROKEN)
        self.sock.close()

    def dropped(self) -> bool:
        """Whether an idle connection was closed by the server (readable while idle = EOF), or
        is unusable because the server sent bytes nobody asked for."""
        if self._state is OriginState.BROKEN or self.has_buffered():
            return True
        return self._readable()

    def _readable(self) -> bool:
        """Whether the socket has bytes or an end of stream waiting (or cannot be polled)."""
        import select

        if self.scheme == "https" and self.sock.pending():  # type: ignore[attr-defined]
            return True  # decrypted already: select() on the socket cannot see these bytes
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if readable and self.scheme == "https":
            return self._tls_readable()
        return bool(readable)

    def _tls_readable(self) -> bool:
        """Whether a readable TLS socket holds application data or its end.

        A TLS 1.3 server sends session tickets after the handshake: the socket is readable but
        there is nothing to read. One read without waiting tells; what it returns joins the input
        (it is the start of whatever the server sends next).
        """
        import ssl

        self.sock.setblocking(False)
        try:
            data = self.sock.recv(CHUNK_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self._eof = True
        elif self._mode is ReadMode.H11:
            self._reader.receive(data)
        else:
            self._inbuf += data
        self.bytes_received += len(data)
        return True

    # -- sending ---------------------------------------------------------------------------------

    def send(self, request: WireRequest) -> None:
        """Write one request, streaming a file body; it is answered later, in order.

        A request without a body may wait in memory until :meth:`flush` (called before every
        read), so that pipelined requests leave together.
        """
        try:
            head = request.wire_head()
        except ProtocolError as exc:  # h11 refused it: nothing was written
            raise ProtocolError(f"cannot send this request to {self.where}: {exc}") from exc
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
            raise self.fail(ReadTimeout(timeout)) from exc
        except OSError as exc:
            raise self.fail(ConnectionClosed(closed)) from exc

    def _sent(self, request: WireRequest, count: int) -> None:
        self.bytes_sent += count
        request.body_sent += count
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

    def recv(self, started: bool, size: int = 0) -> bytes:
        """The next bytes from the socket (b"" at EOF), at most ``size`` (else CHUNK_SIZE), with
        the client's errors."""
        if self._unsent:
            self.flush()
        deadline = self._deadline
        bounded = deadline.max_time is not None
        try:
            if bounded:
                self.sock.settimeout(deadline.read_timeout(self.timeout, self.where))
            data = self.sock.recv(size or CHUNK_SIZE)
            if bounded:
                self.sock.settimeout(self.timeout)
            deadline.received(len(data), self.where)
        except ResponseTimeout as exc:
            self.fail(exc)
            raise
        except TimeoutError as exc:
            if deadline.expired():
                raise self.fail(deadline.too_long(self.where)) from exc
            raise self.fail(
                ReadTimeout(
                    f"{self.where} stopped sending mid-response for {self.timeout:g} s"
                    if started
                    else f"no response from {self.where} within {self.timeout:g} s"
                )
            ) from exc
        except OSError as exc:
            raise self.fail(ConnectionClosed(f"{self.where} reset the connection")) from exc
        if not data:
            self._eof = True
        self.bytes_received += len(data)
        return data

    def receive_head(self, request: WireRequest) -> ResponseHead:
        """The status line and header fields of the response to ``request`` (the next one)."""
        if self._unsent:
            self.flush()
        self._deadline.begin(buffered=self.has_buffered())
        if self._mode is ReadMode.PLAIN:
            plain = self._plain_head(request)
            if plain is not None:
                return plain
        else:
            self._reader.start(request._for_reader or request.h11_request(framing=False))
        head = self._reader.read_head()
        self._check_framing(head)
        if request.method != "HEAD" and head.status not in NO_BODY_STATUSES:
            self._check_announced_size(head)
        return head

    def _plain_head(self, request: WireRequest) -> ResponseHead | None:
        """The next response head read by the fast path, or ``None`` after handing the input
        (with the request it answers) to h11 because the response is not plain."""
        inbuf = self._inbuf
        if request.plain:
            scanned = 0  # the blank line is not in inbuf[:scanned]: a trickled head costs O(n)
            while True:
                if inbuf and inbuf[0] < 0x21:
                    break  # h11 refuses at once what cannot start a status line
                match = HEAD_END.search(inbuf, scanned)
                if match is not None:
                    end = match.end()
                    if end > MAX_HEAD_SIZE:
                        raise self.fail(self.head_too_large())
                    plain = parse_plain_response_head(
                        bytes(inbuf[:end]), head_request=request.method == "HEAD"
                    )
                    if plain is None:
                        break
                    del inbuf[:end]
                    head = ResponseHead(plain.status, plain.reason, plain.fields, "1.1")
                    if plain.body_length:
                        self._check_announced_size(head)
                    self._plain_remaining = plain.body_length
                    if plain.close:
                        self._set_state(OriginState.CLOSING)
                    return head
                if len(inbuf) > MAX_HEAD_SIZE:
                    raise self.fail(self.head_too_large())
                if self._eof:
                    break
                scanned = max(0, len(inbuf) - 2)  # the end is at most 3 bytes: LF CR LF
                data = self.recv(started=False)
                if not data and not inbuf:
                    raise self.fail(
                        ConnectionClosed(f"{self.where} closed the connection without answering")
                    )
                inbuf += data
        self._hand_to_h11(request)
        return None

    def _hand_to_h11(self, request: WireRequest) -> None:
        """h11 reads the next response: it learns the request, then takes everything received."""
        self._mode = ReadMode.H11
        inbuf = self._inbuf
        data = bytes(inbuf)
        inbuf.clear()
        self._reader.start(
            request._for_reader or request.h11_request(framing=False), data, eof=self._eof
        )

    def _plain_body(self) -> Iterator[bytes]:
        """The body of the plain response whose head was just read."""
        length = self._plain_remaining
        assert length is not None
        remaining = length
        inbuf = self._inbuf
        while remaining:
            if inbuf:
                chunk = bytes(inbuf[:remaining])
                del inbuf[: len(chunk)]
            else:
                # Straight from the socket, without passing through the buffer: a large body
                # is then copied once, in reads as large as BODY_CHUNK_SIZE.
                chunk = self.recv(started=True, size=min(remaining, BODY_CHUNK_SIZE))
                if not chunk:
                    # In h11's words, as when h11 reads the response.
                    raise self.fail(
                        ConnectionClosed(
                            f"{self.where} closed the connection mid-response (peer closed"
                            " connection without sending complete message body (received"
                            f" {length - remaining} bytes, expected {length}))"
                        )
                    )
            remaining -= len(chunk)
            yield chunk
        self._plain_remaining = None
        self.answered += 1

    def response_complete(self) -> bool:
        """Whether the rest of the plain response whose head was just read has already been
        received, and the server keeps the connection open after it."""
        remaining = self._plain_remaining
        return (
            remaining is not None
            and self._state is OriginState.OPEN
            and self._mode is ReadMode.PLAIN
            # More than the response was sent unasked (nothing else is in flight), and a
            # readable socket means the server closed or sent more: dropped() refuses both.
            and len(self._inbuf) == remaining
            and not self._readable()
        )

    def has_buffered(self) -> bool:
        """Whether bytes of the next response were already received (reading them will not wait
        for the server to start answering)."""
        if self.scheme == "https" and self.sock.pending():  # type: ignore[attr-defined]
            return True  # decrypted bytes wait in the TLS layer: the next read will not wait
        if self._mode is ReadMode.PLAIN:
            return bool(self._inbuf)
        return self._reader.buffered

    def head_too_large(self) -> ProtocolError:
        return ProtocolError(
            f"{self.where} sent a response head larger than {human_size(MAX_HEAD_SIZE)}"
        )

    def _check_framing(self, head: ResponseHead) -> None:
        """Framing another reader could take differently ends the connection (RFC 9112 §6.1).

        With both Transfer-Encoding and Content-Length, the first frames the body (as h11 reads
        it) but a proxy or server may have used the second, so what follows cannot be trusted:
        the connection closes after this response. Transfer-Encoding in an HTTP/1.0 response is
        faulty framing: the response is refused and the connection closed.
        """
        names = {name for name, _ in head.headers}
        if "transfer-encoding" not in names:
            return
        if head.http_version == "1.0":
            raise self.fail(
                ProtocolError(
                    f"{self.where} sent Transfer-Encoding in an HTTP/1.0 response (faulty framing)"
                )
            )
        if "content-length" in names:
            self._set_state(OriginState.CLOSING)

    def _check_announced_size(self, head: ResponseHead) -> None:
        """Refuse a body whose Content-Length is over the limit, before reading any of it."""
        if self._state is OriginState.CLOSING and any(
            name == "transfer-encoding" for name, _ in head.headers
        ):
            return  # the body is chunked: its Content-Length means nothing
        for name, value in head.headers:
            if name == "content-length":
                # h11 has checked that Content-Length is digits, and that repeated values agree.
                if int(value) > self.max_body_size:
                    raise self.fail(
                        ResponseTooLarge(
                            f"{self.where} announced a body of {human_size(int(value))}, more"
                            f" than the limit of {human_size(self.max_body_size)}"
                        )
                    )
                return

    def iter_body(self) -> Iterator[bytes]:
        """The body of the response whose head was just read; readies the next response."""
        if self._plain_remaining is not None:
            yield from self._plain_body()
            return
        reader = self._reader
        yield from reader.read_body(self.max_body_size)
        self.answered += 1
        if reader.next_cycle():
            self._mode = ReadMode.PLAIN  # idle and empty: the fast path reads what comes next

    def fileno(self) -> int:
        return self.sock.fileno()
