"""Tests of webclient/_cache.py: the cache-tests.fyi behaviours of a private cache, end to end.

Each test scripts the origin, fetches through a real client and checks where the answer came from
(and what the origin saw). The clock is moved instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from webclient import CacheStatus, Client, ClientConfig, ConnectionRefused
from webclient._cache import (
    SMALL_BODY,
    Cache,
    Fresh,
    Miss,
    Plan,
    Revalidate,
    Store,
    _respelled,
    cache_key,
)
from webclient._models import ResponseHead
from webclient._shared.httpdate import format_http_date
from webclient.errors import CacheError
from webserver import Request, Response, Server
from webserver.testing import running_server

from .conftest import CLIENT_TIMEOUT, FakeClock, Origin, fresh_python

pytestmark = pytest.mark.timeout(20)

Headers = list[tuple[str, str]]


def fetch_twice(
    origin: tuple[Server, Origin],
    client: Client,
    clock: FakeClock,
    headers: Headers,
    *,
    status: int = 200,
    pause: float = 2.0,
) -> CacheStatus:
    """Serve ``headers`` once, fetch, wait ``pause`` seconds (fake), fetch again."""
    server, handler = origin
    handler.script("/r", (status, headers, b"one"), (status, headers, b"two"))
    first = client.get(server.url + "r")
    assert first.status == status
    assert first.cache_status is CacheStatus.MISS
    clock.advance(pause)
    second = client.get(server.url + "r")
    expected_requests = 1 if second.cache_status is CacheStatus.HIT else 2
    assert len(handler.requests_to("/r")) == expected_requests
    if second.cache_status is CacheStatus.HIT:
        assert second.body == b"one"
    return second.cache_status


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Cache-Control", "max-age=3600")], CacheStatus.HIT),
        ([("Cache-Control", 'max-age="3600"')], CacheStatus.HIT),
        ([("Cache-Control", "max-age=1")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=0")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=-100")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=a100")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=3600"), ("Age", "3601")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=3600"), ("Age", "abc")], CacheStatus.HIT),
        ([("Cache-Control", "max-age=3600"), ("Age", "-7200")], CacheStatus.HIT),
        ([("Cache-Control", "s-maxage=3600, max-age=1")], CacheStatus.MISS),
        ([("Expires", "0")], CacheStatus.MISS),
        ([("Expires", "Thu, 18 Aug 2050 02:01:18 UTC")], CacheStatus.MISS),
        ([("Expires", "Thu, 18-Aug-2050 02:01:18 GMT")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=3600"), ("Age", "0"), ("Age", "7200")], CacheStatus.HIT),
        ([("Cache-Control", "max-age=3600"), ("Age", "7200"), ("Age", "0")], CacheStatus.MISS),
        ([("Cache-Control", "max-age=3600"), ("Expires", "0")], CacheStatus.HIT),
        ([("Cache-Control", "private, max-age=3600")], CacheStatus.HIT),
        ([("Cache-Control", "no-store, max-age=3600")], CacheStatus.MISS),
        ([("Cache-Control", "no-cache, max-age=3600")], CacheStatus.MISS),
        ([], CacheStatus.MISS),
    ],
    ids=lambda v: repr(v)[:60],
)
def test_explicit_freshness(
    origin: tuple[Server, Origin],
    client: Client,
    clock: FakeClock,
    headers: Headers,
    expected: CacheStatus,
) -> None:
    """max-age, Expires, Age and the no-store/no-cache/private directives decide reuse; an invalid
    Age is ignored, the first of two Age lines counts, and an invalid Expires is in the past."""
    assert fetch_twice(origin, client, clock, headers) is expected


def test_expires_in_the_future_and_past(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """A future Expires is reused until it passes; a past one never is."""
    server, handler = origin
    future = format_http_date(clock.now + 600)
    handler.script("/e", (200, [("Expires", future)], b"x"))
    client.get(server.url + "e")
    clock.advance(300)
    assert client.get(server.url + "e").cache_status is CacheStatus.HIT
    clock.advance(400)
    assert client.get(server.url + "e").cache_status is CacheStatus.MISS
    past = format_http_date(clock.now - 600)
    handler.script("/p", (200, [("Expires", past)], b"x"))
    client.get(server.url + "p")
    assert client.get(server.url + "p").cache_status is CacheStatus.MISS


@pytest.mark.parametrize(
    ("status", "reused"),
    [(200, True), (203, True), (404, True), (410, True), (501, True), (201, False), (500, False)],
)
def test_heuristic_freshness_by_status(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock, status: int, reused: bool
) -> None:
    """Last-Modified alone makes heuristically cacheable statuses fresh for a while."""
    last_modified = format_http_date(clock.now - 10 * 86400)
    result = fetch_twice(origin, client, clock, [("Last-Modified", last_modified)], status=status)
    assert (result is CacheStatus.HIT) is reused


def test_heuristic_freshness_expires(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """Heuristic freshness (10% of 1000 s) ends, then the response is revalidated."""
    server, handler = origin
    lm = format_http_date(clock.now - 1000)
    handler.script("/h", (200, [("Last-Modified", lm)], b"x"), (304, [("Last-Modified", lm)], b""))
    client.get(server.url + "h")
    clock.advance(50)
    assert client.get(server.url + "h").cache_status is CacheStatus.HIT
    clock.advance(100)
    assert client.get(server.url + "h").cache_status is CacheStatus.REVALIDATED


def test_etag_revalidation_updates_headers(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """A stale response is revalidated with If-None-Match; the 304's headers replace stored ones."""
    server, handler = origin
    handler.script(
        "/v",
        (200, [("Cache-Control", "max-age=1"), ("ETag", '"v1"'), ("X-Test", "A")], b"body"),
        (304, [("Cache-Control", "max-age=3600"), ("ETag", '"v1"'), ("X-Test", "B")], b""),
    )
    client.get(server.url + "v")
    clock.advance(5)
    second = client.get(server.url + "v")
    assert second.cache_status is CacheStatus.REVALIDATED
    assert second.body == b"body"
    assert second.header("x-test") == "B"
    assert handler.requests_to("/v")[1].headers.get("if-none-match") == '"v1"'
    clock.advance(60)
    third = client.get(server.url + "v")
    assert third.cache_status is CacheStatus.HIT
    assert third.header("x-test") == "B"
    assert len(handler.requests_to("/v")) == 2


