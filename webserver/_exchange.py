"""The request/response loop run by a worker on a connection that has bytes to read.

Call flow, for one turn of a worker::

    serve_ready(conn)
      ├── conn.receive()                 bytes the selector saw arrive
      └── loop while a complete request is buffered
            plain mode (h11 idle and empty, input in conn.inbuf):
            ├── parse_plain_request()    a bodiless GET/HEAD, or hand every byte to h11
            └── _answer_plain()          app(request); a known-length response is written as
                                         it is, any other is framed by h11 (late hand-over)
            h11 mode:
            ├── _build_request()         target → path/query; body as a pull stream
            ├── app(request)             the router → a handler method → Response
            ├── _finish_body()           drain a small unread body, or decide to close
            ├── _send_response()         head + body into the output buffer (file: sendfile)
            └── start_next_cycle()       keep-alive; back to plain mode once h11 is empty
    → PARK (flushed; back to the selector) or CLOSE

Rules: every request gets exactly one response, in order; an error the client caused is a 4xx
with ``Connection: close`` when the connection cannot be trusted afterwards; a handler that raises
gets a 500 and the traceback in the error log; no exception leaves this module.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import select
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import BinaryIO, cast

import h11

from ._chunked import BodyFramingError, start_body_check
from ._connection import Connection
from ._fastpath import PlainRequest, parse_plain_request, plain_response_head
from .accesslog import format_access_line
from .config import ServerConfig
from .errors import BadRequest, ClientDisconnected, HTTPError, RequestTimeout
from .framing import HeadLimits, check_head_prefix, check_request_head, find_head_end
from .headers import Headers
from .httpdate import http_date_now
from .paths import decode_path, split_target
from .proxy import client_address
from .request import Request, RequestBody
from .response import Response

access_log = logging.getLogger("webserver.access")
error_log = logging.getLogger("webserver.error")

App = Callable[[Request], Response]

#: Milliseconds a worker waits for the next request on a connection before parking it (see
#: ``_next_request_soon``); measured: 0.1 ms catches fewer, beyond 0.5 ms gains nothing, and poll
#: counts whole milliseconds.
NEXT_REQUEST_WAIT_MS = 1
#: An unread request body up to this size is read and discarded so the connection stays usable;
#: a larger one closes the connection instead of wasting time on bytes nobody wants.
DRAIN_LIMIT = 64 * 1024

_REASON_TEXT = {status.value: status.phrase for status in HTTPStatus}
_REASONS = {code: phrase.encode("ascii") for code, phrase in _REASON_TEXT.items()}
_NO_BODY_STATUSES = frozenset({204, 304})
#: A bytes body up to this size is joined to its head for one write; a larger one is queued as
#: it is rather than copied.
_JOIN_LIMIT = 16 * 1024


class Outcome(enum.Enum):
    """What the worker does with the connection after a turn."""

    PARK = "park"  #: between requests, output flushed: the selector waits for more bytes
    CLOSE = "close"  #: finished or broken: close it


class _Exchange:
    """Per-connection context for one worker turn: the config, the app, and the stop signal."""

    __slots__ = (
        "app",
        "config",
        "conn",
        "limits",
        "others_waiting",
        "request",
        "server_name",
        "stopping",
    )

    def __init__(
        self,
        conn: Connection,
        app: App,
        config: ServerConfig,
        stopping: Callable[[], bool],
        others_waiting: Callable[[], bool],
    ) -> None:
        self.conn = conn
        self.app = app
        self.config = config
        self.stopping = stopping
        self.others_waiting = others_waiting
        self.server_name = config.server_name
        #: The request being answered, for its access line (its client may be a forwarded one).
        self.request: Request | None = None
        self.limits = HeadLimits(
            max_request_line=config.max_request_line,
            max_head_size=config.max_head_size,
            max_header_count=config.max_header_count,
        )


def serve_ready(
    conn: Connection,
    app: App,
    config: ServerConfig,
    stopping: Callable[[], bool],
    others_waiting: Callable[[], bool] = lambda: True,
) -> Outcome:
    """Answer every complete request the connection has; never raises.

    ``stopping`` says the server is stopping; ``others_waiting`` that other connections wait
    for a worker, in which case this one is parked as soon as it has nothing buffered.
    """
    exchange = _Exchange(conn, app, config, stopping, others_waiting)
    try:
        conn.receive(wait=False)
        return _loop(exchange)
    except BlockingIOError:
        return Outcome.PARK  # woken with nothing to read after all: wait again
    except (OSError, ClientDisconnected):
        return Outcome.CLOSE
    except Exception:
        error_log.exception("unexpected error on connection from %s", conn.client[0])
        return Outcome.CLOSE


def _loop(ex: _Exchange) -> Outcome:
    conn = ex.conn
    while True:
        if not conn.h11_engaged:
            # Plain mode: h11 is idle and empty, the input is in conn.inbuf.
            inbuf = conn.inbuf
            blank = False
            while inbuf[:2] == b"\r\n":
                # RFC 9112 §2.2: ignore empty lines before a request line (some clients send one
                # after a POST body). They do not extend the keep-alive deadline (see _wait), so
                # a trickle of them cannot hold the connection open.
                del inbuf[:2]
                blank = True
                conn.inbuf_scanned = 0
            end = find_head_end(inbuf, conn.inbuf_scanned)
            if inbuf[:1] and inbuf[0] < 0x21 and inbuf != b"\r":
                # h11 refuses at once what cannot start a request line (a TLS handshake sent to
                # a plain-HTTP port), without waiting for a whole head.
                conn.engage_h11()
            elif end >= 0:
                plain = parse_plain_request(bytes(inbuf[:end]), ex.limits)
                if plain is not None:
                    conn.head_started = None
                    if not _answer_plain(ex, plain, end):
                        return Outcome.CLOSE
                    conn.requests += 1
                    conn.idle_since = time.monotonic()
                    continue
                conn.engage_h11()
            elif conn.eof or len(inbuf) > ex.limits.max_head_size:
                conn.engage_h11()  # h11 and the strict checks say what is wrong, if anything
            elif _head_prefix_refused(inbuf, conn.inbuf_scanned, ex.limits):
                conn.engage_h11()  # framing hook: h11 mode answers it (_check_pending_head)
            else:
                conn.inbuf_scanned = max(0, len(inbuf) - 2)
                lone_cr = inbuf == b"\r"  # perhaps the start of another empty line
                partial = bool(inbuf) and not lone_cr
                outcome = _wait(ex, partial_head=partial, blank_only=blank or lone_cr)
                if outcome is None:
                    continue
                return outcome
        # h11 mode. It only ever starts a request from what plain mode handed it (empty lines
        # already skipped), and hands what follows back at the end of the exchange.
        partial_head = False
        if conn.h11.their_state is h11.IDLE:
            pending = conn.h11.trailing_data[0]
            if pending:
                try:
                    partial_head = _check_pending_head(pending, ex.limits)
                except HTTPError as exc:
                    conn.linger = True
                    _send_error(ex, exc.status, exc.detail)
                    return Outcome.CLOSE
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            _send_error(ex, exc.error_status_hint, str(exc))
            return Outcome.CLOSE
        if event is h11.NEED_DATA:
            if not conn.has_input():
                conn.release_h11()  # (with a partial head held, h11 keeps it)
            if not conn.h11_engaged:
                continue
            outcome = _wait(ex, partial_head=partial_head)
            if outcome is None:
                continue
            return outcome
        if type(event) is not h11.Request:
            # ConnectionClosed, or PAUSED after a close-delimited exchange.
            return Outcome.CLOSE
        conn.head_started = None
        try:  # framing hook: a chunked body is checked before h11 reads any of it
            conn.body_check = start_body_check(event.headers, conn.h11.trailing_data[0], ex.limits)
        except BodyFramingError as exc:
            conn.linger = True
            _send_error(ex, exc.status, exc.detail)
            return Outcome.CLOSE
        if not _answer(ex, event):
            return Outcome.CLOSE
        conn.requests += 1
        conn.idle_since = time.monotonic()
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.release_h11()
        else:
            return Outcome.CLOSE


def _wait(ex: _Exchange, *, partial_head: bool, blank_only: bool = False) -> Outcome | None:
    """Nothing complete to answer: ``None`` if more bytes came at once, else park or close.

    ``blank_only``: only empty lines came since the last wait. They are not waited for (a
    stream of them must not keep a worker busy) and, like silence, leave the keep-alive
    deadline where it was: it runs from the last answered request.
    """
    conn = ex.conn
    if ex.stopping() and not partial_head:
        return Outcome.CLOSE
    conn.flush()
    if not partial_head and not blank_only and not ex.others_waiting() and _next_request_soon(conn):
        return None
    if partial_head:
        # The head deadline runs from the head's first byte and is never extended.
        if conn.head_started is None:
            conn.head_started = time.monotonic()
        conn.deadline = conn.head_started + ex.config.header_timeout
    else:
        conn.head_started = None
        conn.deadline = conn.idle_since + ex.config.keep_alive_timeout
    return Outcome.PARK


def _next_request_soon(conn: Connection) -> bool:
    """Wait a moment for the client's next request before handing the connection back.

    A keep-alive client usually sends its next request right after reading a response; catching
    it here saves parking, a wake-up of the selector thread and a hand-over to a worker, which
    cost more than the wait. Only done while no other connection waits for a worker (so no
    client can monopolise one), and bounded by ``NEXT_REQUEST_WAIT_MS``, so a quiet client holds
    no thread for longer than that.
    """
    poll = select.poll()  # not select.select: descriptors above 1023 are common here
    poll.register(conn.sock, select.POLLIN)
    if not poll.poll(NEXT_REQUEST_WAIT_MS):
        return False
    try:
        conn.receive(wait=False)
    except BlockingIOError:
        return False
    return True


def _check_pending_head(pending: bytes, limits: HeadLimits) -> bool:
    """Check the next request head in ``pending``; True if it has not fully arrived yet."""
    end = find_head_end(pending)
    if end < 0:
        check_head_prefix(pending, 0, limits)  # framing hook: refused at its first bad byte
        return True
    check_request_head(pending[:end], limits)
    return False


def _head_prefix_refused(inbuf: bytearray, checked: int, limits: HeadLimits) -> bool:
    """True if the head arriving in ``inbuf`` is already invalid (framing hook)."""
    try:
        check_head_prefix(inbuf, checked, limits)
    except HTTPError:
        return True
    return False


def answer_overload(conn: Connection, config: ServerConfig, status: int, detail: str) -> None:
    """Answer a connection the server has no room for, without blocking, then close it.

    Runs on the selector thread: the socket is made non-blocking and whatever does not fit in
    the kernel's buffer is dropped; the client learns why through the status and ``Retry-After``.
    """
    headers = [("Retry-After", "1")] if status == 503 else []
    with contextlib.suppress(OSError, h11.LocalProtocolError, _InvalidResponse):
        conn.sock.setblocking(False)
        _send_response(
            conn,
            config.server_name,
            Response.error(status, detail, headers=headers),
            close=True,
            head_only=False,
        )
        conn.flush()
    conn.close()


def _send_error(ex: _Exchange, status: int, detail: str) -> None:
    """Answer a request we could not parse, if h11 still lets us, then the caller closes."""
    conn = ex.conn
    if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    response = Response.error(status, detail)
    sent = _send_response(conn, ex.server_name, response, close=True, head_only=False)
    _log_access(ex, None, "", "", response.status, sent)
    conn.flush()


def _request_body(conn: Connection, headers: Headers) -> RequestBody:
    """A pull stream over the body h11 is about to deliver (h11 has checked its framing)."""
    length_text = headers.get("content-length")
    if headers.get("transfer-encoding") is None and length_text is None:
        # h11 still owes us the EndOfMessage of an absent body; take it now.
        _read_body_chunk(conn)
        return RequestBody.empty()
    length = int(length_text) if length_text is not None and length_text.isdigit() else None
    return RequestBody(lambda: _read_body_chunk(conn), length)


def _build_request(
    ex: _Exchange, event: h11.Request, headers: Headers, body: RequestBody
) -> Request:
    target = event.target.decode("latin-1")
    raw_path, query = split_target(target)
    return Request(
        method=event.method.decode("ascii"),
        target=target,
        path=decode_path(raw_path),
        query=query,
        headers=headers,
        http_version=event.http_version.decode("ascii"),
        client=ex.conn.client,
        body=body,
    )


def _read_body_chunk(conn: Connection) -> bytes:
    """The next piece of the current request's body, or ``b""`` at its end."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if conn.h11._receive_buffer_closed:  # h11 exposes no other signal
                raise ClientDisconnected(str(exc)) from None
            raise BadRequest(f"malformed body: {exc}", close=True) from None
        if type(event) is h11.Data:
            if event.data:
                return bytes(event.data)
            continue
        if type(event) is h11.EndOfMessage:
            return b""
        if event is h11.NEED_DATA:
            if conn.h11.they_are_waiting_for_100_continue:
                conn.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                )
            try:
                conn.receive()
            except TimeoutError:
                raise RequestTimeout("the request body stalled", close=True) from None
            except OSError as exc:
                raise ClientDisconnected(str(exc)) from None
            continue
        raise ClientDisconnected(f"unexpected {type(event).__name__} in body")


