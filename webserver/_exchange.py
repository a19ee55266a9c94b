"""The request/response loop a worker runs on a connection the network has made ready.

Call flow, for one turn of a worker::

    serve_ready(conn) → _loop, a short match over what the connection holds
      ├── output queued          _send(): pump a generated body, flush; kernel full → SEND
      ├── closing                everything sent: LINGER (drain unread input) or CLOSE
      ├── a body being received  _receive_body(): h11 → the spool; nothing more yet → BODY
      └── conn.next_request()
            ├── PlainRequest     _answer_plain(): app(request) → write_reply (fast head or h11)
            ├── h11.Request      _begin(): 413 before reading, else spool the body first
            ├── Wait             _wait(): flush, try a read, else park → HEAD
            ├── Refuse           an error response, then close
            └── Ended            CLOSE

Every outcome but CLOSE parks the connection in the selector with its deadline: no thread waits
for the network. A handler runs only once its whole request (body included) has arrived, so
``Request.body`` never waits on the client.

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
from dataclasses import dataclass
from typing import cast

import h11

from ._chunked import BodyFramingError, start_body_check
from ._connection import LINGER_SECONDS, Connection, Ended, NotPlain, Refuse, Wait
from ._fastpath import PlainRequest
from ._spool import Spool
from ._writing import InvalidResponse, Reply, Streaming, make_reply, write_reply
from .accesslog import format_access_line
from .config import ServerConfig
from .errors import ClientDisconnected, HTTPError
from .framing import HeadLimits
from .headers import Headers
from .paths import decode_path, split_target
from .proxy import client_address
from .request import Request, RequestBody
from .response import Response

access_log = logging.getLogger("webserver.access")
error_log = logging.getLogger("webserver.error")

App = Callable[[Request], Response]
#: The folder a request's body is spooled in (method, target → folder, None for the default).
SpoolFolder = Callable[[str, str], str | None]

#: Milliseconds a worker waits for the next request on a connection before parking it (see
#: ``_next_request_soon``); measured: 0.1 ms catches fewer, beyond 0.5 ms gains nothing, and poll
#: counts whole milliseconds.
NEXT_REQUEST_WAIT_MS = 1
#: Output is written once this much has gathered, even if more responses are coming.
FLUSH_THRESHOLD = 64 * 1024
#: Slowest a request body may arrive, in bytes per second, once past ``body_timeout``: the body
#: deadline is ``body_timeout`` plus one second per this many bytes received (Apache
#: mod_reqtimeout's ``MinRate``, and its default), so a body trickled forever is cut.
MIN_BODY_RATE = 500
#: The same for a response the client reads: ``body_timeout`` plus one second per this many bytes
#: it has taken since the output started waiting for it.
MIN_SEND_RATE = 500
#: A body arriving while its connection is parked gathers in h11's buffer, received by the
#: selector thread, until this many bytes wait for a worker to move them into the spool (see
#: ``receive_parked_body``): a fast upload is handed over at its first read, a slow one once per
#: 16 KiB instead of once per trickle.
SELECTOR_BODY_BYTES = 16 * 1024
#: Requests the selector thread answers in one turn of a connection (see ``serve_ready``'s
#: ``inline``) before a worker takes the rest of its pipeline: about a millisecond of Python,
#: so one client's burst cannot hold up every other connection for long.
INLINE_REQUESTS = 16


class Outcome(enum.Enum):
    """What the worker does with the connection after a turn."""

    __hash__ = object.__hash__  # as ``Owner``: looked up once per turn

    HEAD = "head"  #: park until a request head arrives (idle keep-alive, or a partial head)
    BODY = "body"  #: park until more of a request body arrives
    SEND = "send"  #: park until the client has read enough for more to be sent
    LINGER = "linger"  #: answered, closing: half-close and discard the client's input
    CLOSE = "close"  #: finished or broken: close it
    WORKER = "worker"  #: an inline turn stopped at what only a worker may do: queue it for one


@dataclass(frozen=True, slots=True)
class Turn:
    """The outcome of a turn and, when parked, its deadlines (see ``Connection.park``)."""

    outcome: Outcome
    deadline: float = 0.0
    hard_deadline: float = float("inf")


CLOSE = Turn(Outcome.CLOSE)
TO_WORKER = Turn(Outcome.WORKER)


class NeedsWorker(Exception):
    """Raised by the app of an inline turn for a request it does not answer from memory: the
    request stays buffered, untouched, and a worker answers it (see ``serve_ready``)."""


class _Exchange:
    """Per-connection context for one worker turn: the config, the app, and the stop signal."""

    __slots__ = (
        "app",
        "config",
        "conn",
        "inline",
        "limits",
        "others_waiting",
        "received",
        "request",
        "server_name",
        "spool_folder",
        "stopping",
    )

    def __init__(
        self,
        conn: Connection,
        app: App,
        config: ServerConfig,
        stopping: Callable[[], bool],
        others_waiting: Callable[[], bool],
        spool_folder: SpoolFolder,
        limits: HeadLimits | None,
        inline: int = 0,
    ) -> None:
        self.conn = conn
        #: One more than the requests an inline turn may still answer (0: a worker's turn).
        self.inline = inline
        #: An inline turn has received once (it does not try again: epoll reports more).
        self.received = False
        self.spool_folder = spool_folder
        self.app = app
        self.config = config
        self.stopping = stopping
        self.others_waiting = others_waiting
        self.server_name = config.server_name
        #: The request being answered, for its access line (its client may be a forwarded one).
        self.request: Request | None = None
        self.limits = limits or head_limits(config)


def head_limits(config: ServerConfig) -> HeadLimits:
    """The limits on a request head that ``config`` sets."""
    return HeadLimits(
        max_request_line=config.max_request_line,
        max_head_size=config.max_head_size,
        max_header_count=config.max_header_count,
    )


class _Incoming:
    """A request whose body is being received into a spool, kept while the connection waits."""

    __slots__ = ("event", "headers", "length", "pending", "spool", "started")

    def __init__(
        self, event: h11.Request, headers: Headers, length: int | None, folder: str | None
    ) -> None:
        self.event = event
        self.headers = headers
        self.length = length
        self.spool = Spool(folder)
        self.started = time.monotonic()
        #: Bytes the selector thread received into h11's buffer that are not in the spool yet.
        self.pending = 0

    def close(self) -> None:
        self.spool.close()


def serve_ready(
    conn: Connection,
    app: App,
    config: ServerConfig,
    stopping: Callable[[], bool],
    others_waiting: Callable[[], bool] = lambda: True,
    *,
    spool_folder: SpoolFolder = lambda method, target: None,
    limits: HeadLimits | None = None,
    inline: bool = False,
) -> Turn:
    """Carry the connection as far as the network lets it; never raises.

    ``stopping`` says the server is stopping; ``others_waiting`` that other connections wait
    for a worker, in which case this one is parked as soon as it has nothing buffered;
    ``spool_folder`` where a request's body goes when it is too large for memory; ``limits``
    those of ``config`` (:func:`head_limits`), built once by the caller rather than per turn.

    ``inline``: the turn runs on the selector thread, for a connection parked between requests
    in plain mode with nothing queued. It receives once, answers plain requests whose ``app``
    answers from memory (``app`` raises :class:`NeedsWorker` for any other, which stays
    buffered), at most ``INLINE_REQUESTS`` of them, and never waits: anything else (a request
    for h11, a body, a handler that may block, the rest of a long pipeline) ends the turn with
    ``Outcome.WORKER``, nothing of it consumed, and a worker carries on in order.
    """
    exchange = _Exchange(
        conn,
        app,
        config,
        stopping,
        others_waiting,
        spool_folder,
        limits,
        INLINE_REQUESTS + 1 if inline else 0,
    )
    try:
        if inline:
            # Woken because bytes came: take them before looking for a request, the turn's
            # one read.
            exchange.received = True
            with contextlib.suppress(BlockingIOError):
                conn.receive()
        return _loop(exchange)
    except (OSError, ClientDisconnected):
        return CLOSE
    except Exception:
        error_log.exception("unexpected error on connection from %s", conn.client[0])
        return CLOSE


def _loop(ex: _Exchange) -> Turn:
    conn = ex.conn
    while True:
        if conn.outgoing is not None or (
            conn.has_output and (conn.closing or conn.queued >= FLUSH_THRESHOLD or conn.holds_file)
        ):
            turn = _send(ex)
            if turn is not None:
                return turn
        if conn.closing:
            return _close(ex)
        turn = _receive_body(ex) if conn.incoming is not None else _next_request(ex)
        if turn is not None:
            return turn


def _next_request(ex: _Exchange) -> Turn | None:
    """Act on the next request buffered; a turn when the connection is to wait or close."""
    match ex.conn.next_request(ex.limits, plain_only=bool(ex.inline)):
        case PlainRequest() as plain:
            if ex.inline:
                return _answer_inline(ex, plain)
            _answer_plain(ex, plain)
        case Wait() as wait:  # before h11.Request, whose isinstance goes through ABCMeta
            return _wait(ex, wait)
        case NotPlain():
            return TO_WORKER
        case h11.Request() as event:
            _begin(ex, event)
        case Refuse(status=status, detail=detail):
            _send_error(ex, status, detail)
        case Ended():
            return _close(ex)  # answers to what came before the end still go out
    return None


def _answer_inline(ex: _Exchange, plain: PlainRequest) -> Turn | None:
    """Answer a plain request in an inline turn, if its app answers it from memory."""
    if ex.inline == 1:
        return TO_WORKER  # the turn's budget is spent: a worker answers the rest
    try:
        _answer_plain(ex, plain)
    except NeedsWorker:
        return TO_WORKER
    ex.inline -= 1
    return None


def _close(ex: _Exchange) -> Turn:
    """No request follows: once the output is sent, close (after draining unread input)."""
    conn = ex.conn
    if not conn.flush():
        return _park_send(ex)
    if conn.needs_linger():
        return Turn(Outcome.LINGER, time.monotonic() + LINGER_SECONDS)
    return CLOSE


def _send(ex: _Exchange) -> Turn | None:
    """Push output; a turn to park for writability when the kernel is full, else None."""
    conn = ex.conn
    while True:
        streaming = cast(Streaming | None, conn.outgoing)
        if streaming is not None:
            try:
                finished = streaming.pump()
            except Exception:
                conn.outgoing = None
                error_log.exception("failed while generating a response body")
                conn.closing = True
                return None
            if finished:
                conn.outgoing = None
        if not (
            conn.outgoing is not None
            or conn.closing
            or conn.queued >= FLUSH_THRESHOLD
            or conn.holds_file
        ):
            return None  # small answers to pipelined requests leave together, later
        if not conn.flush():
            return _park_send(ex)
        if conn.outgoing is None:
            return None


def _park_send(ex: _Exchange) -> Turn:
    conn = ex.conn
    timeout = ex.config.body_timeout
    hard = conn.send_since + timeout + conn.sent_since / MIN_SEND_RATE
    return Turn(Outcome.SEND, min(conn.send_progress + timeout, hard), hard)


def _wait(ex: _Exchange, wait: Wait) -> Turn | None:
    """Nothing complete to answer: ``None`` if more bytes came at once, else park or close.

    ``blank_only``: only empty lines came since the last wait. They are not waited for (a
    stream of them must not keep a worker busy) and, like silence, leave the keep-alive
    deadline where it was: it runs from the last answered request.
    """
    conn = ex.conn
    if not conn.flush():
        return _park_send(ex)
    if ex.stopping() and not wait.partial:
        return CLOSE
    if not ex.received:
        ex.received = bool(ex.inline)
        try:
            conn.receive()
            return None  # bytes, or the end of the stream: look again
        except BlockingIOError:
            pass
    if (
        not ex.inline
        and not wait.partial
        and not wait.blank_only
        and not ex.others_waiting()
        and _next_request_soon(conn)
    ):
        return None
    if wait.partial:
        assert conn.head_started is not None
        deadline = conn.head_started + ex.config.header_timeout
        return Turn(Outcome.HEAD, deadline, deadline)
    return Turn(Outcome.HEAD, conn.idle_since + ex.config.keep_alive_timeout)


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
        conn.receive()
    except BlockingIOError:
        return False
    return True


# -- requests with a body ---------------------------------------------------------------------


def _begin(ex: _Exchange, event: h11.Request) -> None:
    """A request h11 parsed: answer it at once when it has no body, else start receiving."""
    conn = ex.conn
    try:  # framing hook: a chunked body is checked before h11 reads any of it
        conn.body_check = start_body_check(event.headers, conn.h11.trailing_data[0], ex.limits)
    except BodyFramingError as exc:
        conn.linger = True
        _send_error(ex, exc.status, exc.detail)
        return
    headers = Headers.from_raw(event.headers)
    length_text = headers.get("content-length")
    if headers.get("transfer-encoding") is None and length_text is None:
        conn.h11.next_event()  # the EndOfMessage of an absent body
        _answer(ex, event, headers, RequestBody.empty())
        return
    length = int(length_text) if length_text is not None and length_text.isdigit() else None
    if length is not None and length > ex.config.max_upload:
        # Refused before a byte of it is read (and before 100 Continue is sent).
        error = HTTPError(f"upload limit is {ex.config.max_upload} bytes", status=413, close=True)
        _answer_error(ex, event, error)
        return
    folder = ex.spool_folder(event.method.decode("latin-1"), event.target.decode("latin-1"))
    conn.incoming = _Incoming(event, headers, length, folder)


def _receive_body(ex: _Exchange) -> Turn | None:
    """Move what has arrived of the body into its spool; a turn to park when more is needed,
    None once the request has been answered (or refused)."""
    conn = ex.conn
    incoming = cast(_Incoming, conn.incoming)
    try:
        while True:
            event = _next_body_event(conn)
            if type(event) is h11.Data:
                incoming.spool.write(event.data)
                if incoming.spool.size > ex.config.max_upload:
                    limit = ex.config.max_upload
                    raise HTTPError(f"upload limit is {limit} bytes", status=413, close=True)
            elif type(event) is h11.EndOfMessage:
                conn.incoming = None
                spool = incoming.spool
                body = RequestBody(spool.read_chunk, incoming.length, spooled_path=spool.path)
                _answer(ex, incoming.event, incoming.headers, body, release=incoming.spool)
                return None
            elif event is h11.NEED_DATA:
                incoming.pending = 0  # h11 has handed over all it held
                if conn.h11.they_are_waiting_for_100_continue:
                    conn.send(
                        h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                    )
                if not conn.flush():
                    return _park_send(ex)
                try:
                    conn.receive()
                except BlockingIOError:
                    return _park_body(conn, ex.config, incoming)
            else:
                raise ClientDisconnected(f"unexpected {type(event).__name__} in body")
    except HTTPError as exc:
        conn.incoming = None
        incoming.close()
        _answer_error(ex, incoming.event, exc)
        return None


def _next_body_event(conn: Connection) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
    try:
        return conn.h11.next_event()
    except h11.RemoteProtocolError as exc:
        if conn.h11._receive_buffer_closed:  # h11 exposes no other signal
            raise ClientDisconnected(str(exc)) from None
        raise HTTPError(f"malformed body: {exc}", status=400, close=True) from None


def _park_body(conn: Connection, config: ServerConfig, incoming: _Incoming) -> Turn:
    timeout = config.body_timeout
    received = incoming.spool.size + incoming.pending
    hard = incoming.started + timeout + received / MIN_BODY_RATE
    return Turn(Outcome.BODY, min(conn.last_active + timeout, hard), hard)


def receive_parked_body(conn: Connection, config: ServerConfig) -> Turn | None:
    """Take what arrived of a body while the connection is parked for it, on the selector
    thread; a turn to park again when a worker has nothing to do yet, else None (a worker
    carries on: the body is complete, ``SELECTOR_BODY_BYTES`` have gathered, or the stream
    ended or failed).

    Why: a client trickling its body would otherwise wake a worker, and queue it behind every
    other ready connection, for each few bytes; a thousand such clients then delay every fresh
    request by the time the workers spend on their bytes (issue 16). Here a trickle costs one
    ``recv`` into h11's buffer and the re-arm. Only a ``Content-Length`` body is taken this way:
    a chunked body's framing check may refuse a byte, and that answer is a worker's to write.
    """
    incoming = conn.incoming
    if (
        type(incoming) is not _Incoming
        or incoming.length is None
        or conn.body_check is not None
        or conn.has_output
    ):
        return None
    try:
        received = conn.receive()
    except BlockingIOError:
        received = -1  # woken for nothing: wait again
    except OSError:
        return None
    if received == 0:
        return None
    if received > 0:
        incoming.pending += received
        if (
            incoming.pending >= SELECTOR_BODY_BYTES
            or incoming.spool.size + incoming.pending >= incoming.length
        ):
            return None
    return _park_body(conn, config, incoming)


# -- answering --------------------------------------------------------------------------------


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


def _call_app(ex: _Exchange, build: Callable[[], Request], target: str) -> tuple[Response, bool]:
    """The handler's response and whether to close after it."""
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
    except NeedsWorker:
        raise  # nothing done: the request is left for a worker
    except HTTPError as exc:
        return Response.error(exc.status, exc.detail, headers=exc.headers), exc.close
    except ClientDisconnected:
        return Response.error(400), True
    except Exception:
        error_log.exception("handler failed for %r", target)
        return Response.error(500), True