def test_last_modified_revalidation(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """Without an ETag, If-Modified-Since is sent; a 304 keeps stored fields it omits."""
    server, handler = origin
    lm = format_http_date(clock.now - 86400)
    handler.script(
        "/lm",
        (200, [("Cache-Control", "max-age=1"), ("Last-Modified", lm), ("X-Kept", "yes")], b"x"),
        (304, [("Cache-Control", "max-age=3600"), ("Last-Modified", lm)], b""),
    )
    client.get(server.url + "lm")
    clock.advance(5)
    second = client.get(server.url + "lm")
    assert second.cache_status is CacheStatus.REVALIDATED
    assert second.header("x-kept") == "yes"
    sent = handler.requests_to("/lm")[1].headers
    assert sent.get("if-modified-since") == lm
    assert "if-none-match" not in sent


def test_changed_resource_replaces_stored_body(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """A 200 answer to a revalidation replaces the stored response."""
    server, handler = origin
    handler.script(
        "/c",
        (200, [("Cache-Control", "max-age=1"), ("ETag", '"1"')], b"old"),
        (200, [("Cache-Control", "max-age=60"), ("ETag", '"2"')], b"new"),
    )
    client.get(server.url + "c")
    clock.advance(5)
    assert client.get(server.url + "c").body == b"new"
    hit = client.get(server.url + "c")
    assert (hit.cache_status, hit.body) == (CacheStatus.HIT, b"new")
    info = client.cache_info()
    assert info is not None and info.entries == 1


def test_must_revalidate_and_no_cache_always_ask(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """no-cache revalidates even while fresh; must-revalidate once stale."""
    server, handler = origin
    handler.script(
        "/nc",
        (200, [("Cache-Control", "no-cache"), ("ETag", '"n"')], b"x"),
        (304, [("ETag", '"n"')], b""),
    )
    client.get(server.url + "nc")
    assert client.get(server.url + "nc").cache_status is CacheStatus.REVALIDATED
    handler.script(
        "/mr",
        (200, [("Cache-Control", "max-age=10, must-revalidate"), ("ETag", '"m"')], b"x"),
        (304, [("ETag", '"m"')], b""),
    )
    client.get(server.url + "mr")
    assert client.get(server.url + "mr").cache_status is CacheStatus.HIT
    clock.advance(20)
    assert client.get(server.url + "mr").cache_status is CacheStatus.REVALIDATED


def test_304_for_another_etag_refetches(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """A 304 naming a different ETag is not applied; the client asks again unconditionally."""
    server, handler = origin
    handler.script(
        "/w",
        (200, [("Cache-Control", "max-age=1"), ("ETag", '"a"')], b"first"),
        (304, [("ETag", '"b"')], b""),
        (200, [("Cache-Control", "max-age=60"), ("ETag", '"b"')], b"second"),
    )
    client.get(server.url + "w")
    clock.advance(5)
    response = client.get(server.url + "w")
    assert (response.status, response.body) == (200, b"second")
    assert "if-none-match" not in handler.requests_to("/w")[2].headers


def vary_origin(origin: tuple[Server, Origin], vary: str) -> None:
    _, handler = origin

    def answer(request: object) -> Response:
        lang = getattr(request, "headers").get("accept-language", "none")  # noqa: B009
        return Response(200, [("Cache-Control", "max-age=3600"), ("Vary", vary)], lang.encode())

    handler.script("/vary", answer)


def test_vary_match_mismatch_and_omitted(origin: tuple[Server, Origin], client: Client) -> None:
    """Variants are kept apart by the Vary request header; absent matches absent only."""
    server, handler = origin
    vary_origin(origin, "Accept-Language")
    url = server.url + "vary"
    en = client.get(url, headers=[("Accept-Language", "en")])
    assert (en.body, en.cache_status) == (b"en", CacheStatus.MISS)
    assert client.get(url, headers=[("Accept-Language", "en")]).cache_status is CacheStatus.HIT
    fr = client.get(url, headers=[("Accept-Language", "fr")])
    assert (fr.body, fr.cache_status) == (b"fr", CacheStatus.MISS)
    none = client.get(url)
    assert (none.body, none.cache_status) == (b"none", CacheStatus.MISS)
    assert client.get(url).cache_status is CacheStatus.HIT
    en_again = client.get(url, headers=[("Accept-Language", "en")])
    assert (en_again.body, en_again.cache_status) == (b"en", CacheStatus.HIT)
    assert len(handler.requests_to("/vary")) == 3


def test_vary_star_never_matches(origin: tuple[Server, Origin], client: Client) -> None:
    """Vary: * is never served from the cache."""
    server, handler = origin
    vary_origin(origin, "*")
    client.get(server.url + "vary")
    assert client.get(server.url + "vary").cache_status is CacheStatus.MISS
    assert len(handler.requests_to("/vary")) == 2


def test_post_invalidates_cached_get(origin: tuple[Server, Origin], client: Client) -> None:
    """A successful POST to a URL drops its stored GET, and its Location's."""
    server, handler = origin
    handler.script("/doc", (200, [("Cache-Control", "max-age=3600")], b"doc"))
    handler.script("/other", (200, [("Cache-Control", "max-age=3600")], b"other"))
    client.get(server.url + "doc")
    client.get(server.url + "other")
    assert client.get(server.url + "doc").cache_status is CacheStatus.HIT
    handler.script(
        "/doc",
        lambda r: Response(200, [("Location", "/other")], b"ok"),
        (200, [("Cache-Control", "max-age=3600")], b"doc2"),
    )
    posted = client.post(server.url + "doc", b"new content")
    assert posted.cache_status is CacheStatus.BYPASS
    assert handler.requests_to("/doc")[-1].body == b"new content"
    again = client.get(server.url + "doc")
    assert (again.cache_status, again.body) == (CacheStatus.MISS, b"doc2")
    assert client.get(server.url + "other").cache_status is CacheStatus.MISS


def test_failed_post_does_not_invalidate(origin: tuple[Server, Origin], client: Client) -> None:
    """An error answer to a POST leaves the stored GET alone."""
    server, handler = origin
    handler.script("/keep", (200, [("Cache-Control", "max-age=3600")], b"keep"))
    client.get(server.url + "keep")
    handler.script("/keep", (500, [], b"broken"))
    assert client.post(server.url + "keep", b"x").status == 500
    assert client.get(server.url + "keep").cache_status is CacheStatus.HIT


def test_query_strings_are_distinct_keys(origin: tuple[Server, Origin], client: Client) -> None:
    """/q?a=1 and /q?a=2 are different cache entries."""
    server, handler = origin
    handler.script(
        "/q", lambda r: Response(200, [("Cache-Control", "max-age=60")], r.query.encode())
    )
    assert client.get(server.url + "q?a=1").body == b"a=1"
    assert client.get(server.url + "q?a=2").body == b"a=2"
    hit = client.get(server.url + "q?a=1")
    assert (hit.cache_status, hit.body) == (CacheStatus.HIT, b"a=1")
    assert len(handler.requests_to("/q")) == 2


def test_request_no_cache_revalidates(origin: tuple[Server, Origin], client: Client) -> None:
    """A request with Cache-Control: no-cache does not take a fresh stored answer unasked."""
    server, handler = origin
    handler.script(
        "/rq",
        (200, [("Cache-Control", "max-age=60"), ("ETag", '"r"')], b"x"),
        (304, [("ETag", '"r"')], b""),
    )
    client.get(server.url + "rq")
    again = client.get(server.url + "rq", headers=[("Cache-Control", "no-cache")])
    assert again.cache_status is CacheStatus.REVALIDATED


def test_hit_carries_age(origin: tuple[Server, Origin], client: Client, clock: FakeClock) -> None:
    """A response served from the cache says how old it is."""
    server, handler = origin
    handler.script("/age", (200, [("Cache-Control", "max-age=600")], b"x"))
    client.get(server.url + "age")
    clock.advance(100)
    assert int(client.get(server.url + "age").header("age") or "0") >= 100


def test_cache_persists_across_clients(
    origin: tuple[Server, Origin], cache_dir: Path, clock: FakeClock
) -> None:
    """A second client on the same folder gets hits without the network."""
    server, handler = origin
    handler.script("/p", (200, [("Cache-Control", "max-age=600")], b"persist"))
    config = ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT)
    with Client(config, clock=clock) as first:
        first.get(server.url + "p")
    with Client(config, clock=clock) as second:
        hit = second.get(server.url + "p")
    assert (hit.cache_status, hit.body) == (CacheStatus.HIT, b"persist")
    assert len(handler.requests_to("/p")) == 1


def test_size_limit_evicts_least_recently_used(
    origin: tuple[Server, Origin], cache_dir: Path, clock: FakeClock
) -> None:
    """Over the limit, the entry used longest ago goes; a body above the limit is not kept."""
    server, handler = origin
    for name in "abc":
        handler.script(f"/{name}", (200, [("Cache-Control", "max-age=600")], name.encode() * 400))
    handler.script("/huge", (200, [("Cache-Control", "max-age=600")], b"h" * 5000))
    config = ClientConfig(cache_dir=cache_dir, cache_max_size=1000, timeout=CLIENT_TIMEOUT)
    with Client(config, clock=clock) as client:
        client.get(server.url + "a")
        clock.advance(1)
        client.get(server.url + "b")
        clock.advance(1)
        assert client.get(server.url + "a").cache_status is CacheStatus.HIT  # a is now newer
        clock.advance(1)
        client.get(server.url + "c")  # 1200 bytes > 1000: b goes
        assert client.get(server.url + "a").cache_status is CacheStatus.HIT
        assert client.get(server.url + "c").cache_status is CacheStatus.HIT
        assert client.get(server.url + "b").cache_status is CacheStatus.MISS
        huge = client.get(server.url + "huge")
        assert huge.body == b"h" * 5000
        assert client.get(server.url + "huge").cache_status is CacheStatus.MISS
        info = client.cache_info()
        assert info is not None and info.size <= 1000


def test_post_invalidates_location_with_other_host_case(
    origin: tuple[Server, Origin], client: Client
) -> None:
    """Host names compare case-insensitively: a Location on LOCALHOST drops localhost's entry."""
    server, handler = origin
    port = server.listen()[1]
    base = f"http://localhost:{port}/"
    handler.script("/other", (200, [("Cache-Control", "max-age=3600")], b"other"))
    client.get(base + "other")
    assert client.get(base + "other").cache_status is CacheStatus.HIT
    handler.script("/up", (201, [("Location", f"http://LOCALHOST:{port}/other")], b""))
    assert client.post(base + "up", b"x").status == 201
    assert client.get(base + "other").cache_status is CacheStatus.MISS


def test_revalidation_restarts_the_age_from_the_304(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """After a 304 without Age, the entry is fresh for the full max-age again, not less."""
    server, handler = origin

    def dated(status: int, headers: Headers, body: bytes) -> Callable[[Request], Response]:
        # The origin's clock is the test's: Date agrees with the moved clock.
        return lambda _r: Response(status, [("Date", format_http_date(clock.now)), *headers], body)

    etag = ("ETag", '"a"')
    handler.script(
        "/aged",
        dated(200, [("Cache-Control", "max-age=600"), ("Age", "100"), etag], b"aged"),
        dated(304, [etag], b""),
    )
    client.get(server.url + "aged")
    clock.advance(510)  # age 610: stale
    assert client.get(server.url + "aged").cache_status is CacheStatus.REVALIDATED
    clock.advance(550)  # 550 s after the 304, which said nothing of an age: still fresh
    hit = client.get(server.url + "aged")
    assert (hit.cache_status, hit.body) == (CacheStatus.HIT, b"aged")
    assert 550 <= int(hit.header("age") or "0") < 600
    assert len(handler.requests_to("/aged")) == 2


def _store(cache: Cache, url: str, body: bytes) -> None:
    writer = cache.begin()
    writer.write(body)
    now = time.time()
    headers = [("cache-control", "max-age=600"), ("content-length", str(len(body)))]
    cache.store(url, [], 200, "OK", headers, writer, request_time=now, response_time=now)


def _body_files(folder: Path) -> list[Path]:
    return [p for p in (folder / "bodies").rglob("*") if p.is_file()]


_url_schemes = st.sampled_from(["http", "https", "HTTP", "Https"])
_url_hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "h.test", "H.Test", "[::1]", "a-b.c", "x@h"]),
    st.text("abcXYZ09.-_", min_size=1, max_size=10),
)
_url_ports = st.one_of(
    st.just(""),
    st.sampled_from([":80", ":443", ":0", ":080", ":65535", ":65536", ":99999", ":"]),
    st.integers(1, 70000).map(lambda n: f":{n}"),
)
_url_chars = st.sampled_from("/aZ%20?#&=:@\\ \t\n\x00\x7f\u00e9")
_url_rests = st.one_of(
    st.text(_url_chars, max_size=12).map(lambda text: "/" + text), st.text(_url_chars, max_size=12)
)


@settings(max_examples=1000)
@given(_url_schemes, _url_hosts, _url_ports, _url_rests)
@example("http", "h", ":80", "/x?")
@example("http", "h", ":80", "/x\t")
@example("http", "h", ":80", "")
def test_cache_key_without_splitting_matches_splitting(
    scheme: str, host: str, port: str, rest: str
) -> None:
    """A URL taken as its own key (already in the key's spelling) gives exactly the key that
    splitting and joining it again gives, and so does every other URL (or the same error)."""
    url = f"{scheme}://{host}{port}{rest}"
    try:
        expected: str | type[Exception] = _respelled(url)
    except ValueError:
        expected = ValueError
    try:
        found: str | type[Exception] = cache_key.__wrapped__(url)
    except ValueError:
        found = ValueError
    assert found == expected


def test_cache_key_keeps_a_url_in_the_key_spelling() -> None:
    """A lower-case URL with an explicit port is its own key; others are respelled."""
    assert cache_key("http://127.0.0.1:8080/f/x.bin?q=1") == "http://127.0.0.1:8080/f/x.bin?q=1"
    assert cache_key("http://H:80/x#frag") == "http://h:80/x"
    assert cache_key("http://h:80/x?") == "http://h:80/x"
    assert cache_key("http://h:080/x") == "http://h:80/x"


def test_serving_a_stored_body_does_not_import_hashlib(tmp_path: Path) -> None:
    """A fresh stored response is served after checking its body's size alone: the process never
    loads hashlib (only storing a body or --verify-cache hashes)."""
    _store(Cache(tmp_path, max_size=1 << 20), "http://h.test/x", b"stored")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from webclient._cache import Cache, Fresh\n"
        f"cache = Cache(Path({str(tmp_path)!r}), max_size=1 << 20)\n"
        "plan = cache.plan('GET', 'http://h.test/x', [])\n"
        "assert isinstance(plan, Fresh), plan\n"
        "assert cache.open(plan)[1] == b'stored'\n"
        "cache.close()\n"
        "print('hashlib' in sys.modules)\n"
    )
    assert fresh_python(code) == "False"