def _call_app(
    ex: _Exchange, build: Callable[[], Request], target: str
) -> tuple[Response, bool] | None:
    """The handler's response and whether to close after it; ``None`` if the client left."""
    ex.request = None
    try:
        request = ex.request = build()
        if ex.config.trusted_networks:  # behind a trusted reverse proxy: the real client
            request.client = (
                client_address(request.client[0], request.headers, ex.config.trusted_networks),
                request.client[1],
            )
        response = ex.app(request)
        if not isinstance(response, Response) or isinstance(response.body, str):
            raise TypeError(
                f"a handler must return a Response with a bytes, file or iterable body,"
                f" not {response!r:.200}"
            )
        return response, False
    except HTTPError as exc:
        return Response.error(exc.status, exc.detail, headers=exc.headers), exc.close
    except ClientDisconnected:
        return None
    except Exception:
        error_log.exception("handler failed for %r", target)
        return Response.error(500), True


def _answer(ex: _Exchange, event: h11.Request) -> bool:
    """Answer one request h11 parsed; True when the connection may carry another."""
    started = time.time()
    body = RequestBody.empty()
    headers = Headers()

    def build() -> Request:
        nonlocal body, headers
        headers = Headers.from_raw(event.headers)
        body = _request_body(ex.conn, headers)
        return _build_request(ex, event, headers, body)

    target = event.target.decode("latin-1")
    result = _call_app(ex, build, target)
    if result is None:
        return False
    response, close = result
    if not close:
        try:
            close = not _finish_body(ex, body)
        except BodyFramingError as exc:  # framing hook: a bad unread body is a 400, as in nginx
            response.close_body()
            response, close = Response.error(exc.status, exc.detail), True
    if ex.stopping() or ex.conn.requests + 1 >= ex.config.max_requests_per_connection:
        close = True

    def deliver(response: Response, close: bool, head_only: bool) -> tuple[int, bool]:
        sent = _send_response(ex.conn, ex.server_name, response, close=close, head_only=head_only)
        return sent, close

    method = event.method.decode("latin-1")
    version = event.http_version.decode("latin-1")
    return _respond(ex, response, close, method, target, version, started, deliver, headers)


