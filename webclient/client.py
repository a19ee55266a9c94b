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
from ._connection import Connection
from ._models import BodySink, Request, Response, Result, SinkFactory
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
    from ._storage import CacheInfo

# The models live in ._models; they are named here too, where they were first defined.
__all__ = ["BodySink", "Client", "Request", "Response", "Result", "SinkFactory", "split_url"]


def split_url(url: str) -> tuple[str, int, str]:
    """``(host, port, target)`` of an http:// URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:
        raise InvalidURL(f"not a valid URL: {url!r} ({exc})") from exc
    if parts.scheme.lower() != "http":
        raise InvalidURL(f"only http:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise InvalidURL(f"no host in URL {url!r}")
    target = encode_target(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname.lower(), port, target


class Client:
    """Sends requests with the cache and keep-alive connections; see the module docstring.

    ``clock`` (seconds since the epoch) decides freshness; tests move it instead of sleeping.
    ``warn`` receives one sentence per problem that did not stop the work (a rebuilt cache).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        clock: Clock = time.time,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or ClientConfig()
        self.clock = clock
        self._warn_callback = warn
        self.warnings: list[str] = []
        self._warn_lock = threading.Lock()
        self._pool = ConnectionPool(self._connect)
        self._cache: Cache | None = None
        if self.config.use_cache:
            try:
                self._cache = Cache(
                    self.config.cache_path,
                    max_size=self.config.cache_max_size,
                    clock=clock,
                    warn=self.warn,
                    verify=self.config.verify_cache,
                )
            except CacheError as exc:
                self.warn(f"working without the cache: {exc}")
        self._context = Context(self._cache, clock, self.warn)

    def _connect(self, host: str, port: int) -> Connection:
        return Connection(
            host, port, timeout=self.config.timeout, max_body_size=self.config.max_body_size
        )

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
        sent: each one's result is a :class:`WebClientError` saying so.
        """
        results: list[Result | None] = [None] * len(requests)
        lock = threading.Lock()

        def record(index: int, result: Result) -> None:
            with lock:
                if results[index] is not None:
                    return
                results[index] = result
            if on_result is not None:
                on_result(index, result)

        lanes: dict[tuple[str, int], list[tuple[int, Request, str]]] = {}
        for index, request in enumerate(requests):
            try:
                host, port, target = split_url(request.url)
            except InvalidURL as exc:
                record(index, exc)
                continue
            lanes.setdefault((host, port), []).append((index, request, target))

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
        origin: tuple[str, int],
        items: list[tuple[int, Request, str]],
        record: Callable[[int, Result], None],
        stop: threading.Event | None = None,
    ) -> None:
        lane = Lane(self._pool, origin[0], origin[1], depth=self.config.pipeline)
        lane.run(self._exchanges(lane, origin, items, record, stop))

    def _exchanges(
        self,
        lane: Lane,
        origin: tuple[str, int],
        items: list[tuple[int, Request, str]],
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

    def _headers(self, origin: tuple[str, int], request: Request) -> list[tuple[str, str]]:
        host, port = origin
        host_text = f"[{host}]" if ":" in host else host
        defaults = [
            ("Host", host_text if port == 80 else f"{host_text}:{port}"),
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