def test_concurrent_store_of_one_url_leaves_no_orphan_body(tmp_path: Path) -> None:
    """Two processes store one URL with different bodies: one row and one body file are left."""
    folder = tmp_path / "cache"
    url = "http://example.org/r"
    a = Cache(folder, max_size=10**6)
    b = Cache(folder, max_size=10**6)
    try:
        with b.batch([url]):  # b's run starts: it has read the (no) rows of its URLs
            _store(a, url, b"body from process A")  # another process stores meanwhile
            _store(b, url, b"body from process B")
        info = b.info()
        assert info.entries == 1
        assert len(_body_files(folder)) == info.bodies == 1
    finally:
        a.close()
        b.close()


def test_concurrent_clients_leave_no_orphan_body(
    origin: tuple[Server, Origin], cache_dir: Path, clock: FakeClock
) -> None:
    """The same through two clients sharing a cache folder (two ``webclient batch`` runs)."""
    server, handler = origin
    other = Client(ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT), clock=clock)

    def first(_request: Request) -> Response:
        # While this client's run is going on, the other one fetches and stores the same URL.
        assert other.get(server.url + "r").body == b"second version"
        return Response(200, [("Cache-Control", "max-age=600")], b"first version")

    handler.script("/r", first, (200, [("Cache-Control", "max-age=600")], b"second version"))
    try:
        with Client(ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT), clock=clock) as c:
            assert c.get(server.url + "r").body == b"first version"
            info = c.cache_info()
        assert info is not None and info.entries == 1
        assert len(_body_files(cache_dir)) == info.bodies == 1
    finally:
        other.close()


