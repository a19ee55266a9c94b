"""Tests of webclient/_roundtrip.py: one request's round trip, driven without a network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from webclient._cache import Cache, Miss, Plan, Revalidate
from webclient._models import ClientRequest, ClientResponse, ResponseHead
from webclient._roundtrip import Context, RoundTrip, deliver, start
from webclient._status import CacheStatus
from webclient.errors import ConnectionRefused, LocalFileError, NotCached

NOW = 1e9
URL = "http://example.org/r"


class _FailingSink:
    """A sink whose disk fills after the first chunk."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> int:
        if self.written:
            raise OSError(28, "No space left on device")
        self.written.append(data)
        return len(data)

    def close(self) -> None:
        raise AssertionError("a failed sink is not closed")

    def abort(self) -> None:
        self.aborted = True


def test_a_failing_sink_is_aborted_and_the_body_still_read_to_its_end() -> None:
    """The body is consumed whole (the connection stays usable), the sink aborted once, and the
    failure raised as a LocalFileError afterwards."""
    sink = _FailingSink()
    consumed: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        for chunk in (b"a", b"b", b"c"):
            consumed.append(chunk)
            yield chunk

    request = ClientRequest("GET", URL, sink=lambda _response: sink)
    response = ClientResponse("GET", URL, 200, "OK", (), CacheStatus.BYPASS)
    with pytest.raises(LocalFileError, match="No space left"):
        deliver(request, response, chunks(), received=True)
    assert consumed == [b"a", b"b", b"c"]
    assert sink.written == [b"a"] and sink.aborted


def _plan(trip: RoundTrip) -> Plan:
    return trip.plan


def _recorded() -> tuple[list[tuple[int, object]], Context]:
    results: list[tuple[int, object]] = []
    return results, Context(None, lambda: NOW, lambda _message: None)


@pytest.mark.parametrize(
    ("method", "message"),
    [("GET", "offline: not in the cache"), ("POST", "cannot be answered by the cache")],
)
def test_offline_without_a_stored_response_is_not_cached(method: str, message: str) -> None:
    """Offline, a request nothing stored can answer is a NotCached result, never sent."""
    results, context = _recorded()
    trip = start(
        context,
        0,
        ClientRequest(method, URL),
        "/r",
        [],
        URL,
        lambda i, r: results.append((i, r)),
        offline=True,
    )
    assert trip is None
    ((index, error),) = results
    assert index == 0 and isinstance(error, NotCached) and message in str(error)


@pytest.fixture
def stale_cache(tmp_path: Path) -> Iterator[Cache]:
    """A cache holding a 200 for URL (body ``stored``, ETag "v1", max-age 1), 10 s old: a GET
    of it plans a revalidation."""
    cache = Cache(tmp_path / "c", max_size=10**6, clock=lambda: NOW)
    try:
        writer = cache.begin()
        writer.write(b"stored")
        headers = [("cache-control", "max-age=1"), ("etag", '"v1"')]
        cache.store(URL, [], 200, "OK", headers, writer, request_time=NOW, response_time=NOW)
        cache.clock = lambda: NOW + 10
        yield cache
    finally:
        cache.close()


def test_a_304_that_cannot_be_applied_sends_the_request_again_without_validators(
    stale_cache: Cache,
) -> None:
    """A 304 naming another ETag than the stored one asks for the request again, unconditional,
    and the round trip then follows a Miss (no stale answer to fall back on)."""
    cache = stale_cache
    results: list[tuple[int, object]] = []
    context = Context(cache, cache.clock, lambda _message: None)
    trip = start(
        context,
        0,
        ClientRequest("GET", URL),
        "/r",
        [("Host", "example.org")],
        URL,
        lambda i, r: results.append((i, r)),
        offline=False,
    )
    assert isinstance(trip, RoundTrip) and isinstance(trip.plan, Revalidate)
    assert ("If-None-Match", '"v1"') in trip.wire.headers
    again = trip.handle(ResponseHead(304, "", [("etag", '"v2"')], "1.1"), iter(()))
    assert again is not None and results == []
    assert all(name.lower() != "if-none-match" for name, _ in again.headers)
    assert _plan(trip) == Miss()  # read afresh: handle() changed it
    trip.fail(ConnectionRefused("refused"))
    assert [type(r) for _, r in results] == [ConnectionRefused]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_to_a_revalidation_is_answered_by_the_stored_copy(
    stale_cache: Cache, status: int
) -> None:
    """A 5xx answering a Revalidate plan is replaced by the stored response (STALE, with a
    warning naming the status); the error's body is read to its end and dropped."""
    cache = stale_cache
    results: list[tuple[int, object]] = []
    warnings: list[str] = []
    context = Context(cache, cache.clock, warnings.append)
    trip = start(
        context, 0, ClientRequest("GET", URL), "/r", [], URL,
        lambda i, r: results.append((i, r)), offline=False,
    )  # fmt: skip
    assert isinstance(trip, RoundTrip) and isinstance(trip.plan, Revalidate)
    consumed: list[bytes] = []

    def body() -> Iterator[bytes]:
        for chunk in (b"er", b"ror"):
            consumed.append(chunk)
            yield chunk

    assert trip.handle(ResponseHead(status, "Oops", [], "1.1"), body()) is None
    ((_, served),) = results
    assert isinstance(served, ClientResponse) and served.body == b"stored"
    assert served.cache_status is CacheStatus.STALE and consumed == [b"er", b"ror"]
    assert warnings == [
        f"{URL}: the server answered {status} Oops; served the stored copy (10 s old)"
    ]


def test_a_server_error_without_a_stored_copy_is_the_answer() -> None:
    """A 5xx to a request with nothing stored (a Miss plan) is delivered as it came."""
    results, context = _recorded()
    trip = start(
        context, 0, ClientRequest("GET", URL), "/r", [], URL, lambda i, r: results.append((i, r)),
        offline=False,
    )  # fmt: skip
    assert trip is not None
    trip.handle(ResponseHead(503, "Busy", [], "1.1"), iter((b"later",)))
    ((_, answer),) = results
    assert isinstance(answer, ClientResponse) and (answer.status, answer.body) == (503, b"later")
