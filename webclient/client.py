"""The library entry point: :class:`Client` sends requests through the cache and the pool.

Rules: a GET is answered from the cache when a fresh response is stored, with a conditional
request when a stale one can be revalidated, from the network otherwise; bodies are streamed to a
caller's sink (never held whole in memory unless no sink was given); requests for one origin share
a connection and are pipelined up to ``config.pipeline``; a cache that fails is reported once and
the request goes on without it; everything raised is a :class:`~webclient.errors.WebClientError`.

This module groups requests by origin and orders them; what happens to one request -- the cache's
plan, the network, the sink -- is :mod:`webclient._roundtrip`'s.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._cache import Cache, Clock, cache_key
from ._models import BodySink, ClientRequest, ClientResponse, Result, SinkFactory
from ._pipeline import Lane
from ._pool import ConnectionPool
from ._roundtrip import Context, RoundTrip, start
from .commands import encode_target
from .config import ClientConfig
from .errors import (
    CacheError,
    InvalidURL,
    WebClientError,
)

if TYPE_CHECKING:
    import ssl

    from ._origin import OriginConnection
    from ._storage import CacheInfo

# The models live in ._models; they are named here too, where they were first defined.
__all__ = [
    "BodySink",
    "Client",
    "ClientRequest",
    "ClientResponse",
    "Result",
    "SinkFactory",
    "split_url",
]


#: The schemes fetched, with the port a URL without one means.
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Where requests go: (scheme, host, port).
Origin = tuple[str, str, int]


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of an http:// or https:// URL."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"not a valid URL: {url!r} ({exc})") from exc
    if port == 0:
        raise InvalidURL(f"not a valid URL: {url!r} (port 0)")
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURL(f"only http:// and https:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise InvalidURL(f"no host in URL {url!r}")
    query = f"?{encode_target(parts.query)}" if parts.query else ""
    target = encode_target(parts.path or "/") + query
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], target


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
                    verify=self.config.verify_cache,
                    unverified_tls=self.config.insecure,
                )
            except CacheError as exc:
                self.warn(f"working without the cache: {exc}")
        self._context = Context(self._cache, clock, self.warn)

    def _connect(self, host: str, port: int, scheme: str) -> OriginConnection:
        # Imported with the first connection: a run answered from the cache never needs the
        # connection modules, nor socket.
        from ._origin import OriginConnection

        return OriginConnection(
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
                from ._https import INSECURE_WARNING, make_context

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
    ) -> ClientResponse:
        """Send one request; the response, or the :class:`WebClientError` raised."""
        result = self.request_all([ClientRequest(method.upper(), url, tuple(headers), body, sink)])[
            0
        ]
        if isinstance(result, WebClientError):
            raise result
        return result

    def get(self, url: str, **options: object) -> ClientResponse:
        return self.request("GET", url, **options)  # type: ignore[arg-type]

    def head(self, url: str, **options: object) -> ClientResponse:
        return self.request("HEAD", url, **options)  # type: ignore[arg-type]

    def post(self, url: str, body: bytes | Path, **options: object) -> ClientResponse:
        return self.request("POST", url, body=body, **options)  # type: ignore[arg-type]

    # -- many requests ---------------------------------------------------------------------------

    def request_all(
        self,
        requests: Sequence[ClientRequest],
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

        rounds = Rounds(self.config, clock=self.clock, sleep=self._sleep, uniform=_uniform)

        def send(batch: Sequence[ClientRequest], done: Callable[[int, Result], None]) -> None:
            self._send_round(batch, parallel=parallel, on_result=done, stop=stop)

        return rounds.run(requests, send, on_result, stop)

    def _send_round(
        self,
        requests: Sequence[ClientRequest],
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

        lanes: dict[Origin, list[tuple[int, ClientRequest, str]]] = {}
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
        items: list[tuple[int, ClientRequest, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
    ) -> None:
        from ._spread import SharedQueue, spreadable

        if self.config.connections <= 1 or not spreadable(i[1].method for i in items):
            self._run_connection(origin, items, record, stop)
            return
        extra: list[threading.Thread] = []
        failures: list[BaseException] = []

        def more(count: int) -> None:
            # One thread per connection: each spends most of its time waiting on its socket.
            # (Plain threads, made only now: most runs never open another connection, and
            # concurrent.futures with the logging it imports would cost every run its import.)
            for _ in range(count):
                thread = threading.Thread(target=guarded, name="webclient-connection", daemon=True)
                extra.append(thread)
                thread.start()

        def guarded() -> None:
            try:
                another_connection()
            except BaseException as exc:  # re-raised in the caller's thread, as a future would
                failures.append(exc)

        def another_connection() -> None:
            # Connected before it takes any request: a server that refuses more connections
            # leaves the requests to the connections it accepted instead of failing them.
            try:
                self._pool.release(self._pool.acquire(origin[1], origin[2], origin[0]))
            except WebClientError:
                return
            self._run_connection(origin, run(), answered, stop, queue.ahead)

        queue = SharedQueue(
            ((i[0], i) for i in items), connections=self.config.connections, more=more
        )

        def run() -> Iterator[tuple[int, ClientRequest, str]]:
            return (item for _, item in queue.take())

        def answered(index: int, result: Result) -> None:
            record(index, result)
            queue.answered(index)

        try:
            self._run_connection(origin, run(), answered, stop, queue.ahead)
        finally:
            for thread in extra:
                thread.join()
        if failures:
            raise failures[0]

    def _run_connection(
        self,
        origin: Origin,
        items: Iterable[tuple[int, ClientRequest, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
        ahead: Callable[[], int | None] | None = None,
    ) -> None:
        scheme, host, port = origin
        lane = Lane(self._pool, host, port, depth=self.config.pipeline, scheme=scheme, ahead=ahead)
        lane.run(self._exchanges(lane, origin, items, record, stop))

    def _exchanges(
        self,
        lane: Lane,
        origin: Origin,
        items: Iterable[tuple[int, ClientRequest, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
    ) -> Iterator[RoundTrip]:
        """Plan each request when its turn comes, so it sees what earlier ones did to the cache."""
        outstanding: list[RoundTrip] = []
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
            trip = start(
                self._context,
                index,
                request,
                target,
                headers,
                key,
                record,
                offline=self.config.offline,
            )
            if trip is not None:
                outstanding.append(trip)
                yield trip

    def _headers(self, origin: Origin, request: ClientRequest) -> list[tuple[str, str]]:
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


def _uniform(low: float, high: float) -> float:
    """A random wait between retries; :mod:`random` (whose import loads hashlib) is imported only
    when a retry waits, not by every run."""
    import random

    return random.uniform(low, high)
