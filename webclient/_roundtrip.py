"""One request's round trip: the cache's plan followed, the network asked when needed, the
answer delivered to the caller's sink and settled with the cache.

Rules: the cache decides (:meth:`~webclient._cache.Cache.plan` before the request,
:meth:`~webclient._cache.Cache.settle` after the answer) and this module only follows: a
:class:`~webclient._cache.Fresh` plan is served from the stored body without the network, a
:class:`~webclient._cache.Revalidate` plan sends the stored validators, a 304 that cannot be
applied sends the request again without them; a request whose origin cannot be reached is
answered by the stored response, stale, when RFC 9111 §4.2.4 allows it (said in a warning), and
so is a revalidation answered with a server error (500, 502, 503 or 504, RFC 5861 §4).
Bodies are streamed to the request's sink (into memory when it gave none) and always read to
their end, so the connection can be reused; a sink that fails is aborted and its failure is the
request's result, without storing the body.

It is handed what it needs -- the cache (or None), the clock and the warning callback -- as one
:class:`Context`, never the :class:`~webclient.client.Client`.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ._cache import MISS, Cache, Clock, Fresh, Miss, Plan, Revalidate, Store
from ._freshness import header_value
from ._models import BodySink, ClientRequest, ClientResponse, ResponseHead, Result
from ._status import CacheStatus
from .errors import LocalFileError, NotCached, ProtocolError, TransportError, WebClientError

if TYPE_CHECKING:
    from ._wire import WireRequest

#: Receives each request's result, with the request's position in the run.
Record = Callable[[int, Result], None]
#: Server errors that a stale stored response may answer instead (RFC 5861 §4, "an error is any
#: situation that would result in a 500, 502, 503, or 504 HTTP response status code").
STALE_ON_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Context:
    """What a round trip is handed: the cache (None without one), the clock, the warnings."""

    cache: Cache | None
    clock: Clock
    warn: Callable[[str], None]

    def plan(self, method: str, url: str, headers: list[tuple[str, str]]) -> Plan:
        return MISS if self.cache is None else self.cache.plan(method, url, headers)

    def serve(self, request: ClientRequest, fresh: Fresh) -> ClientResponse | None:
        """The stored response as the request's answer; None when its body could not be read."""
        assert self.cache is not None
        opened = self.cache.open(fresh)
        if opened is None:
            return None
        headers, body = opened
        entry = fresh.lookup.entry
        response = ClientResponse(
            method=request.method.upper(),
            url=request.url,
            status=entry.status,
            reason=entry.reason,
            headers=tuple(headers),
            cache_status=fresh.status,
        )
        if isinstance(body, bytes):
            return deliver(request, response, iter((body,)), received=False)
        with body:
            return deliver(request, response, _file_chunks(body), received=False)


def start(
    context: Context,
    index: int,
    request: ClientRequest,
    target: str,
    headers: list[tuple[str, str]],
    key: str,
    record: Record,
    *,
    offline: bool,
) -> RoundTrip | None:
    """The round trip to send for this request; None when it was answered (from the cache, or
    with an error) without the network."""
    method = request.method.upper()
    plan = context.plan(method, request.url, headers)
    if isinstance(plan, Fresh):
        served = context.serve(request, plan)
        if served is not None:
            record(index, served)
            return None
        plan = MISS
    if offline:
        record(index, _offline_miss(method, plan))
        return None
    try:
        body, length = _open_body(request.body)
    except LocalFileError as exc:
        record(index, exc)
        return None
    wire_headers = list(headers)
    if isinstance(plan, Revalidate):
        wire_headers += plan.headers
    if body is not None:
        wire_headers.append(("Content-Type", "application/octet-stream"))
    from ._wire import WireRequest  # (see _file_chunks)

    wire = WireRequest(method, target, wire_headers, body, length, request.on_sent)
    return RoundTrip(context, index, request, key, headers, wire, plan, record)


def _offline_miss(method: str, plan: Plan) -> NotCached:
    if method != "GET":
        return NotCached(
            f"not sent: offline, and a {method} request cannot be answered by the cache"
        )
    if isinstance(plan, Revalidate):
        # Only must-revalidate, proxy-revalidate or no-cache keep max-stale from serving it.
        return NotCached("offline: the stored response may not be used without revalidation")
    return NotCached("offline: not in the cache")