# -- stored bodies are checked against their content address --------------------------------------


@pytest.mark.parametrize("size", [100, SMALL_BODY + 1], ids=["small", "large"])
@pytest.mark.parametrize(
    ("damage", "verify", "served"),
    [
        ("truncated", False, False),
        ("replaced", False, True),  # same size: found out only by its hash
        ("replaced", True, False),
        (None, True, True),
    ],
)
def test_a_damaged_body_is_a_miss(
    origin: tuple[Server, Origin],
    cache_dir: Path,
    clock: FakeClock,
    size: int,
    damage: str | None,
    verify: bool,
    served: bool,
) -> None:
    """A stored body is checked before it is served: by its size always, by its SHA-256 with
    ``verify_cache``; one that fails is dropped with a warning and fetched again, never served."""
    server, handler = origin
    original, fresh = b"a" * size, b"b" * size
    handler.script("/r", (200, [("Cache-Control", "max-age=600")], original))
    config = ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT, verify_cache=verify)
    with Client(config, clock=clock) as first:
        assert first.get(server.url + "r").cache_status is CacheStatus.MISS
    (body,) = _body_files(cache_dir)
    if damage == "truncated":
        body.write_bytes(original[:-1])
    elif damage == "replaced":
        body.write_bytes(b"X" + original[1:])
    handler.script("/r", (200, [("Cache-Control", "max-age=600")], fresh))
    with Client(config, clock=clock) as second:
        again = second.get(server.url + "r")
        warnings = second.warnings
    if served:
        assert again.cache_status is CacheStatus.HIT
        assert len(handler.requests_to("/r")) == 1 and warnings == []
        return
    assert (again.cache_status, again.body) == (CacheStatus.MISS, fresh)
    assert len(handler.requests_to("/r")) == 2
    assert len(warnings) == 1 and "dropped its entry" in warnings[0]


