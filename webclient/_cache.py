"""The private HTTP cache: what RFC 9111 lets us store, serve, revalidate and invalidate.

Rules: only GET responses are stored, keyed by the full URL including the query, with variants
kept apart by their Vary request headers; a fresh response is served without the network, a stale
one after a 304 for it, or, with a warning, when the origin cannot be reached and no directive
forbids it (RFC 9111 §4.2.4); a 304 freshens the stored header fields, or removes the entry when
it brings ``no-store`` or ``Vary: *``; a successful unsafe request drops what is
stored for its URL; bodies above the size limit are not kept and the least recently used entries
are evicted to stay under it. A stored body is served only when its file is the size recorded
(and, with ``verify``, has the SHA-256 it is named by); otherwise its entry is dropped with a
warning and the request is a miss. The rules themselves are in :mod:`webclient._freshness`;
this module applies them to :mod:`webclient._storage`.

The decisions are taken here, in two calls, and the exchange logic only follows them:
:meth:`Cache.plan` says what a request needs (:class:`Fresh`: the stored response answers;
:class:`Revalidate`: the origin is asked, with validators when the stored response has them;
:class:`Miss`: the origin is asked), and :meth:`Cache.settle` says what the origin's answer does
to the cache (a 304 makes the stored response answer, or asks for the request again without
validators; anything else is offered to a :class:`Store` as its body arrives). A failing cache
never fails a request: these calls report the failure through ``warn`` once and carry on as if
nothing were stored.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from . import _freshness as freshness
from ._freshness import HeaderList
from ._status import CacheStatus
from .errors import CacheError

if TYPE_CHECKING:
    from ._models import ResponseHead
    from ._storage import BodyWriter, CacheInfo, CheckReport, Entry

Clock = Callable[[], float]
Warn = Callable[[str], None]

__all__ = [
    "Cache",
    "CacheStatus",
    "Clock",
    "Fresh",
    "Lookup",
    "Miss",
    "Plan",
    "Revalidate",
    "Store",
    "cache_key",
]

#: Stored bodies up to this size are read whole in one call when served.
SMALL_BODY = 256 * 1024


class Lookup:
    """A stored response selected for a request."""

    __slots__ = ("age", "entry", "fresh", "stale")

    def __init__(self, entry: Entry, fresh: bool, age: float, *, stale: bool = False) -> None:
        self.entry = entry
        #: May be served without the network (fresh, or stale within the request's max-stale).
        self.fresh = fresh
        self.age = age
        #: Served past its freshness because the request's ``max-stale`` accepts it.
        self.stale = stale

    def __repr__(self) -> str:
        return (
            f"Lookup({self.entry!r}, fresh={self.fresh!r}, age={self.age!r}, stale={self.stale!r})"
        )

    @property
    def revalidation_headers(self) -> list[tuple[str, str]]:
        return freshness.conditional_headers(self.entry.headers)


@dataclass(frozen=True, slots=True)
class Fresh:
    """The stored response answers without the network."""

    lookup: Lookup
    #: HIT (fresh), STALE (accepted by the request's max-stale, or the origin unreachable) or
    #: REVALIDATED (a 304 confirmed it).
    status: CacheStatus


@dataclass(frozen=True, slots=True)
class Revalidate:
    """The origin is asked; the stored response answers if a 304 confirms it, or, stale, if
    the origin cannot be reached and RFC 9111 §4.2.4 allows it."""

    lookup: Lookup

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The validators to send (none when the stored response has none usable)."""
        return self.lookup.revalidation_headers


@dataclass(frozen=True, slots=True)
class Miss:
    """The origin is asked; nothing stored can answer."""


#: What a request needs from the cache, decided by :meth:`Cache.plan`.
Plan = Fresh | Revalidate | Miss
#: The plan of a request that does not use the cache (or meets no cache).
MISS = Miss()


#: A URL already spelled as its key: lower-case http(s) and host name, an explicit port without
#: leading zeros, a path and maybe a query, and nothing urlsplit would strip or respell (spaces,
#: control characters, a fragment). Most URLs of a batch are (it writes them so).
_KEY_SPELLING = re.compile(r"https?://[a-z0-9.-]+:([1-9][0-9]{0,4})/[^\x00-\x20\x7f#\\]*")