def _answer(
    ex: _Exchange,
    event: h11.Request,
    headers: Headers,
    body: RequestBody,
    release: Spool | None = None,
) -> None:
    """Answer one request h11 parsed, its body (if any) wholly received."""
    started = time.time()
    target = event.target.decode("latin-1")
    response, close = _call_app(ex, lambda: _build_request(ex, event, headers, body), target)
    method = event.method.decode("latin-1")
    version = event.http_version.decode("latin-1")
    _respond(
        ex, response, close, (method, target, version), started, release=release, fields=headers
    )


def _answer_error(ex: _Exchange, event: h11.Request, error: HTTPError) -> None:
    response = Response.error(error.status, error.detail, headers=error.headers)
    line = (
        event.method.decode("latin-1"),
        event.target.decode("latin-1"),
        event.http_version.decode("latin-1"),
    )
    _respond(ex, response, True, line, time.time())


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


def _answer_plain(ex: _Exchange, plain: PlainRequest) -> None:
    """Answer a request parsed by the fast path."""
    started = time.time()
    response, close = _call_app(ex, lambda: _plain_request(ex, plain), plain.target)
    line = (plain.method, plain.target, plain.http_version)
    _respond(ex, response, close or plain.close, line, started, plain=True, fields=plain.fields)


def _respond(
    ex: _Exchange,
    response: Response,
    close: bool,
    line: tuple[str, str, str],
    started: float,
    *,
    plain: bool = False,
    release: Spool | None = None,
    fields: Iterable[tuple[str, str]] = (),
) -> None:
    """Queue a handler's response (a 500 instead if it cannot be written); the access log line
    and the end of the exchange follow once all of it is queued."""
    conn = ex.conn
    method, target, version = line
    if ex.stopping() or conn.requests + 1 >= ex.config.max_requests_per_connection:
        close = True

    def finish(reply: Reply) -> Callable[[int], None]:
        def done(sent: int) -> None:
            conn.requests += 1
            conn.idle_since = time.monotonic()
            _log_access(ex, method, target, version, reply.status, sent, started, fields)
            if reply.close or not conn.end_exchange():
                conn.closing = True

        return done

    head_only = method == "HEAD"
    try:
        try:
            reply = make_reply(response, ex.server_name, close=close, head_only=head_only)
            write_reply(conn, reply, finish(reply), plain=plain, release=release)
        except InvalidResponse as exc:
            response = _instead_of_invalid(response, exc, target)
            reply = make_reply(response, ex.server_name, close=True, head_only=head_only)
            write_reply(conn, reply, finish(reply), plain=plain, release=release)
    except (OSError, ClientDisconnected):
        _close_quietly(release)
        raise
    except Exception:
        error_log.exception("failed while sending the response to %r", target)
        _close_quietly(response.body)
        _close_quietly(release)
        conn.closing = True


def _close_quietly(body: object) -> None:
    close = getattr(body, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            error_log.exception("closing a response body failed")


def _instead_of_invalid(response: Response, exc: InvalidResponse, target: str) -> Response:
    """The 500 sent in place of a handler's response that cannot be written."""
    error_log.error("the response to %r cannot be sent (%s); answering 500 instead", target, exc)
    response.close_body()
    return Response.error(500)


def _send_error(ex: _Exchange, status: int, detail: str) -> None:
    """Answer a request we could not parse, if h11 still lets us; the connection then closes."""
    conn = ex.conn
    conn.closing = True
    if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    reply = make_reply(Response.error(status, detail), ex.server_name, close=True, head_only=False)
    write_reply(conn, reply, lambda sent: _log_access(ex, None, "", "", status, sent))


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