def test_a_body_changed_after_its_lookup_is_not_served(tmp_path: Path) -> None:
    """With ``verify``, a small body is hashed again as it is read for serving: changed between
    the lookup and the use, it is a CacheError (the client fetches instead) and its entry goes."""
    warnings: list[str] = []
    cache = Cache(tmp_path / "c", max_size=10**6, warn=warnings.append, verify=True)
    try:
        _store(cache, "http://example.org/r", b"stored body")
        lookup = cache.lookup("http://example.org/r", [])
        assert lookup is not None
        (body,) = _body_files(tmp_path / "c")
        body.write_bytes(b"STORED BODY")
        with pytest.raises(CacheError, match="SHA-256"):
            cache.use(lookup)
        assert cache.lookup("http://example.org/r", []) is None
        assert cache.info().entries == 0
        assert len(warnings) == 1
    finally:
        cache.close()


@pytest.mark.parametrize("evicting", [("Cache-Control", "no-store"), ("Vary", "*")])
def test_304_with_no_store_or_vary_star_evicts(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock, evicting: tuple[str, str]
) -> None:
    """A 304 bringing no-store or Vary: * removes the entry; the body is fetched again."""
    server, handler = origin
    etag = ("ETag", '"a"')
    handler.script(
        "/ev",
        (200, [("Cache-Control", "max-age=1"), etag], b"old"),
        (304, [etag, evicting], b""),
        (200, [("Cache-Control", "no-store")], b"new"),
    )
    client.get(server.url + "ev")
    clock.advance(5)
    again = client.get(server.url + "ev")
    assert (again.cache_status, again.body) == (CacheStatus.MISS, b"new")
    info = client.cache_info()
    assert info is not None and info.entries == 0