def _plain_request(ex: _Exchange, plain: PlainRequest) -> Request:
    raw_path, query = split_target(plain.target)
    return Request(
        method=plain.method,
        target=plain.target,
        path=decode_path(raw_path),
        query=query,
        headers=Headers.from_normalized(plain.fields),
        http_version=plain.http_version,
        client=ex.conn.client,
    )


def _answer_plain(ex: _Exchange, plain: PlainRequest, head_size: int) -> bool:
    """Answer a request parsed by the fast path (its head is ``inbuf[:head_size]``).

    The response goes out the same way when it is plain too; otherwise h11 is handed the
    request and frames the response, then hands what follows back to plain mode.
    """
    started = time.time()
    conn = ex.conn
    result = _call_app(ex, lambda: _plain_request(ex, plain), plain.target)
    if result is None:
        return False
    response, close = result
    if plain.close or ex.stopping() or conn.requests + 1 >= ex.config.max_requests_per_connection:
        close = True

    def deliver(response: Response, close: bool, head_only: bool) -> tuple[int, bool]:
        return _deliver_plain(ex, response, head_size, close=close, head_only=head_only)

    return _respond(
        ex,
        response,
        close,
        plain.method,
        plain.target,
        plain.http_version,
        started,
        deliver,
        plain.fields,
    )


