"""Writing a response: one frozen :class:`Reply`, framed by the fast path or by h11 in one place.

Rules this module keeps:

* A reply is validated whole before any of it is queued (:class:`InvalidResponse` otherwise), so
  a handler's mistake becomes a 500, never half a response.
* Nothing here waits for the client: bytes and file slices are queued on the connection, which
  sends what the kernel takes; a generated body is pulled only while less than ``WINDOW`` bytes
  wait to be sent (:class:`Streaming`), so a connection that is not read holds a bounded amount
  of memory and no thread.
* The fast head (:func:`~webserver._fastpath.plain_response_head`) is used when the request came
  by the fast path and the response is plain too; anything else is framed by h11, to which the
  connection then hands the request.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import BinaryIO, NamedTuple, cast

import h11

from webclient._shared.grammar import NO_BODY_STATUSES

from ._connection import Connection, Mode, Resource
from ._fastpath import plain_response_head
from .httpdate import http_date_now
from .response import Body, Response

error_log = logging.getLogger("webserver.error")

#: A generated body is pulled from the handler while fewer bytes than this wait to be sent.
WINDOW = 256 * 1024
#: A bytes body up to this size is joined to its head for one write; a larger one is queued as
#: it is rather than copied.
JOIN_LIMIT = 16 * 1024
#: Response heads remembered (see ``_plain_head``): the ``Date`` changes every second, so this
#: many different responses a second are answered from it.
HEAD_CACHE_SIZE = 256

_REASON_TEXT = {status.value: status.phrase for status in HTTPStatus}
_REASONS = {code: phrase.encode("ascii") for code, phrase in _REASON_TEXT.items()}


class InvalidResponse(Exception):
    """A handler's response that cannot be written: a field that is not ISO-8859-1 text, a CR
    or LF inside a value, an impossible status. Raised before any of it is written."""


class Reply(NamedTuple):
    """One response as it will be written: ``fields`` include ``Date``, ``Server`` and
    ``Content-Length`` where known; ``length`` is the body's size when known."""

    status: int
    fields: tuple[tuple[str, str], ...]
    body: Body
    length: int | None
    close: bool
    head_only: bool


def make_reply(response: Response, server_name: str, *, close: bool, head_only: bool) -> Reply:
    """The reply for a handler's response; ``InvalidResponse`` when it cannot be written."""
    status = _status(response)
    head_only = head_only or status in NO_BODY_STATUSES
    body = response.body
    length = len(body) if isinstance(body, bytes) else response.file_length
    fields, declared = _response_fields(response, status, length, server_name)
    if declared and not head_only:
        _check_declared_length(length, fields)
    return Reply(status, fields, body, length, close, head_only)


#: Called once the whole reply is queued, with the number of body bytes.
Done = Callable[[int], None]


def write_reply(
    conn: Connection,
    reply: Reply,
    done: Done,
    *,
    plain: bool = False,
    release: Resource | None = None,
) -> None:
    """Queue ``reply`` on ``conn``; ``plain`` when the request came by the fast path.

    A generated body is left in ``conn.outgoing`` (a :class:`Streaming`) to be pumped by the
    caller; ``done`` runs when the last byte is queued, and ``release`` (the request's spooled
    body, which a generator may still read) is closed then. ``InvalidResponse`` before anything
    is queued when h11 refuses the head.
    """
    if isinstance(reply.body, bytes) or reply.length is not None or reply.head_only:
        _write_whole(conn, reply, done, plain=plain)
        if release is not None:
            release.close()
        return
    _write_head(conn, reply, plain=plain and conn.mode is Mode.PLAIN)
    conn.outgoing = Streaming(conn, reply.body, done, release)


def _write_head(conn: Connection, reply: Reply, *, plain: bool) -> None:
    event = _h11_head(reply)  # validated before the request is handed over
    if plain:
        conn.hand_plain_to_h11()
    conn.send(event)


def _write_whole(conn: Connection, reply: Reply, done: Done, *, plain: bool) -> None:
    if plain and conn.mode is Mode.PLAIN:
        head = _plain_head(
            reply.status, reply.fields, None if reply.head_only else reply.length, reply.close
        )
        if head is not None:
            conn.take_plain_head()
            done(_queue_plain(conn, head, reply))
            return
    _write_head(conn, reply, plain=plain and conn.mode is Mode.PLAIN)
    body = reply.body
    if reply.head_only:
        _close_body(body)
        conn.send(h11.EndOfMessage())
        done(0)
    elif isinstance(body, bytes):
        if body:
            conn.send(h11.Data(data=body))
        conn.send(h11.EndOfMessage())
        done(len(body))
    else:
        assert reply.length is not None
        file = cast(BinaryIO, body)
        conn.send_file(file, file.tell(), reply.length)
        conn.send(h11.EndOfMessage())
        done(reply.length)