def test_fields_named_in_connection_are_not_stored(
    origin: tuple[Server, Origin], client: Client, clock: FakeClock
) -> None:
    """A cached response leaves out the fields its Connection field named."""
    server, handler = origin
    headers = [("Cache-Control", "max-age=3600"), ("Connection", "x-a"), ("X-A", "1"), ("X-C", "3")]
    handler.script("/conn", (200, headers, b"c"))
    client.get(server.url + "conn")
    hit = client.get(server.url + "conn")
    assert hit.cache_status is CacheStatus.HIT
    assert hit.header("x-c") == "3" and hit.header("x-a") is None


@pytest.mark.parametrize(
    ("cache_control", "served"),
    [
        ("max-age=1", True),
        ("max-age=1, stale-if-error=60", True),
        ("max-age=1, must-revalidate", False),
        ("max-age=1, no-cache", False),
    ],
)
@pytest.mark.parametrize("validator", [[("ETag", '"s"')], []], ids=["etag", "no-validator"])
def test_stale_served_when_the_server_is_stopped(
    cache_dir: Path,
    clock: FakeClock,
    cache_control: str,
    served: bool,
    validator: Headers,
) -> None:
    """A run after the server stopped gets the stored copy with a warning, unless forbidden."""
    handler = Origin()
    handler.script("/s", (200, [("Cache-Control", cache_control), *validator], b"kept"))
    config = ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT, retry_base_delay=0.001)
    server = Server(root=cache_dir.parent, port=0, access_log=False, default_routes=False)
    with running_server(server=server, setup=lambda s: s.route("/", handler, prefix=True)) as srv:
        url = srv.url + "s"
        with Client(config, clock=clock) as first_run:
            assert first_run.get(url).cache_status is CacheStatus.MISS
    clock.advance(30)
    with Client(config, clock=clock) as second_run:
        if not served:
            with pytest.raises(ConnectionRefused):
                second_run.get(url)
            return
        stale = second_run.get(url)
        assert (stale.cache_status, stale.body) == (CacheStatus.STALE, b"kept")
        assert any("served the stored copy" in w for w in second_run.warnings)