#: Sends a response (``close``, ``head_only``): body bytes sent, and whether to close after.
_Deliver = Callable[[Response, bool, bool], tuple[int, bool]]


def _respond(
    ex: _Exchange,
    response: Response,
    close: bool,
    method: str,
    target: str,
    version: str,
    started: float,
    deliver: _Deliver,
    fields: Iterable[tuple[str, str]] = (),
) -> bool:
    """Send a handler's response (a 500 instead if it cannot be written) and log it; True
    when the connection may carry another request."""
    try:
        try:
            head_only = method == "HEAD" or response.status in _NO_BODY_STATUSES
            sent, close = deliver(response, close, head_only)
        except _InvalidResponse as exc:
            response = _instead_of_invalid(response, exc, target)
            sent, close = deliver(response, True, method == "HEAD")
    except (OSError, ClientDisconnected):
        return False
    except Exception:
        error_log.exception("failed while sending the response to %r", target)
        return False
    finally:
        response.close_body()
    _log_access(ex, method, target, version, response.status, sent, started, fields)
    return not close


def _deliver_plain(
    ex: _Exchange, response: Response, head_size: int, *, close: bool, head_only: bool
) -> tuple[int, bool]:
    """Send the response to a plain request: body bytes sent, and whether to close after.

    Written as it is when its head is plain too; otherwise h11 is handed the request (whose head
    is ``inbuf[:head_size]``) and frames the response.
    """
    conn = ex.conn
    fields = _response_fields(response, ex.server_name)
    status = _status(response)
    body = response.body
    head = None
    if not conn.h11_engaged:
        reason = _REASON_TEXT.get(status, "")
        if head_only:
            head = plain_response_head(status, reason, fields, body_length=None, close=close)
        elif isinstance(body, bytes) or response.file_length is not None:
            length = len(body) if isinstance(body, bytes) else response.file_length
            head = plain_response_head(status, reason, fields, body_length=length, close=close)
    if head is not None:
        del conn.inbuf[:head_size]
        conn.inbuf_scanned = 0
        return _send_plain(conn, head, response, head_only=head_only), close
    if not conn.h11_engaged:
        _hand_request_to_h11(conn)
    sent = _send_h11(conn, response, fields, close=close, head_only=head_only)
    if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
        return sent, True
    conn.h11.start_next_cycle()
    conn.release_h11()
    return sent, close