def _file_chunks(file: BinaryIO) -> Iterator[bytes]:
    # The connection modules (and socket) are imported by the first request that needs them, so
    # a run answered from the cache (small bodies) never loads them.
    from ._origin import CHUNK_SIZE

    while chunk := file.read(CHUNK_SIZE):
        yield chunk


def _open_body(body: bytes | Path | None) -> tuple[bytes | BinaryIO | None, int]:
    if body is None or isinstance(body, bytes):
        return body, len(body or b"")
    try:
        # O_NONBLOCK: a named pipe without a writer would hold the open for ever.
        file = os.fdopen(os.open(body, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb")
    except FileNotFoundError as exc:
        raise LocalFileError(f"no such file to upload: {body}") from exc
    except IsADirectoryError as exc:
        raise LocalFileError(f"cannot upload a folder: {body}") from exc
    except OSError as exc:
        raise LocalFileError(f"cannot read {body}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise LocalFileError(
            f"cannot upload {body}: not a regular file (a device or a pipe has no length to send)"
        )
    from ._wire import file_length

    return file, file_length(file)


def deliver(
    request: ClientRequest,
    response: ClientResponse,
    chunks: Iterator[bytes],
    *,
    received: bool,
    also: Callable[[bytes], None] | None = None,
) -> ClientResponse:
    """Stream a body to the request's sink (or into memory); read it all even if the sink fails.

    The body is always read to its end: the connection can only be reused after it. A sink that
    fails is aborted and the failure is raised once the body is consumed.
    """
    sink: BodySink | None
    buffer: io.BytesIO | None = None
    if request.sink is None:
        buffer = io.BytesIO()
        sink = _MemorySink(buffer)
    else:
        sink = request.sink(response)
    size = 0
    sink_error: Exception | None = None
    try:
        for chunk in chunks:
            size += len(chunk)
            if also is not None:
                also(chunk)
            if sink is not None and sink_error is None:
                try:
                    sink.write(chunk)
                except (OSError, WebClientError) as exc:
                    sink_error = exc
                    _abort(sink)
    except BaseException:
        if sink is not None and sink_error is None:
            _abort(sink)
        raise
    if sink_error is not None:
        if isinstance(sink_error, WebClientError):
            raise sink_error
        raise LocalFileError(f"cannot write the body: {sink_error}") from sink_error
    if sink is not None and buffer is None:
        try:
            sink.close()
        except OSError as exc:
            raise LocalFileError(f"cannot write the body: {exc}") from exc
    return ClientResponse(
        method=response.method,
        url=response.url,
        status=response.status,
        reason=response.reason,
        headers=response.headers,
        cache_status=response.cache_status,
        body=buffer.getvalue() if buffer is not None else None,
        body_size=size,
        bytes_received=size if received else 0,
        bytes_sent=response.bytes_sent,
    )


class _MemorySink:
    """The body in memory, for callers that gave no sink."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self.buffer = buffer

    def write(self, data: bytes) -> int:
        return self.buffer.write(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _abort(sink: BodySink) -> None:
    abort = getattr(sink, "abort", None)
    if callable(abort):
        abort()


class RoundTrip:
    """One planned request in a lane: sends, then applies the answer to the cache and the sink
    (the :class:`~webclient._pipeline.Exchange` the lane runs)."""

    def __init__(
        self,
        context: Context,
        index: int,
        request: ClientRequest,
        key: str,
        headers: list[tuple[str, str]],
        wire: WireRequest,
        plan: Plan,
        record: Record,
    ) -> None:
        self.context = context
        self.index = index
        self.request = request
        #: Requests of one key are not pipelined behind each other (the second sees the first's
        #: effect on the cache).
        self.key = key
        self.headers = headers
        self.wire = wire
        self.plan = plan
        self.record = record
        self.done = False
        self.request_time = context.clock()

    def _finish(self, result: Result) -> None:
        self.done = True
        body = self.wire.body
        if body is not None and not isinstance(body, bytes):
            body.close()
        self.record(self.index, result)

    def fail(self, error: WebClientError) -> None:
        # RFC 9111 §4.2.4: a stored response may answer, stale, when the server is unreachable.
        if isinstance(error, TransportError) and self._serve_stale(str(error)):
            return
        self._finish(error)

    def _serve_stale(self, cause: str) -> bool:
        """Answer with the stored response, stale, when the cache allows it (said in a warning,
        with ``cause``); False when it does not, or its body could not be read."""
        cache = self.context.cache
        fresh = cache.stale_on_error(self.plan, self.headers) if cache is not None else None
        if fresh is None:
            return False
        try:
            served = self.context.serve(self.request, fresh)
        except WebClientError as exc:  # the sink failed: that is the request's result
            self._finish(exc)
            return True
        if served is None:
            return False
        age = int(fresh.lookup.age)
        self.context.warn(f"{self.request.url}: {cause}; served the stored copy ({age} s old)")
        self._finish(served)
        return True

    def _unconditional(self) -> WireRequest:
        """The request again without validators, when the 304 cannot be used."""
        self.plan = MISS
        names = {"if-none-match", "if-modified-since"}
        headers = [(n, v) for n, v in self.wire.headers if n.lower() not in names]
        self.wire = self.wire.replace(headers=headers)
        return self.wire

    def _unasked_part(self, head: ResponseHead, body: Iterator[bytes]) -> bool:
        """A 206 to a request without Range fails it: a part of a body is never taken for the
        whole (RFC 9110 §15.3.7), so it is neither delivered nor stored."""
        if head.status != 206 or header_value(self.wire.headers, "range") is not None:
            return False
        for _ in body:
            pass
        message = f"{self.request.url}: 206 Partial Content to a request that asked for no range"
        self._finish(ProtocolError(message))
        return True

    def _stale_instead(self, head: ResponseHead, body: Iterator[bytes]) -> bool:
        """Answer a server error to a revalidation with the stored copy when RFC 5861 allows
        (True if done); the error's body is read to its end and discarded."""
        if head.status not in STALE_ON_STATUSES or not isinstance(self.plan, Revalidate):
            return False
        status = f"{head.status} {head.reason}".strip()
        if not self._serve_stale(f"the server answered {status}"):
            return False
        for _ in body:
            pass
        return True

    def handle(self, head: ResponseHead, body: Iterator[bytes]) -> WireRequest | None:
        if self._unasked_part(head, body) or self._stale_instead(head, body):
            return None
        context, cache = self.context, self.context.cache
        response_time = context.clock()
        method = self.wire.method
        store: Store | None = None
        if cache is not None:
            settled = cache.settle(
                self.plan,
                method=method,
                url=self.request.url,
                request_headers=self.headers,
                head=head,
                request_time=self.request_time,
                response_time=response_time,
            )
            if not isinstance(settled, Store):
                for _ in body:  # a 304 has no body: this ends the response on the connection
                    pass
                return self._revalidated(settled)
            store = settled
        uses_cache = cache is not None and method == "GET"
        response = ClientResponse(
            method=method,
            url=self.request.url,
            status=head.status,
            reason=head.reason,
            headers=tuple(head.headers),
            cache_status=CacheStatus.MISS if uses_cache else CacheStatus.BYPASS,
            bytes_sent=self.wire.body_sent,
        )
        writer = store.writer if store is not None else None
        try:
            delivered = deliver(
                self.request,
                response,
                body,
                received=True,
                also=writer.write if writer is not None else None,
            )
        except LocalFileError as exc:
            # Only the sink failed; the body was read to its end and the connection is fine.
            if store is not None:
                store.discard()
            self._finish(exc)
            return None
        except BaseException:
            if store is not None:
                store.discard()
            raise
        if store is not None:
            store.commit()
        self._finish(delivered)
        return None

    def _revalidated(self, settled: Fresh | Miss) -> WireRequest | None:
        """Serve the stored body a 304 confirmed; the request again unconditionally when the
        304 could not be applied."""
        served = self.context.serve(self.request, settled) if isinstance(settled, Fresh) else None
        if served is None:
            return self._unconditional()
        self._finish(served)
        return None