@pytest.mark.parametrize(
    ("cache_control", "status", "request_headers", "served"),
    [
        ("max-age=1", 503, [], True),
        ("max-age=1", 500, [], True),
        ("max-age=1, stale-if-error=60", 504, [], True),
        ("max-age=1, stale-if-error=5", 502, [], False),
        ("max-age=1", 501, [], False),
        ("max-age=1, must-revalidate", 503, [], False),
        ("max-age=1, no-cache", 500, [], False),
        ("max-age=1", 500, [("Cache-Control", "no-cache")], False),
    ],
)
def test_stale_served_on_a_server_error(
    origin: tuple[Server, Origin],
    client: Client,
    clock: FakeClock,
    cache_control: str,
    status: int,
    request_headers: Headers,
    served: bool,
) -> None:
    """A 500/502/503/504 answering a revalidation gets the stored copy with a warning (RFC 5861),
    unless must-revalidate, no-cache or stale-if-error's bound forbid it; other errors pass."""
    server, handler = origin
    handler.script(
        "/s",
        (200, [("Cache-Control", cache_control), ("ETag", '"s"')], b"kept"),
        (status, [], b"oops"),
    )
    url = server.url + "s"
    assert client.get(url).cache_status is CacheStatus.MISS
    clock.advance(30)
    response = client.get(url, headers=request_headers)
    if served:
        assert (response.status, response.body) == (200, b"kept")
        assert response.cache_status is CacheStatus.STALE
        assert any(f"the server answered {status}" in w for w in client.warnings)
    else:
        assert (response.status, response.body) == (status, b"oops")


# -- the decisions, without a network: Cache.plan and Cache.settle -------------------------------


def _head(status: int, headers: Headers) -> ResponseHead:
    return ResponseHead(status, "", [(n.lower(), v) for n, v in headers], "1.1")


def _settle(cache: Cache, plan: Plan, url: str, head: ResponseHead) -> Fresh | Miss | Store:
    now = cache.clock()
    return cache.settle(
        plan,
        method="GET",
        url=url,
        request_headers=[],
        head=head,
        request_time=now,
        response_time=now,
    )


def _stored(tmp_path: Path, headers: Headers, *, at: float) -> tuple[Cache, list[str]]:
    """A cache holding one response for http://example.org/r, stored at ``at``."""
    warnings: list[str] = []
    cache = Cache(tmp_path / "c", max_size=10**6, clock=lambda: at, warn=warnings.append)
    writer = cache.begin()
    writer.write(b"stored")
    cache.store(
        "http://example.org/r", [], 200, "OK", headers, writer, request_time=at, response_time=at
    )
    return cache, warnings