class _InvalidResponse(Exception):
    """A handler's response that cannot be written: a field that is not ISO-8859-1 text, a CR
    or LF inside a value, an impossible status. Raised before any of it is written."""


def _instead_of_invalid(response: Response, exc: _InvalidResponse, target: str) -> Response:
    """The 500 sent in place of a handler's response that cannot be written."""
    error_log.error("the response to %r cannot be sent (%s); answering 500 instead", target, exc)
    response.close_body()
    return Response.error(500)


def _hand_request_to_h11(conn: Connection) -> None:
    """Let h11 parse the plain request just answered, so it can frame the response."""
    conn.engage_h11()
    event = conn.next_event()
    if type(event) is not h11.Request or type(conn.next_event()) is not h11.EndOfMessage:
        raise RuntimeError(f"h11 disagrees with the fast path on a request head: {event!r}")


def _finish_body(ex: _Exchange, body: RequestBody) -> bool:
    """Make sure the request body is consumed; False when the connection must close instead."""
    if body.done:
        return True
    conn = ex.conn
    if conn.h11.they_are_waiting_for_100_continue:
        # We never asked for the body: the client may not send it. Answer and close.
        return False
    if body.length is not None and body.length - body.received > DRAIN_LIMIT:
        return False
    try:
        while body.received <= DRAIN_LIMIT:
            if not body.read_chunk():
                return True
    except BodyFramingError:
        raise
    except (HTTPError, ClientDisconnected):
        return False
    return False


def _response_fields(response: Response, server_name: str) -> list[tuple[str, str]]:
    """The response's fields plus ``Date``, ``Server`` and ``Content-Length`` where missing."""
    fields = response.headers
    try:
        if any(type(name) is not str or type(value) is not str for name, value in fields):
            fields = [(_text(name), _text(value)) for name, value in fields]
    except (TypeError, ValueError) as exc:
        raise _InvalidResponse(f"header fields {fields!r:.200}: {exc}") from None
    has_length = has_date = has_server = False
    for name, _ in fields:
        lowered = name.lower()
        if lowered == "content-length":
            has_length = True
        elif lowered == "date":
            has_date = True
        elif lowered == "server":
            has_server = True
    # A handler may set its own Date or Server (a proxy, a test origin); otherwise we do.
    if has_date:
        fields = [("Server", server_name), *fields] if not has_server else list(fields)
    elif has_server:
        fields = [("Date", http_date_now()), *fields]
    else:
        fields = [("Date", http_date_now()), ("Server", server_name), *fields]
    if not has_length and response.status not in _NO_BODY_STATUSES:
        body = response.body
        if isinstance(body, bytes):
            fields.append(("Content-Length", str(len(body))))
        elif response.file_length is not None:
            fields.append(("Content-Length", str(response.file_length)))
    return fields


