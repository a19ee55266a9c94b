"""The library entry point: :class:`Client` sends requests through the cache and the pool.

Rules: a GET is answered from the cache when a fresh response is stored, with a conditional
request when a stale one can be revalidated, from the network otherwise; bodies are streamed to a
caller's sink (never held whole in memory unless no sink was given); requests for one origin share
a connection and are pipelined up to ``config.pipeline``; a cache that fails is reported once and
the request goes on without it; everything raised is a :class:`~webclient.errors.WebClientError`.
"""

from __future__ import annotations

import contextlib
import io
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlsplit

from ._cache import Cache, Clock, Lookup, cache_key
from ._connection import CHUNK_SIZE, Connection, ResponseHead, WireRequest, file_length
from ._freshness import HeaderList, current_age, header_value, may_serve_stale_on_error
from ._pipeline import Lane
from ._pool import ConnectionPool
from ._status import CacheStatus
from .commands import encode_target
from .config import ClientConfig
from .errors import (
    CacheError,
    InvalidURL,
    LocalFileError,
    NotCached,
    TransportError,
    WebClientError,
)

if TYPE_CHECKING:
    import ssl

    from ._storage import CacheInfo


class BodySink(Protocol):
    """Where a response body goes: ``close`` when it arrived whole, ``abort`` when it did not."""

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


#: Given the response (body not yet read), a sink for its body, or None to discard the body.
SinkFactory = Callable[["Response"], BodySink | None]


@dataclass(frozen=True)
class Request:
    """A request for :meth:`Client.request_all`; ``body`` is bytes or a local file to stream."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | Path | None = None
    sink: SinkFactory | None = field(default=None, compare=False)
    #: Called with each count of body bytes uploaded (for progress display).
    on_sent: Callable[[int], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Response:
    """A complete response; ``body`` is None when it went to a sink (or was discarded)."""

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    cache_status: CacheStatus
    body: bytes | None = None
    #: Length of the body as delivered (from the network or the cache).
    body_size: int = 0
    #: Body bytes that crossed the network for this response (0 for cache hits and 304s).
    bytes_received: int = 0
    #: Body bytes uploaded: those written before the response came (a server that refuses an
    #: upload and closes stops it short).
    bytes_sent: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        """A header field's value (repeated fields joined with ", ")."""
        return header_value(self.headers, name)

    @property
    def text(self) -> str:
        return (self.body or b"").decode("utf-8", "replace")


Result = Response | WebClientError