def test_plan_is_fresh_revalidate_or_miss(tmp_path: Path) -> None:
    """A fresh stored response is a Fresh plan (HIT), a stale one with a validator a Revalidate
    plan carrying it, an unknown URL or an unsafe method a Miss."""
    headers = [("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("Date", format_http_date(1e9))]
    cache, _ = _stored(tmp_path, headers, at=1e9)
    try:
        fresh = cache.plan("GET", "http://example.org/r", [])
        assert isinstance(fresh, Fresh) and fresh.status is CacheStatus.HIT
        assert cache.plan("GET", "http://example.org/other", []) == Miss()
        assert cache.plan("POST", "http://example.org/r", []) == Miss()
        cache.clock = lambda: 1e9 + 120
        stale = cache.plan("GET", "http://example.org/r", [])
        assert isinstance(stale, Revalidate)
        assert stale.headers == [("If-None-Match", '"v1"')]
        accepted = cache.plan("GET", "http://example.org/r", [("Cache-Control", "max-stale")])
        assert isinstance(accepted, Fresh) and accepted.status is CacheStatus.STALE
    finally:
        cache.close()


def test_plan_of_a_failing_cache_is_a_miss_with_a_warning(tmp_path: Path) -> None:
    """A cache whose index cannot be read plans a Miss and says why once; it never raises."""
    cache, warnings = _stored(tmp_path, [("Cache-Control", "max-age=60")], at=1e9)
    cache.close()
    assert cache.plan("GET", "http://example.org/r", []) == Miss()
    assert len(warnings) == 1 and warnings[0].startswith("cache lookup failed, fetching instead")


def test_settle_a_304_makes_the_stored_response_answer(tmp_path: Path) -> None:
    """A matching 304 for a Revalidate plan settles as Fresh (REVALIDATED) with the 304's
    fields; a 304 about another response (a different ETag) asks for the request again."""
    headers = [("Cache-Control", "max-age=60"), ("ETag", '"v1"')]
    cache, _ = _stored(tmp_path, headers, at=1e9)
    try:
        cache.clock = lambda: 1e9 + 120
        plan = cache.plan("GET", "http://example.org/r", [])
        assert isinstance(plan, Revalidate)
        url = "http://example.org/r"
        assert _settle(cache, plan, url, _head(304, [("ETag", '"v2"')])) == Miss()
        same = _head(304, [("ETag", '"v1"'), ("X-New", "yes")])
        settled = _settle(cache, plan, url, same)
        assert isinstance(settled, Fresh) and settled.status is CacheStatus.REVALIDATED
        assert ("x-new", "yes") in [(n.lower(), v) for n, v in settled.lookup.entry.headers]
    finally:
        cache.close()


def test_settle_stores_a_storable_answer_only_once_committed(tmp_path: Path) -> None:
    """Any other answer settles as a Store: its body is kept on commit, never on discard, and
    an unstorable answer gets a Store without a writer."""
    cache = Cache(tmp_path / "c", max_size=10**6, clock=lambda: 1e9)
    try:
        head = _head(200, [("Cache-Control", "max-age=60")])
        dropped = _settle(cache, Miss(), "http://example.org/a", head)
        assert isinstance(dropped, Store) and dropped.writer is not None
        dropped.writer.write(b"body")
        dropped.discard()
        assert cache.plan("GET", "http://example.org/a", []) == Miss()
        kept = _settle(cache, Miss(), "http://example.org/a", head)
        assert isinstance(kept, Store) and kept.writer is not None
        kept.writer.write(b"body")
        kept.commit()
        assert isinstance(cache.plan("GET", "http://example.org/a", []), Fresh)
        unstorable = _head(200, [("Cache-Control", "no-store")])
        refused = _settle(cache, Miss(), "http://example.org/b", unstorable)
        assert isinstance(refused, Store) and refused.writer is None
    finally:
        cache.close()


def test_stale_on_error_only_for_a_stored_response_that_allows_it(tmp_path: Path) -> None:
    """Stale on error (§4.2.4) answers from a Revalidate plan's stored response, unless it says
    must-revalidate; a Miss has nothing to answer with."""
    for directive, allowed in (("max-age=60", True), ("max-age=60, must-revalidate", False)):
        cache, _ = _stored(
            tmp_path / directive, [("Cache-Control", directive), ("ETag", '"a"')], at=1e9
        )
        try:
            cache.clock = lambda: 1e9 + 120
            plan = cache.plan("GET", "http://example.org/r", [])
            assert isinstance(plan, Revalidate)
            fresh = cache.stale_on_error(plan, [])
            assert (fresh is not None) is allowed
            if fresh is not None:
                assert fresh.status is CacheStatus.STALE and fresh.lookup.age == 120
            assert cache.stale_on_error(Miss(), []) is None
        finally:
            cache.close()