def _text(value: object) -> str:
    """A header name or value as plain ``str`` (a ``StrEnum`` member is written as its value)."""
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{value!r} is not text")


def _status(response: Response) -> int:
    """The response's status as a plain ``int`` (an ``HTTPStatus`` is fine; 200.0 is not)."""
    status = response.status
    if type(status) is int:
        return status
    if isinstance(status, int) and not isinstance(status, bool):
        return int(status)
    raise _InvalidResponse(f"status {status!r} is not a whole number")


def _send_plain(conn: Connection, head: bytes, response: Response, *, head_only: bool) -> int:
    """Write a head from the fast path and (unless ``head_only``) the body; returns body bytes."""
    body = response.body
    if head_only:
        conn.write(head)
        return 0
    if isinstance(body, bytes):
        conn.write(head + body if len(body) <= _JOIN_LIMIT else head)
        if len(body) > _JOIN_LIMIT:
            conn.write(body)
        return len(body)
    assert response.file_length is not None
    file = cast(BinaryIO, body)
    conn.write(head)
    conn.write_file(file, file.tell(), response.file_length)
    return response.file_length


def _send_response(
    conn: Connection, server_name: str, response: Response, *, close: bool, head_only: bool
) -> int:
    """Write the head and (unless ``head_only``) the body through h11; returns body bytes."""
    fields = _response_fields(response, server_name)
    return _send_h11(conn, response, fields, close=close, head_only=head_only)


def _send_h11(
    conn: Connection,
    response: Response,
    fields: list[tuple[str, str]],
    *,
    close: bool,
    head_only: bool,
) -> int:
    status = _status(response)
    body = response.body
    if not head_only and status not in _NO_BODY_STATUSES:
        _check_declared_length(response, fields)
    try:
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
        if close:
            headers.append((b"Connection", b"close"))
        # h11 validates the event as it is built, before its state changes.
        head = h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
    except (UnicodeEncodeError, TypeError, h11.LocalProtocolError) as exc:
        raise _InvalidResponse(str(exc)) from None
    conn.send(head)
    sent = 0
    if not head_only:
        if isinstance(body, bytes):
            if body:
                conn.send(h11.Data(data=body))
            sent = len(body)
        elif response.file_length is not None:
            file = cast(BinaryIO, body)
            conn.send_file(file, file.tell(), response.file_length)
            sent = response.file_length
        else:
            try:
                sent = conn.send_body(body)
            except Exception:
                conn.h11.send_failed()
                raise
    conn.send(h11.EndOfMessage())
    return sent


def _check_declared_length(response: Response, fields: list[tuple[str, str]]) -> None:
    """Refuse, before anything is written, a body that contradicts its own Content-Length
    (h11 would notice only after the head had gone out)."""
    body = response.body
    length = len(body) if isinstance(body, bytes) else response.file_length
    if length is None:
        return
    for name, value in fields:
        if name.lower() == "content-length" and value.strip().isdigit():
            if int(value) != length:
                raise _InvalidResponse(
                    f"Content-Length {value.strip()} but a body of {length} bytes"
                )
            return


def _log_access(
    ex: _Exchange,
    method: str | None,
    target: str,
    version: str,
    status: int,
    size: int,
    started: float = 0.0,
    fields: Iterable[tuple[str, str]] = (),
) -> None:
    if not ex.config.access_log or not access_log.isEnabledFor(logging.INFO):
        return
    request = ex.request if method is not None else None
    if request is not None and request.path == ex.config.health:
        return  # a load balancer's checks every few seconds would drown the log
    request_line = "-" if method is None else f"{method} {target} HTTP/{version}"
    client = (request or ex.conn).client[0]
    # The request's fields (lower-case names) give the combined and json formats their
    # Referer and User-Agent.
    line = format_access_line(
        client,
        request_line,
        status,
        size,
        started,
        fmt=ex.config.access_log_format,
        fields=fields,
    )
    access_log.info(line)