@functools.lru_cache(maxsize=HEAD_CACHE_SIZE)
def _plain_head(
    status: int, fields: tuple[tuple[str, str], ...], body_length: int | None, close: bool
) -> bytes | None:
    """:func:`plain_response_head`, remembered: a server sends the same response heads again
    and again (a popular file's head changes only with the ``Date``, once a second), and a
    lookup costs a fraction of building one (5 % of a small request's time)."""
    reason = _REASON_TEXT.get(status, "")
    return plain_response_head(status, reason, list(fields), body_length=body_length, close=close)


def _queue_plain(conn: Connection, head: bytes, reply: Reply) -> int:
    body = reply.body
    if reply.head_only:
        _close_body(body)
        conn.write(head)
        return 0
    if isinstance(body, bytes):
        if len(body) <= JOIN_LIMIT:
            conn.write(head + body)
        else:
            conn.write(head)
            conn.write(body)
        return len(body)
    assert reply.length is not None
    file = cast(BinaryIO, body)
    conn.write(head)
    conn.write_file(file, file.tell(), reply.length)
    return reply.length


class Streaming:
    """A generated body being sent: pulled from the handler's iterable while the connection has
    room (``WINDOW``), framed by h11, each chunk written as soon as it is produced, resumed by
    any worker when the client has read more."""

    __slots__ = ("_chunks", "_conn", "_done", "_release", "_source", "sent")

    def __init__(
        self, conn: Connection, source: Iterable[bytes], done: Done, release: Resource | None
    ) -> None:
        self._conn = conn
        self._release = release
        self._source = source
        self._chunks: Iterator[bytes] = iter(source)
        self._done = done
        self.sent = 0

    def pump(self) -> bool:
        """Queue more of the body; True once all of it (and its end) is queued."""
        conn = self._conn
        try:
            while conn.queued < WINDOW:
                chunk = next(self._chunks, None)
                if chunk is None:
                    conn.send(h11.EndOfMessage())
                    self.close()
                    self._done(self.sent)
                    return True
                if chunk:
                    self.sent += len(chunk)
                    conn.send(h11.Data(data=chunk))
                    # Each chunk leaves as it is produced (server-sent events, PEP 3333's "no
                    # delayed block"); what the kernel cannot take yet stays queued.
                    conn.flush()
        except Exception:
            conn.h11.send_failed()
            self.close()
            raise
        return False

    def close(self) -> None:
        try:
            _close_body(self._source)
        finally:
            if self._release is not None:
                self._release.close()


def _close_body(body: object) -> None:
    close = getattr(body, "close", None)
    if callable(close):
        close()


def _h11_head(reply: Reply) -> h11.Response:
    try:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.fields
        ]
        if reply.close:
            headers.append((b"Connection", b"close"))
        # h11 validates the event as it is built, before its state changes.
        return h11.Response(
            status_code=reply.status, headers=headers, reason=_REASONS.get(reply.status, b"")
        )
    except (UnicodeEncodeError, TypeError, h11.LocalProtocolError) as exc:
        raise InvalidResponse(str(exc)) from None


def _response_fields(
    response: Response, status: int, length: int | None, server_name: str
) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The response's fields plus ``Date``, ``Server`` and ``Content-Length`` where missing,
    and whether the handler set ``Content-Length`` itself (then it is to be checked)."""
    fields = response.headers
    try:
        has_length, has_date, has_server = _has_fields(fields)
    except (_NotText, TypeError, ValueError):  # not text, or not pairs
        try:
            fields = [(_text(name), _text(value)) for name, value in fields]
        except (TypeError, ValueError) as exc:
            raise InvalidResponse(f"header fields {fields!r:.200}: {exc}") from None
        has_length, has_date, has_server = _has_fields(fields)
    # A handler may set its own Date or Server (a proxy, a test origin); otherwise we do.
    extra: list[tuple[str, str]] = []
    if not has_date:
        extra.append(("Date", http_date_now()))
    if not has_server:
        extra.append(("Server", server_name))
    if not has_length and status not in NO_BODY_STATUSES and length is not None:
        return (*extra, *fields, ("Content-Length", str(length))), False
    return (*extra, *fields), has_length


class _NotText(Exception):
    """A field name or value that is not plain ``str``."""


def _has_fields(fields: Iterable[tuple[str, str]]) -> tuple[bool, bool, bool]:
    """Whether ``fields`` set Content-Length, Date and Server; ``_NotText`` when a name or a
    value is not plain ``str`` (one pass: this runs for every response)."""
    has_length = has_date = has_server = False
    for name, value in fields:
        if type(name) is not str or type(value) is not str:
            raise _NotText
        lowered = name.lower()
        if lowered == "content-length":
            has_length = True
        elif lowered == "date":
            has_date = True
        elif lowered == "server":
            has_server = True
    return has_length, has_date, has_server


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
    raise InvalidResponse(f"status {status!r} is not a whole number")


def _check_declared_length(length: int | None, fields: tuple[tuple[str, str], ...]) -> None:
    """Refuse, before anything is written, a body that contradicts its own Content-Length
    (h11 would notice only after the head had gone out)."""
    if length is None:
        return
    for name, value in fields:
        if name.lower() == "content-length" and value.strip().isdigit():
            if int(value) != length:
                raise InvalidResponse(
                    f"Content-Length {value.strip()} but a body of {length} bytes"
                )
            return