@functools.lru_cache(maxsize=4096)
def cache_key(url: str) -> str:
    """The URL in one spelling: lower-case scheme and host, explicit port, no fragment."""
    spelled = _KEY_SPELLING.fullmatch(url)
    if spelled is not None and int(spelled[1]) <= 65535 and not url.endswith("?"):
        return url  # what _respelled(url) gives, without splitting the URL (a few us each)
    return _respelled(url)


def _respelled(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return urlunsplit((parts.scheme.lower(), f"{host}:{port}", parts.path or "/", parts.query, ""))


class Cache:
    """The cache folder with its policy; safe to share between threads and processes."""

    def __init__(
        self,
        folder: Path,
        *,
        max_size: int,
        clock: Clock = time.time,
        warn: Warn | None = None,
        verify: bool = False,
        unverified_tls: bool = False,
    ) -> None:
        from ._storage import Storage

        self.max_size = max_size
        self.clock = clock
        #: Receives one sentence per failure the cache survived (the request went on without it).
        self.warn: Warn = warn if warn is not None else _ignore
        #: Hash every stored body before serving it, not only check its size.
        self.verify = verify
        #: https answers come without certificate verification (--insecure): anyone on the path
        #: may have written them, so they neither enter the cache nor freshen what it holds,
        #: where a later, verified run would take them as the server's.
        self.unverified_tls = unverified_tls
        self.storage = Storage(folder, warn=warn)

    @contextlib.contextmanager
    def batch(self, urls: Iterable[str] = ()) -> Iterator[None]:
        """Many requests' cache writes in few transactions; the rows of ``urls`` read at once."""
        with self.storage.batch():
            self.storage.prefetch(cache_key(url) for url in urls)
            yield

    @property
    def folder(self) -> Path:
        return self.storage.folder

    def close(self) -> None:
        self.storage.close()

    # -- the two decisions ------------------------------------------------------------------------

    def plan(self, method: str, url: str, request_headers: HeaderList) -> Plan:
        """What this request needs: only a GET may be answered from the cache."""
        if method != "GET":
            return MISS
        try:
            lookup = self.lookup(url, request_headers)
        except CacheError as exc:
            self.warn(f"cache lookup failed, fetching instead: {exc}")
            return MISS
        if lookup is None:
            return MISS
        if lookup.fresh:
            return Fresh(lookup, CacheStatus.STALE if lookup.stale else CacheStatus.HIT)
        return Revalidate(lookup)

    def settle(
        self,
        plan: Plan,
        *,
        method: str,
        url: str,
        request_headers: HeaderList,
        head: ResponseHead,
        request_time: float,
        response_time: float,
    ) -> Fresh | Miss | Store:
        """What the origin's answer does: a 304 for a revalidated response makes it answer
        (:class:`Fresh`) or, when it cannot be applied, asks for the request again without
        validators (:class:`Miss`); any other answer goes through a :class:`Store`."""
        untrusted = self.unverified_tls and url[:6].lower() == "https:"
        if head.status == 304 and isinstance(plan, Revalidate):
            if untrusted:
                return MISS  # asked again without validators: the body comes, not stored
            try:
                fresh = self.freshen(
                    plan.lookup,
                    head.headers,
                    request_time=request_time,
                    response_time=response_time,
                )
            except CacheError as exc:
                self.warn(f"cache update failed: {exc}")
                fresh = None
            return MISS if fresh is None else Fresh(fresh, CacheStatus.REVALIDATED)
        writer = None
        if not untrusted and self.wants(method, head.status, head.headers, request_headers):
            try:
                writer = self.begin()
            except CacheError as exc:
                self.warn(f"not caching: {exc}")
        return Store(self, writer, method, url, request_headers, head, request_time, response_time)

    def stale_on_error(self, plan: Plan, request_headers: HeaderList) -> Fresh | None:
        """The stored response, stale, for a request whose origin could not be reached, when
        RFC 9111 §4.2.4 allows it; None when it does not."""
        if not isinstance(plan, Revalidate):
            return None
        entry = plan.lookup.entry
        age = freshness.current_age(
            entry.headers, entry.request_time, entry.response_time, self.clock()
        )
        if not _stale_on_error_allowed(entry, request_headers, age):
            return None
        return Fresh(Lookup(entry, False, age), CacheStatus.STALE)

    def open(self, fresh: Fresh) -> tuple[list[tuple[str, str]], BinaryIO | bytes] | None:
        """The header fields and body to serve a stored response with; None (said in a warning)
        when its body cannot be read, and the request goes to the origin."""
        try:
            body = self.use(fresh.lookup)
        except CacheError as exc:
            self.warn(f"cache entry unusable, fetching instead: {exc}")
            return None
        return self.served_headers(fresh.lookup), body

    # -- the mechanics ----------------------------------------------------------------------------

    def lookup(self, url: str, request_headers: HeaderList) -> Lookup | None:
        """The stored response that may answer this GET, if any: fresh, in need of a 304, or
        only usable if the origin cannot be reached."""
        # As a tuple, the request's fields are indexed once (and the index is shared by every
        # request of a batch that sends the same fields) rather than scanned for each rule.
        request_headers = tuple(request_headers)
        if "no-store" in freshness.cache_control(request_headers):
            return None
        now = self.clock()
        for entry in self.storage.entries(cache_key(url)):
            if not freshness.vary_matches(entry.vary, request_headers):
                continue
            problem = self.storage.body_problem(entry, verify=self.verify)
            if problem is not None:
                self.storage.drop_damaged(entry, problem)
                continue
            age = freshness.current_age(entry.headers, entry.request_time, entry.response_time, now)
            fresh = freshness.is_fresh(
                entry.status, entry.headers, entry.request_time, entry.response_time, now, age=age
            ) and freshness.request_allows_stored(request_headers, age)
            if not fresh and freshness.accepts_stale(
                entry.headers,
                request_headers,
                age,
                status=entry.status,
                response_time=entry.response_time,
            ):
                return Lookup(entry, True, age, stale=True)
            if not (fresh or freshness.has_validator(entry.headers)) and not (
                _stale_on_error_allowed(entry, request_headers, age)  # an unreachable origin
            ):
                return None
            return Lookup(entry, fresh, age)
        return None

    def served_headers(self, lookup: Lookup) -> list[tuple[str, str]]:
        """The stored header fields with an Age field, as a cache must send them (§5.1)."""
        headers = [(n, v) for n, v in lookup.entry.headers if n.lower() != "age"]
        age = lookup.age if lookup.age != float("inf") else 0.0
        return [*headers, ("Age", str(int(age)))]

    def use(self, lookup: Lookup) -> BinaryIO | bytes:
        """The stored body of a response about to be served (bytes when small, else an open
        file), and note the use."""
        entry = lookup.entry
        if entry.body_size <= SMALL_BODY:
            data = self.storage.read_body(entry)
            # Hashed again as read: the file may have changed since the lookup checked it.
            if self.verify and _sha256(data) != entry.body_sha:
                problem = "does not match its SHA-256 (it was changed on disk)"
                self.storage.drop_damaged(entry, problem)
                raise CacheError(f"a stored body {problem}")
            body: BinaryIO | bytes = data
        else:
            body = self.storage.open_body(entry)
        self.storage.touch(entry.id, self.clock())
        return body

    def wants(
        self, method: str, status: int, headers: HeaderList, request_headers: HeaderList
    ) -> bool:
        """Whether a response is worth storing: the RFC allows it, it can be reused, and the
        cache can be written."""
        return not self.storage.read_only and freshness.is_storable(
            method, status, headers, request_headers
        )

    def begin(self) -> BodyWriter:
        """A writer for a body that will be stored once complete."""
        return self.storage.new_body(self.max_size)

    def store(
        self,
        url: str,
        request_headers: HeaderList,
        status: int,
        reason: str,
        headers: HeaderList,
        body: BodyWriter,
        *,
        request_time: float,
        response_time: float,
    ) -> bool:
        """Publish a complete response; False when it was not kept (too large, or the disk
        refused it: reported once by the storage)."""
        if body.dropped:
            if body.fault is not None:
                self.storage.write_failed(body.fault)
            body.discard()
            return False
        vary = freshness.vary_key(headers, request_headers)
        if vary is None:
            body.discard()
            return False
        key = cache_key(url)
        body.finish()
        try:
            stored = self.storage.insert(
                key=key,
                vary=vary,
                status=status,
                reason=reason,
                headers=freshness.stored_fields(headers),  # RFC 9111 §3.1: no hop-by-hop fields
                body=body,
                request_time=request_time,
                response_time=response_time,
                now=self.clock(),
                # Read inside the write transaction: another process may have stored rows of
                # this key since this run looked.
                replaces=lambda entry: freshness.vary_matches(entry.vary, request_headers),
            )
        finally:
            body.discard()
        if stored:
            self.storage.evict(self.max_size)
        return stored

    def freshen(
        self,
        lookup: Lookup,
        not_modified: HeaderList,
        *,
        request_time: float,
        response_time: float,
    ) -> Lookup | None:
        """Apply a 304 to the stored response; None when the 304 is about another one, or when
        it removed the stored response (RFC 9111 §4.3.4: it brought ``no-store`` or ``Vary: *``)."""
        entry = lookup.entry
        if not freshness.validator_matches(entry.headers, not_modified):
            return None
        if freshness.not_modified_evicts(not_modified):  # RFC 9111 §4.3.4
            self.storage.delete([entry.id])
            return None
        headers = freshness.updated_headers(entry.headers, not_modified)
        self.storage.update(
            entry.id,
            headers=headers,
            request_time=request_time,
            response_time=response_time,
            now=self.clock(),
        )
        from ._storage import Entry

        updated = Entry(
            id=entry.id,
            key=entry.key,
            vary=entry.vary,
            status=entry.status,
            reason=entry.reason,
            headers=tuple(headers),
            body_sha=entry.body_sha,
            body_size=entry.body_size,
            request_time=request_time,
            response_time=response_time,
        )
        age = freshness.current_age(headers, request_time, response_time, self.clock())
        return Lookup(updated, True, age)

    def invalidate(self, method: str, url: str, status: int, headers: HeaderList) -> int:
        """Drop what an unsafe request made stale (§4.4); how many responses were dropped."""
        urls = freshness.invalidated_urls(method, cache_key(url), status, headers)
        return self.storage.delete_keys([cache_key(u) for u in urls]) if urls else 0

    def remove(self, urls: Iterable[str]) -> int:
        """Drop every stored response (all variants) of these URLs; how many were dropped."""
        keys = list(dict.fromkeys(cache_key(url) for url in urls))
        return self.storage.delete_keys(keys) if keys else 0

    def info(self) -> CacheInfo:
        return self.storage.info()

    def clear(self) -> int:
        return self.storage.clear()

    def check(self, *, verify: bool = True) -> CheckReport:
        """Verify every stored row and body; see :meth:`webclient._storage.Storage.check`."""
        return self.storage.check(verify=verify)


def _stale_on_error_allowed(entry: Entry, request_headers: HeaderList, age: float) -> bool:
    """Whether ``entry`` may answer, stale, when its origin cannot be reached (RFC 9111 §4.2.4)."""
    return freshness.may_serve_stale_on_error(
        entry.headers,
        request_headers,
        age,
        status=entry.status,
        response_time=entry.response_time,
    )


def _ignore(message: str) -> None:
    """Warnings of a cache made without a ``warn`` callback."""


class Store:
    """The cache's side of a response from the origin: its body, offered chunk by chunk, is
    stored once complete when the RFC allows it (:meth:`commit`), and what an unsafe request
    made stale is dropped."""

    __slots__ = (
        "cache",
        "head",
        "method",
        "request_headers",
        "request_time",
        "response_time",
        "url",
        "writer",
    )

    def __init__(
        self,
        cache: Cache,
        writer: BodyWriter | None,
        method: str,
        url: str,
        request_headers: HeaderList,
        head: ResponseHead,
        request_time: float,
        response_time: float,
    ) -> None:
        self.cache = cache
        #: Where the body goes while it arrives; None when it is not stored.
        self.writer = writer
        self.method = method
        self.url = url
        self.request_headers = request_headers
        self.head = head
        self.request_time = request_time
        self.response_time = response_time

    def commit(self) -> None:
        """The body arrived whole: store it, and invalidate (§4.4)."""
        cache, head = self.cache, self.head
        try:
            if self.writer is not None:
                cache.store(
                    self.url,
                    self.request_headers,
                    head.status,
                    head.reason,
                    head.headers,
                    self.writer,
                    request_time=self.request_time,
                    response_time=self.response_time,
                )
            cache.invalidate(self.method, self.url, head.status, head.headers)
        except CacheError as exc:
            cache.warn(f"cache update failed: {exc}")

    def discard(self) -> None:
        """The body did not arrive whole (or could not be delivered): store nothing."""
        if self.writer is not None:
            self.writer.discard()


def _sha256(data: bytes) -> str:
    """The body's hash, for --verify-cache (hashlib is imported only then: a batch that does not
    verify never loads it)."""
    import hashlib

    return hashlib.sha256(data).hexdigest()
