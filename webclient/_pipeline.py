"""Running the requests for one origin over one keep-alive connection, pipelined when allowed.

Rules (RFC 9112 §9.3):

- Responses are read in the order the requests were sent; every response body is read to its end
  before the next response, so the connection can be reused.
- At most ``depth`` GET/HEAD requests are in flight. A new connection carries one request until
  its first response shows it persists (HTTP/1.1 without ``Connection: close``: an HTTP/1.0
  server closes after each response and is never pipelined to); only then are requests written
  ahead. Every response already received is read before more requests are written, so that they
  leave in batches.
- Nothing is written behind a request that is not GET/HEAD (a POST waits for every earlier
  response, and the next request waits for the POST's response).
- Once a response to a GET/HEAD has fully arrived, and the server keeps the connection, the next
  GET/HEAD is written before the response is handled (written to its file), so the two overlap;
  that is still one request in flight at a time.
- A request written when nothing is in flight first checks that the server has not closed the
  idle connection meanwhile; if it has, a new connection is opened (as the pool does for idle
  connections it hands out).
- When a server closes a kept-alive connection without answering, the idempotent requests it left
  unanswered are sent again, once, on a new connection; others fail. When a response announced
  the close, the requests behind it were never processed and are simply sent again.
- When a connection is lost (closed, reset, or silent for the timeout) with requests written
  ahead still unanswered, the origin is pipelined to no more
  (:meth:`ConnectionPool.stop_pipelining`) and those requests (GET/HEAD only ever are) go again
  one at a time on a new connection, without using up their retry: a server that mishandles
  pipelining costs time, never an answer.
- When connecting fails, every remaining request of the origin fails with the same error rather
  than waiting for the same timeout again.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._models import ResponseHead
from ._pool import ConnectionPool
from .errors import (
    ConnectionClosed,
    LocalFileError,
    ReadTimeout,
    TransportError,
    WebClientError,
)

if TYPE_CHECKING:  # (a run answered from the cache never loads the connection modules)
    from ._origin import OriginConnection
    from ._wire import WireRequest

#: How many times a request left unanswered by a closed connection is sent again.
MAX_RETRIES = 1


class Exchange(Protocol):
    """One request's side of the lane: what to send, and what to do with its answer."""

    @property
    def wire(self) -> WireRequest: ...

    def handle(self, head: ResponseHead, body: Iterator[bytes]) -> WireRequest | None:
        """Consume the response; a request to send instead when the answer was not usable."""

    def fail(self, error: WebClientError) -> None:
        """Record that the request could not be completed."""


@dataclass(eq=False)
class _Item:
    exchange: Exchange
    wire: WireRequest
    retries: int = 0
    #: Written while an earlier request on the connection was still unanswered.
    pipelined: bool = False