#: Server errors that a stale stored response may answer instead (RFC 5861 §4, "an error is any
#: situation that would result in a 500, 502, 503, or 504 HTTP response status code").
STALE_ON_STATUSES = frozenset({500, 502, 503, 504})
#: The schemes fetched, with the port a URL without one means.
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Where requests go: (scheme, host, port).
Origin = tuple[str, str, int]


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of an http:// or https:// URL."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError as exc:
        raise InvalidURL(f"not a valid URL: {url!r} ({exc})") from exc
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURL(f"only http:// and https:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise InvalidURL(f"no host in URL {url!r}")
    target = encode_target(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname.lower(), port, target


class Client:
    """Sends requests with the cache and keep-alive connections; see the module docstring.

    ``clock`` (seconds since the epoch) decides freshness; tests move it instead of sleeping.
    ``warn`` receives one sentence per problem that did not stop the work (a rebuilt cache).
    ``sleep`` waits between retries; tests pass one that records instead of waiting.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        clock: Clock = time.time,
        warn: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or ClientConfig()
        self.clock = clock
        self._sleep = sleep
        self._warn_callback = warn
        self.warnings: list[str] = []
        self._warn_lock = threading.Lock()
        self._pool = ConnectionPool(self._connect, max_idle=max(4, self.config.connections))
        self._tls: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()
        if self.config.cacert is not None:
            self._tls_context()  # a CA file that cannot be used fails here, before any request
        self._cache: Cache | None = None
        if self.config.use_cache:
            try:
                self._cache = Cache(
                    self.config.cache_path,
                    max_size=self.config.cache_max_size,
                    clock=clock,
                    warn=self.warn,
                    verify=self.config.verify_cache,  # cache hook: --verify-cache
                )
            except CacheError as exc:
                self.warn(f"working without the cache: {exc}")

    def _connect(self, host: str, port: int, scheme: str) -> Connection:
        return Connection(
            host,
            port,
            timeout=self.config.timeout,
            max_body_size=self.config.max_body_size,
            tls=self._tls_context() if scheme == "https" else None,
            max_time=self.config.max_time,
        )

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context, made when the first https:// origin is reached (loading the
        system's roots takes milliseconds that an http-only run does not pay)."""
        with self._tls_lock:
            if self._tls is None:
                from ._tls import INSECURE_WARNING, make_context

                self._tls = make_context(cacert=self.config.cacert, insecure=self.config.insecure)
                if self.config.insecure:
                    self.warn(INSECURE_WARNING)
            return self._tls

    @property
    def connections_opened(self) -> int:
        """TCP connections opened so far: fewer than requests when keep-alive works."""
        return self._pool.opened

    def cache_info(self) -> CacheInfo | None:
        """What the cache holds now; None when this client works without a cache.

        Raises :class:`~webclient.errors.CacheError` when the cache index cannot be read.
        """
        return None if self._cache is None else self._cache.info()

    def warn(self, message: str) -> None:
        with self._warn_lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        import logging

        logger = logging.getLogger("webclient")
        if not logger.handlers:
            # A library leaves output to the program: without this, logging's last-resort
            # handler would print the message a second time beside the callback's.
            logger.addHandler(logging.NullHandler())
        logger.warning("%s", message)
        if self._warn_callback is not None:
            self._warn_callback(message)

    def close(self) -> None:
        self._pool.close()
        if self._cache is not None:
            self._cache.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one request -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | Path | None = None,
        sink: SinkFactory | None = None,
    ) -> Response:
        """Send one request; the response, or the :class:`WebClientError` raised."""
        result = self.request_all([Request(method.upper(), url, tuple(headers), body, sink)])[0]
        if isinstance(result, WebClientError):
            raise result
        return result

    def get(self, url: str, **options: object) -> Response:
        return self.request("GET", url, **options)  # type: ignore[arg-type]

    def head(self, url: str, **options: object) -> Response:
        return self.request("HEAD", url, **options)  # type: ignore[arg-type]

    def post(self, url: str, body: bytes | Path, **options: object) -> Response:
        return self.request("POST", url, body=body, **options)  # type: ignore[arg-type]

    # -- many requests ---------------------------------------------------------------------------

    def request_all(
        self,
        requests: Sequence[Request],
        *,
        parallel: int = 1,
        on_result: Callable[[int, Result], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[Result]:
        """Every request's response or error, in the order given.

        Requests for one origin run in order on one connection; with ``parallel`` > 1 that many
        origins run at once. ``on_result(index, result)`` is called as each one completes (from
        worker threads when parallel). Once ``stop`` is set, requests not yet started are not
        sent: each one's result is a :class:`WebClientError` saying so. Redirects are followed
        and failed GET/HEADs retried in rounds (:mod:`webclient._rounds`).
        """
        from ._rounds import Rounds

        rounds = Rounds(self.config, clock=self.clock, sleep=self._sleep, uniform=random.uniform)

        def send(batch: Sequence[Request], done: Callable[[int, Result], None]) -> None:
            self._send_round(batch, parallel=parallel, on_result=done, stop=stop)

        return rounds.run(requests, send, on_result, stop)

    def _send_round(
        self,
        requests: Sequence[Request],
        *,
        parallel: int = 1,
        on_result: Callable[[int, Result], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[Result]:
        """Each request sent once (no redirect followed, no retry)."""
        results: list[Result | None] = [None] * len(requests)
        lock = threading.Lock()

        def record(index: int, result: Result) -> None:
            with lock:
                if results[index] is not None:
                    return
                results[index] = result
            if on_result is not None:
                on_result(index, result)

        lanes: dict[Origin, list[tuple[int, Request, str]]] = {}
        for index, request in enumerate(requests):
            try:
                scheme, host, port, target = split_url(request.url)
            except InvalidURL as exc:
                record(index, exc)
                continue
            lanes.setdefault((scheme, host, port), []).append((index, request, target))

        jobs = list(lanes.items())
        with self._cache_batch(r.url for r in requests if r.method.upper() == "GET"):
            if parallel <= 1 or len(jobs) <= 1:
                for origin, items in jobs:
                    self._run_lane(origin, items, record, stop)
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(min(parallel, len(jobs)), "webclient-lane") as executor:
                    futures = [executor.submit(self._run_lane, o, i, record, stop) for o, i in jobs]
                    for future in futures:
                        future.result()
        return [r if r is not None else WebClientError("no result") for r in results]

    @contextlib.contextmanager
    def _cache_batch(self, urls: Iterable[str]) -> Iterator[None]:
        """The cache's writes for a run in few transactions (a failing cache is only a warning)."""
        cache = self._cache
        if cache is None:
            yield
            return
        batch = cache.batch(urls)
        try:
            batch.__enter__()
        except CacheError as exc:
            self.warn(f"cache lookup failed, fetching instead: {exc}")
            yield
            return
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(CacheError):
                batch.__exit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            batch.__exit__(None, None, None)
        except CacheError as exc:
            self.warn(f"cache update failed: {exc}")

    def _run_lane(
        self,
        origin: Origin,
        items: list[tuple[int, Request, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
    ) -> None:
        from ._spread import SharedQueue, spreadable

        if self.config.connections <= 1 or not spreadable(i[1].method for i in items):
            self._run_connection(origin, items, record, stop)
            return
        from concurrent.futures import Future, ThreadPoolExecutor

        extra: list[Future[None]] = []
        executor = ThreadPoolExecutor(self.config.connections - 1, "webclient-connection")

        def more(count: int) -> None:
            # One thread per connection: each spends most of its time waiting on its socket.
            for _ in range(count):
                extra.append(executor.submit(another_connection))

        def another_connection() -> None:
            # Connected before it takes any request: a server that refuses more connections
            # leaves the requests to the connections it accepted instead of failing them.
            try:
                self._pool.release(self._pool.acquire(origin[1], origin[2], origin[0]))
            except TransportError:
                return
            self._run_connection(origin, run(), answered, stop)

        queue = SharedQueue(
            ((i[0], i) for i in items), connections=self.config.connections, more=more
        )

        def run() -> Iterator[tuple[int, Request, str]]:
            return (item for _, item in queue.take())

        def answered(index: int, result: Result) -> None:
            record(index, result)
            queue.answered(index)

        try:
            self._run_connection(origin, run(), answered, stop)
        finally:
            executor.shutdown(wait=True)
        for future in extra:
            future.result()

    def _run_connection(
        self,
        origin: Origin,
        items: Iterable[tuple[int, Request, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
    ) -> None:
        scheme, host, port = origin
        lane = Lane(self._pool, host, port, depth=self.config.pipeline, scheme=scheme)
        lane.run(self._exchanges(lane, origin, items, record, stop))

    def _exchanges(
        self,
        lane: Lane,
        origin: Origin,
        items: Iterable[tuple[int, Request, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
    ) -> Iterator[_Exchange]:
        """Plan each request when its turn comes, so it sees what earlier ones did to the cache."""
        outstanding: list[_Exchange] = []
        for index, request, target in items:
            if stop is not None and stop.is_set():
                record(index, WebClientError("not sent: the run was stopped"))
                continue
            method = request.method.upper()
            # Without a cache the URL itself tells repeated requests apart well enough.
            key = request.url if self._cache is None else cache_key(request.url)
            outstanding = [x for x in outstanding if not x.done]
            if any(x.key == key for x in outstanding) or method not in ("GET", "HEAD"):
                lane.settle()
                outstanding = []
            headers = self._headers(origin, request)
            lookup = self._lookup(method, request.url, headers)
            if lookup is not None and lookup.fresh:
                status = CacheStatus.STALE if lookup.stale else CacheStatus.HIT
                served = self._serve_stored(request, lookup, status)
                if served is not None:
                    record(index, served)
                    continue
                lookup = None
            if self.config.offline:
                record(index, _offline_miss(method, lookup))
                continue
            try:
                body, length = _open_body(request.body)
            except LocalFileError as exc:
                record(index, exc)
                continue
            wire_headers = list(headers)
            if lookup is not None:
                wire_headers += lookup.revalidation_headers
            if body is not None:
                wire_headers.append(("Content-Type", "application/octet-stream"))
            wire = WireRequest(method, target, wire_headers, body, length, request.on_sent)
            exchange = _Exchange(self, index, request, key, headers, wire, lookup, record)
            outstanding.append(exchange)
            yield exchange

    def _headers(self, origin: Origin, request: Request) -> list[tuple[str, str]]:
        scheme, host, port = origin
        host_text = f"[{host}]" if ":" in host else host
        defaults = [
            ("Host", host_text if port == _DEFAULT_PORTS[scheme] else f"{host_text}:{port}"),
            ("User-Agent", self.config.user_agent),
            ("Accept", "*/*"),
        ]
        given = {name.lower() for name, _ in request.headers}
        headers = [(n, v) for n, v in defaults if n.lower() not in given] + list(request.headers)
        directive = self._freshness_directive() if request.method.upper() == "GET" else None
        if directive is not None:
            headers.append(("Cache-Control", directive))
        return headers

    def _freshness_directive(self) -> str | None:
        """The request directive that carries ``refresh``, ``max_stale`` or ``offline`` to the
        cache (and, for the first two, to any cache on the way)."""
        config = self.config
        if config.refresh:
            return "no-cache"
        if config.offline or config.max_stale == float("inf"):
            return "max-stale"
        if config.max_stale is not None:
            return f"max-stale={int(config.max_stale)}"
        return None

    def _lookup(self, method: str, url: str, headers: list[tuple[str, str]]) -> Lookup | None:
        if self._cache is None or method != "GET":
            return None
        try:
            return self._cache.lookup(url, headers)
        except CacheError as exc:
            self.warn(f"cache lookup failed, fetching instead: {exc}")
            return None

    def _stale_on_error(
        self,
        request: Request,
        headers: HeaderList,
        lookup: Lookup | None,
        error: WebClientError | str,
    ) -> Result | None:
        """The stored response, stale, for a request whose server could not be reached or
        answered with a server error (``error`` is then its status line), when RFC 9111 §4.2.4
        and RFC 5861 allow it (said in a warning); None when they do not."""
        if self._cache is None or lookup is None:
            return None
        if not isinstance(error, str | TransportError):
            return None
        entry = lookup.entry
        age = current_age(entry.headers, entry.request_time, entry.response_time, self.clock())
        if not may_serve_stale_on_error(
            entry.headers, headers, age, status=entry.status, response_time=entry.response_time
        ):
            return None
        try:
            served = self._serve_stored(request, Lookup(entry, False, age), CacheStatus.STALE)
        except WebClientError as exc:
            return exc
        if served is not None:
            cause = error if isinstance(error, WebClientError) else f"the server answered {error}"
            self.warn(f"{request.url}: {cause}; served the stored copy ({int(age)} s old)")
        return served

    def _serve_stored(
        self, request: Request, lookup: Lookup, status: CacheStatus
    ) -> Response | None:
        """A response from the stored body; None when the body could not be read."""
        assert self._cache is not None
        entry = lookup.entry
        try:
            file = self._cache.use(lookup)
        except CacheError as exc:
            self.warn(f"cache entry unusable, fetching instead: {exc}")
            return None
        response = Response(
            method=request.method.upper(),
            url=request.url,
            status=entry.status,
            reason=entry.reason,
            headers=tuple(self._cache.served_headers(lookup)),
            cache_status=status,
        )
        if isinstance(file, bytes):
            return _deliver(request, response, iter((file,)), received=False)
        with file:
            return _deliver(request, response, _file_chunks(file), received=False)


def _offline_miss(method: str, lookup: Lookup | None) -> NotCached:
    if method != "GET":
        return NotCached(
            f"not sent: offline, and a {method} request cannot be answered by the cache"
        )
    if lookup is not None:
        # Only must-revalidate, proxy-revalidate or no-cache keep max-stale from serving it.
        return NotCached("offline: the stored response may not be used without revalidation")
    return NotCached("offline: not in the cache")


def _file_chunks(file: BinaryIO) -> Iterator[bytes]:
    while chunk := file.read(CHUNK_SIZE):
        yield chunk


def _open_body(body: bytes | Path | None) -> tuple[bytes | BinaryIO | None, int]:
    if body is None or isinstance(body, bytes):
        return body, len(body or b"")
    try:
        file = open(body, "rb")  # noqa: SIM115 - closed by the exchange when the request is done
    except FileNotFoundError as exc:
        raise LocalFileError(f"no such file to upload: {body}") from exc
    except IsADirectoryError as exc:
        raise LocalFileError(f"cannot upload a folder: {body}") from exc
    except OSError as exc:
        raise LocalFileError(f"cannot read {body}: {exc.strerror}") from exc
    return file, file_length(file)


def _deliver(
    request: Request,
    response: Response,
    chunks: Iterator[bytes],
    *,
    received: bool,
    also: Callable[[bytes], None] | None = None,
) -> Response:
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
    return Response(
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


class _Exchange:
    """One planned request in a lane: sends, then applies the answer to the cache and the sink."""

    def __init__(
        self,
        client: Client,
        index: int,
        request: Request,
        key: str,
        headers: list[tuple[str, str]],
        wire: WireRequest,
        lookup: Lookup | None,
        record: Callable[[int, Result], None],
    ) -> None:
        self.client = client
        self.index = index
        self.request = request
        self.key = key
        self.headers = headers
        self.wire = wire
        self.lookup = lookup
        self.record = record
        self.done = False
        self.request_time = client.clock()

    def _finish(self, result: Result) -> None:
        self.done = True
        body = self.wire.body
        if body is not None and not isinstance(body, bytes):
            body.close()
        self.record(self.index, result)

    def fail(self, error: WebClientError) -> None:
        # RFC 9111 §4.2.4: a stored response may answer, stale, when the server is unreachable.
        stale = self.client._stale_on_error(self.request, self.headers, self.lookup, error)
        self._finish(error if stale is None else stale)

    def _unconditional(self) -> WireRequest:
        """The request again without validators, when the 304 cannot be used."""
        self.lookup = None
        names = {"if-none-match", "if-modified-since"}
        headers = [(n, v) for n, v in self.wire.headers if n.lower() not in names]
        self.wire = self.wire.replace(headers=headers)
        return self.wire

    def _revalidated(
        self,
        cache: Cache,
        lookup: Lookup,
        head: ResponseHead,
        body: Iterator[bytes],
        response_time: float,
    ) -> WireRequest | None:
        """Serve the stored body a 304 confirmed; the request again unconditionally when the
        304 cannot be applied."""
        client = self.client
        for _ in body:
            pass
        try:
            fresh = cache.freshen(
                lookup, head.headers, request_time=self.request_time, response_time=response_time
            )
        except CacheError as exc:
            client.warn(f"cache update failed: {exc}")
            fresh = None
        served = (
            client._serve_stored(self.request, fresh, CacheStatus.REVALIDATED)
            if fresh is not None
            else None
        )
        if served is None:
            return self._unconditional()
        self._finish(served)
        return None

    def _stale_instead(self, head: ResponseHead, body: Iterator[bytes]) -> bool:
        """Answer a server error with the stored copy when RFC 5861 allows (True if done)."""
        if head.status not in STALE_ON_STATUSES or self.lookup is None:
            return False
        status = f"{head.status} {head.reason}".strip()
        stale = self.client._stale_on_error(self.request, self.headers, self.lookup, status)
        if stale is None:
            return False
        for _ in body:
            pass
        self._finish(stale)
        return True

    def handle(self, head: ResponseHead, body: Iterator[bytes]) -> WireRequest | None:
        client, cache = self.client, self.client._cache
        response_time = client.clock()
        method = self.wire.method
        if head.status == 304 and self.lookup is not None and cache is not None:
            return self._revalidated(cache, self.lookup, head, body, response_time)
        if self._stale_instead(head, body):
            return None
        uses_cache = cache is not None and method in ("GET", "HEAD")
        response = Response(
            method=method,
            url=self.request.url,
            status=head.status,
            reason=head.reason,
            headers=tuple(head.headers),
            cache_status=CacheStatus.MISS if uses_cache else CacheStatus.BYPASS,
            bytes_sent=self.wire.body_sent,
        )
        writer = None
        if cache is not None and cache.wants(method, head.status, head.headers, self.headers):
            try:
                writer = cache.begin()
            except CacheError as exc:
                client.warn(f"not caching: {exc}")
        try:
            delivered = _deliver(
                self.request,
                response,
                body,
                received=True,
                also=writer.write if writer is not None else None,
            )
        except LocalFileError as exc:
            # Only the sink failed; the body was read to its end and the connection is fine.
            if writer is not None:
                writer.discard()
            self._finish(exc)
            return None
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        if cache is not None:
            try:
                if writer is not None:
                    cache.store(
                        self.request.url,
                        self.headers,
                        head.status,
                        head.reason,
                        head.headers,
                        writer,
                        request_time=self.request_time,
                        response_time=response_time,
                    )
                cache.invalidate(method, self.request.url, head.status, head.headers)
            except CacheError as exc:
                client.warn(f"cache update failed: {exc}")
        self._finish(delivered)
        return None