class Lane:
    """The requests of one origin, run in order on one connection at a time."""

    def __init__(
        self,
        pool: ConnectionPool,
        host: str,
        port: int,
        *,
        depth: int = 1,
        scheme: str = "http",
        ahead: Callable[[], int | None] | None = None,
    ) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.scheme = scheme
        self.depth = max(1, depth)
        #: A bound on the requests in flight that may change during the run (None: no bound),
        #: set by the queue several connections share (webclient._spread).
        self._ahead = ahead
        self._queue: deque[_Item] = deque()
        self._inflight: deque[_Item] = deque()
        self._conn: OriginConnection | None = None
        self._failure: WebClientError | None = None

    # -- public ----------------------------------------------------------------------------------

    def run(self, exchanges: Iterable[Exchange]) -> None:
        """Run every exchange; each one's ``handle`` or ``fail`` is called exactly once."""
        try:
            for exchange in exchanges:
                if not exchange.wire.pipelinable:
                    self.settle()
                self._queue.append(_Item(exchange, exchange.wire))
                self._advance(drain=not exchange.wire.pipelinable)
            self.settle()
        finally:
            self._finish()

    def settle(self) -> None:
        """Wait until every request sent or queued so far has its outcome."""
        self._advance(drain=True)

    # -- the loop --------------------------------------------------------------------------------

    def _advance(self, *, drain: bool) -> None:
        while self._queue or (drain and self._inflight):
            if self._queue and self._can_send():
                self._send(self._queue.popleft())
            else:
                self._read_one()
                # Take every response already received before writing again, so that the next
                # requests leave together in one write instead of one write per response.
                while self._inflight and self._conn is not None and self._conn.has_buffered():
                    self._read_one()

    def _can_send(self) -> bool:
        if not self._inflight:
            return True
        head, last = self._queue[0], self._inflight[-1]
        if not head.wire.pipelinable or not last.wire.pipelinable:
            return False
        conn = self._conn
        confirmed = conn is not None and conn.answered > 0 and conn.reusable
        bound = None if self._ahead is None else self._ahead()
        return (
            confirmed
            and len(self._inflight) < (self.depth if bound is None else min(self.depth, bound))
            and self.pool.may_pipeline(self.host, self.port, self.scheme)
        )

    def _connection(self) -> OriginConnection:
        if self._conn is not None and not self._inflight and self._conn.dropped():
            # The server closed the idle kept-alive connection (its keep-alive timer) before
            # this request was written: known now, so the request goes on a new connection
            # instead of failing there (a POST would not be sent again).
            self._drop_connection()
        if self._conn is None:
            self._conn = self.pool.acquire(self.host, self.port, self.scheme)
        return self._conn

    def _send(self, item: _Item) -> None:
        if self._failure is not None:
            item.exchange.fail(self._failure)
            return
        try:
            conn = self._connection()
        except WebClientError as exc:  # unreachable, or a certificate that did not verify
            self._failure = exc
            item.exchange.fail(exc)
            return
        item.pipelined = bool(self._inflight)
        try:
            conn.send(item.wire)
        except LocalFileError as exc:
            # Part of the body went out: the connection is unusable, the request failed.
            self._drop_connection()
            item.exchange.fail(exc)
            return
        except TransportError:
            # The server may still have answered earlier requests, or even this one
            # (an early error response); reading tells, and a closed socket fails the read.
            pass
        except WebClientError as exc:
            # The request could not be serialised: nothing was written, the connection is fine.
            item.exchange.fail(exc)
            return
        self._inflight.append(item)

    def _receive_head(self, item: _Item, conn: OriginConnection) -> ResponseHead | None:
        """The head of the next response; None when the connection was lost reading it (the
        requests in flight are then retried or failed)."""
        try:
            return conn.receive_head(item.wire)
        except ConnectionClosed as exc:
            self._connection_lost(conn, exc)
        except ReadTimeout as exc:
            if not item.pipelined:
                self._inflight.popleft()
                item.exchange.fail(exc)
            # Else the server may have ignored what was written ahead: sent again, alone.
            self._connection_lost(conn, exc)
        except WebClientError as exc:
            self._inflight.popleft()
            item.exchange.fail(exc)
            self._connection_lost(conn, exc)
        return None

    def _read_one(self) -> None:
        item = self._inflight[0]
        conn = self._conn
        assert conn is not None
        head = self._receive_head(item, conn)
        if head is None:
            return
        self._inflight.popleft()
        if (
            head.status != 304  # (a 304 may be followed by a request made from its answer)
            and self._queue
            and not self._inflight
            and item.wire.pipelinable
            and self._queue[0].wire.pipelinable
            and self._failure is None
            and conn.response_complete()
        ):
            sent_ahead = self._send_ahead(conn)
        else:
            sent_ahead = False
        body = conn.iter_body()
        try:
            follow_up = item.exchange.handle(head, body)
            for _ in body:  # whatever the handler left unread
                pass
        except WebClientError as exc:
            item.exchange.fail(exc)
            if not sent_ahead:
                self._connection_lost(conn, exc)
                return
            # Only the handling failed: the response was whole in the buffer, so neither the
            # connection nor the request sent ahead on it is at fault.
            with contextlib.suppress(WebClientError):
                for _ in body:
                    pass
            if not conn.reusable:
                self._requeue(list(self._inflight))
                self._inflight.clear()
                self._drop_connection()
            return
        if follow_up is not None:
            self._queue.appendleft(_Item(item.exchange, follow_up, item.retries))
        if not conn.reusable:
            # The server said it closes: what it did not answer it never processed.
            self._requeue(list(self._inflight))
            self._inflight.clear()
            self._drop_connection()

    def _send_ahead(self, conn: OriginConnection) -> bool:
        """Write the next request while the response that has fully arrived is handled.

        Only one request is ever in flight, so this is not pipelining: the server sees the next
        request after the whole previous response has left it, and the client writes its output
        file while the request travels. False if the request could not even be serialised.
        """
        item = self._queue.popleft()
        item.pipelined = False  # (nothing else is in flight)
        try:
            conn.send(item.wire)
        except WebClientError as exc:
            item.exchange.fail(exc)  # it could not be serialised: nothing was written
            return False
        self._inflight.append(item)
        conn.flush()
        return True

    def _connection_lost(self, conn: OriginConnection, error: WebClientError) -> None:
        """The connection died with requests unanswered: retry or fail them (module rules)."""
        kept_alive = conn.answered > 0
        items = list(self._inflight)
        self._inflight.clear()
        self._drop_connection()
        if any(item.pipelined for item in items):
            self.pool.stop_pipelining(self.host, self.port, self.scheme)
        retry: list[_Item] = []
        for item in items:
            if item.pipelined:
                retry.append(item)  # a GET/HEAD: sent again alone, its retry not used up
            # Requests are only written ahead on a kept-alive connection, so only the first
            # unanswered request of a fresh connection is not retried: its failure is real.
            elif kept_alive and item.wire.idempotent and item.retries < MAX_RETRIES:
                item.retries += 1
                retry.append(item)
            else:
                item.exchange.fail(error)
        self._requeue(retry)

    def _requeue(self, items: list[_Item]) -> None:
        """Put requests back at the head of the queue, in their order."""
        for item in reversed(items):
            self._queue.appendleft(item)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._inflight or self._queue:
                conn.close()
            else:
                self.pool.release(conn)
        for item in [*self._inflight, *self._queue]:
            item.exchange.fail(self._failure or ConnectionClosed("the run was interrupted"))
        self._inflight.clear()
        self._queue.clear()
