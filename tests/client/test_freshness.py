"""Tests of webclient/_freshness.py: RFC 9111 rules as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webclient import _freshness as f
from webclient._shared.httpdate import format_http_date

NOW = 1_700_000_000.0


def date(offset: float) -> str:
    return format_http_date(NOW + offset)


def fresh(headers: list[tuple[str, str]], status: int = 200, *, later: float = 0.0) -> bool:
    """Freshness of a response received at NOW, asked ``later`` seconds after."""
    return f.is_fresh(status, headers, NOW, NOW, NOW + later)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=3600", True),
        ('max-age="3600"', True),
        ("MaX-AgE=3600", True),
        ("foobar, max-age=3600", True),
        ("max-age=2147483648", True),
        ("max-age=99999999999", True),
        ("max-age='3600'", False),
        ("max-age=0", False),
        ("max-age=-100", False),
        ("max-age=a100", False),
        ("max-age=100a", False),
        ("max-age =100", False),
        ("max-age= 100", False),
        ('extension="max-age=100", max-age=1', False),
        ('max-age=1, extension="max-age=100"', False),
        ("s-maxage=3600, max-age=1", False),
        ("max-age=3600, max-age=1", False),
    ],
)
def test_max_age_parsing(value: str, expected: bool) -> None:
    """max-age is read as cache-tests expects: quoted allowed, anything malformed is stale."""
    assert fresh([("Cache-Control", value)], later=10) is expected


def test_max_age_wins_over_expires() -> None:
    """max-age beats a past or invalid Expires, and max-age=0 beats a future one."""
    assert fresh([("Cache-Control", "max-age=3600"), ("Expires", date(-10000))])
    assert fresh([("Cache-Control", "max-age=3600"), ("Expires", "0")])
    assert not fresh([("Cache-Control", "max-age=0"), ("Expires", date(10000))])


@pytest.mark.parametrize(
    ("expires", "date_offset", "expected"),
    [
        (date(30 * 86400), 0, True),
        ("THU, 18 Aug 2050 02:01:18 GMT", 0, True),
        (date(-30 * 86400), 0, False),
        (date(0), 0, False),
        (date(300), 400, False),
        ("0", 0, False),
        ("not a date", 0, False),
        ("Thu, 18 Aug 2050 02:01:18 UTC", 0, False),
        ("Thu, 18 Aug 50 02:01:18 GMT", 0, False),
        ("Thu 18 Aug 2050 02:01:18 GMT", 0, False),
        ("Thu, 18  Aug  2050 02:01:18 GMT", 0, False),
        ("Thu, 18-Aug-2050 02:01:18 GMT", 0, False),
        ("Thu, 18 Aug 2050 02.01.18 GMT", 0, False),
        ("Thu, 18 Aug 2050 2:01:18 GMT", 0, False),
        ("Thu, 31 Feb 2050 02:01:18 GMT", 0, False),
        ("Thursday, 18-Aug-50 02:01:18 GMT", 0, True),
        ("Thu Aug  8 02:01:18 2050", 0, True),
        ("Thu, 18 AUG 2050 02:01:18 gMT", 0, True),
    ],
)
def test_expires(expires: str, date_offset: float, expected: bool) -> None:
    """Expires counts from Date; past, present and invalid values are stale."""
    headers = [("Expires", expires), ("Date", date(date_offset))]
    assert fresh(headers) is expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        ("15", False),
        ("5", True),
        ("abc", True),
        ("-7200", True),
        ("7200.0", True),
        ("0, 0", True),
        ("0, 7200", True),
        ("7200, 0", False),
        ("7200;foo=1", False),
    ],
)
def test_age_header(age: str, expected: bool) -> None:
    """An Age beyond max-age is stale; an invalid Age is ignored; a list's first member counts."""
    headers = [("Date", date(0)), ("Cache-Control", "max-age=10"), ("Age", age)]
    assert fresh(headers) is expected


def test_first_of_two_age_lines_counts() -> None:
    """Of two Age field lines the first is used (RFC 9111 §5.1)."""
    base = [("Date", date(0)), ("Cache-Control", "max-age=10")]
    assert fresh([*base, ("Age", "0"), ("Age", "7200")])
    assert not fresh([*base, ("Age", "7200"), ("Age", "0")])


def test_age_counts_resident_time_and_delay() -> None:
    """Age grows with time spent in the cache and with the request's round trip."""
    headers = [("Date", date(0)), ("Cache-Control", "max-age=10")]
    assert f.current_age(headers, NOW - 2, NOW, NOW + 5) == pytest.approx(7)
    assert f.is_fresh(200, headers, NOW, NOW, NOW + 9.5)
    assert not f.is_fresh(200, headers, NOW, NOW, NOW + 10)
    assert f.current_age([("Age", "nope")], NOW, NOW, NOW) == 0


@pytest.mark.parametrize("status", sorted(f.HEURISTICALLY_CACHEABLE))
def test_heuristic_freshness_for_cacheable_statuses(status: int) -> None:
    """Heuristically cacheable statuses get 10% of the time since Last-Modified."""
    headers = [("Date", date(0)), ("Last-Modified", date(-1000))]
    assert f.freshness_lifetime(status, headers, NOW) == pytest.approx(100)
    assert fresh(headers, status, later=50)


@pytest.mark.parametrize("status", [201, 202, 302, 303, 307, 400, 403, 500, 502, 503])
def test_no_heuristic_for_other_statuses(status: int) -> None:
    """Other statuses get no heuristic lifetime (unless public)."""
    headers = [("Date", date(0)), ("Last-Modified", date(-1000))]
    assert f.freshness_lifetime(status, headers, NOW) == 0
    assert f.freshness_lifetime(status, [*headers, ("Cache-Control", "public")], NOW) > 0


def test_heuristic_is_capped_and_needs_last_modified() -> None:
    """A year-old file is fresh for a day at most; without Last-Modified there is no heuristic."""
    old = [("Date", date(0)), ("Last-Modified", date(-365 * 86400))]
    assert f.freshness_lifetime(200, old, NOW) == f.HEURISTIC_CAP
    assert f.freshness_lifetime(200, [("Date", date(0))], NOW) == 0
    explicit = [*old, ("Cache-Control", "max-age=5")]
    assert f.freshness_lifetime(200, explicit, NOW) == 5


def test_no_cache_is_never_fresh() -> None:
    """no-cache means revalidate every time, whatever max-age says."""
    assert not fresh([("Cache-Control", "max-age=3600, no-cache")])


@pytest.mark.parametrize(
    ("method", "status", "headers", "request_headers", "expected"),
    [
        ("GET", 200, [("ETag", '"a"')], [], True),
        ("GET", 200, [("Cache-Control", "max-age=60")], [], True),
        ("GET", 200, [("Cache-Control", "private, max-age=60")], [], True),
        ("GET", 200, [("Cache-Control", "no-store, max-age=60")], [], False),
        ("GET", 200, [("Cache-Control", "max-age=60")], [("Cache-Control", "no-store")], False),
        ("POST", 200, [("Cache-Control", "max-age=60")], [], False),
        ("GET", 206, [("Cache-Control", "max-age=60")], [], False),
        ("GET", 201, [("ETag", '"a"')], [], False),
        ("GET", 201, [("ETag", '"a"'), ("Cache-Control", "max-age=5")], [], True),
        ("GET", 200, [("Cache-Control", "max-age=60"), ("Vary", "*")], [], False),
        ("GET", 200, [], [], False),
        ("GET", 404, [("Cache-Control", "max-age=60")], [], True),
    ],
)
def test_storable(
    method: str,
    status: int,
    headers: list[tuple[str, str]],
    request_headers: list[tuple[str, str]],
    expected: bool,
) -> None:
    """Only what RFC 9111 §3 allows, and what could ever be reused, is stored."""
    assert f.is_storable(method, status, headers, request_headers) is expected


def test_vary_matching() -> None:
    """Vary selects on named request headers: same, different, absent and '*'."""
    response = [("Vary", "Accept-Language, X-Other")]
    key = f.vary_key(response, [("accept-language", "en,  fr")])
    assert key == (("accept-language", "en,fr"), ("x-other", None))
    assert f.vary_matches(key, [("Accept-Language", "en, fr")])
    assert not f.vary_matches(key, [("Accept-Language", "de")])
    assert not f.vary_matches(key, [])
    assert not f.vary_matches(key, [("Accept-Language", "en,fr"), ("X-Other", "1")])
    assert f.vary_key([("Vary", "Accept, *")], []) is None
    assert f.vary_key([], [("Accept", "x")]) == ()


def test_304_updates_headers_except_framing() -> None:
    """A 304 replaces the fields it carries but never Content-Length."""
    stored = [("Content-Length", "5"), ("X-A", "1"), ("Cache-Control", "max-age=1")]
    new = [("Content-Length", "0"), ("X-A", "2"), ("Cache-Control", "max-age=60")]
    assert f.updated_headers(stored, new) == [
        ("Content-Length", "5"),
        ("X-A", "2"),
        ("Cache-Control", "max-age=60"),
    ]
    assert f.validator_matches([("ETag", '"x"')], [("ETag", 'W/"x"')])
    assert not f.validator_matches([("ETag", '"x"')], [("ETag", '"y"')])
    assert f.validator_matches([("ETag", '"x"')], [])


def test_conditional_headers() -> None:
    """Revalidation sends the stored ETag and a valid Last-Modified."""
    lm = date(-100)
    assert f.conditional_headers([("ETag", '"e"'), ("Last-Modified", lm)]) == [
        ("If-None-Match", '"e"'),
        ("If-Modified-Since", lm),
    ]
    assert f.conditional_headers([("Last-Modified", "garbage")]) == []


def test_invalidation_targets() -> None:
    """A successful POST invalidates its URL and same-origin Location/Content-Location."""
    url = "http://h:80/a"
    headers = [("Location", "/b"), ("Content-Location", "http://other:80/c")]
    assert f.invalidated_urls("POST", url, 200, headers) == [url, "http://h:80/b"]
    assert f.invalidated_urls("POST", url, 500, headers) == []
    assert f.invalidated_urls("GET", url, 200, headers) == []


def test_request_directives() -> None:
    """Request no-cache, Pragma: no-cache and max-age limit what a fresh entry may answer."""
    assert f.request_allows_stored([], 100)
    assert not f.request_allows_stored([("Cache-Control", "no-cache")], 0)
    assert not f.request_allows_stored([("Pragma", "no-cache")], 0)
    assert not f.request_allows_stored([("Cache-Control", "max-age=10")], 20)
    assert f.request_allows_stored([("Cache-Control", "max-age=10")], 5)


headers_strategy = st.lists(
    st.tuples(
        st.sampled_from(["Cache-Control", "Expires", "Age", "Date", "Last-Modified", "Vary", "X"]),
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(["max-age=5", "no-cache", '"q,"', "0", date(-5), "*", "public"]),
        ),
    ),
    max_size=6,
)


def _no_crash(headers: list[tuple[str, str]], status: int, later: float) -> None:
    lifetime = f.freshness_lifetime(status, headers, NOW)
    assert 0 <= lifetime <= f.DELTA_SECONDS_MAX
    age = f.current_age(headers, NOW, NOW, NOW + later)
    assert age >= later - 1e-3  # float rounding of NOW + later
    f.is_storable("GET", status, headers, headers)
    f.vary_key(headers, headers)
    if f.is_fresh(status, headers, NOW, NOW, NOW + later):
        assert lifetime > age


@given(headers_strategy, st.integers(100, 599), st.floats(0, 1e6))
def test_rules_never_crash_and_stay_consistent(
    headers: list[tuple[str, str]], status: int, later: float
) -> None:
    """Any header soup gives a lifetime in range, an age at least the resident time."""
    _no_crash(headers, status, later)


_directive_text = st.text(
    st.one_of(st.sampled_from(list('=,"\\ \t-')), st.characters()), max_size=60
) | st.lists(
    st.sampled_from(["max-age", "no-cache", "no-store", "public", "=", '"', ",", "1", "-1", " "]),
    max_size=10,
).map("".join)


@given(st.lists(_directive_text, max_size=3), st.integers(100, 599), st.floats(0, 1e9))
def test_cache_control_parser_takes_any_value(values: list[str], status: int, later: float) -> None:
    """Any Cache-Control value parses without error; lifetimes and ages are never negative."""
    directives = f.parse_cache_control(values)
    assert all(name and name == name.lower() for name in directives)
    for name in directives:
        seconds = f.directive_seconds(directives, name)
        assert seconds is None or seconds == -1 or 0 <= seconds <= f.DELTA_SECONDS_MAX
    headers = [("Cache-Control", value) for value in values]
    lifetime = f.freshness_lifetime(status, headers, NOW)
    assert 0 <= lifetime <= f.DELTA_SECONDS_MAX
    assert f.current_age(headers, NOW, NOW, NOW + later) >= 0
    f.is_fresh(status, headers, NOW, NOW, NOW + later)
    f.request_allows_stored(headers, later)
    f.is_storable("GET", status, headers, headers)


@pytest.mark.slow
@pytest.mark.timeout(600)
@settings(max_examples=20_000, deadline=None)
@given(headers_strategy, st.integers(100, 599), st.floats(0, 1e6))
def test_rules_fuzz_long(headers: list[tuple[str, str]], status: int, later: float) -> None:
    """The same property over many more examples (slow)."""
    _no_crash(headers, status, later)


def test_connection_listed_and_hop_by_hop_fields_are_not_stored() -> None:
    """Fields named in Connection and hop-by-hop fields are left out of what is stored."""
    headers = [
        ("Connection", "a, B"),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "5"),
    ]
    assert f.stored_fields(headers) == [("c", "3"), ("Content-Length", "5")]
    not_modified = [("Connection", "x-a"), ("X-A", "new")]
    assert f.updated_headers([("X-A", "old")], not_modified) == [("X-A", "old")]


def test_304_with_no_store_or_vary_star_evicts() -> None:
    """A 304 bringing no-store or Vary: * removes the entry; other 304s update it."""
    assert f.not_modified_evicts([("Cache-Control", "no-store")])
    assert f.not_modified_evicts([("Vary", "Accept, *")])
    assert not f.not_modified_evicts([("Cache-Control", "max-age=5"), ("Vary", "Accept")])


@pytest.mark.parametrize(
    ("response_cc", "request_headers", "age", "expected"),
    [
        ("max-age=10", [], 1e6, True),
        ("max-age=10, must-revalidate", [], 20, False),
        ("max-age=10, proxy-revalidate", [], 20, False),
        ("max-age=10, no-cache", [], 20, False),
        ("max-age=10", [("Cache-Control", "no-cache")], 20, False),
        ("max-age=10", [("Pragma", "no-cache")], 20, False),
        ("max-age=10, stale-if-error=60", [], 70, True),
        ("max-age=10, stale-if-error=60", [], 71, False),
        ("max-age=10", [("Cache-Control", "max-stale=5")], 16, False),
        ("max-age=10", [("Cache-Control", "max-stale")], 1e6, True),
        ("max-age=10", [("Cache-Control", "stale-if-error=100")], 100, True),
        ("max-age=10, stale-if-error=x", [], 11, False),
    ],
)
def test_stale_on_error(
    response_cc: str, request_headers: list[tuple[str, str]], age: float, expected: bool
) -> None:
    """Stale on an unreachable origin: allowed unless forbidden; stale-if-error bounds it."""
    stored = [("Cache-Control", response_cc)]
    result = f.may_serve_stale_on_error(stored, request_headers, age, status=200, response_time=NOW)
    assert result is expected


def test_invalidation_compares_origins_by_scheme_host_and_port() -> None:
    """Same origin means same scheme, host in any case, and port with the default filled in."""
    url = "http://example.org:80/up"
    for location in ("http://example.org/b", "HTTP://EXAMPLE.ORG:80/b", "//Example.Org/b"):
        urls = f.invalidated_urls("POST", url, 201, [("Location", location)])
        assert len(urls) == 2 and f.url_origin(urls[1]) == ("http", "example.org", 80), location
    for location in ("https://example.org/b", "http://example.org:8080/b", "http://other/b"):
        assert f.invalidated_urls("POST", url, 201, [("Location", location)]) == [url]
    secure = "https://example.org:443/up"
    urls = f.invalidated_urls("POST", secure, 200, [("Content-Location", "https://EXAMPLE.org/c")])
    assert urls == [secure, "https://EXAMPLE.org/c"]
    assert f.invalidated_urls("POST", url, 200, [("Location", "http://example.org:x/b")]) == [url]


def test_304_without_age_restarts_the_age() -> None:
    """A 304 without Age drops the stored Age: the age counts from the 304, not twice."""
    stored = [("Cache-Control", "max-age=600"), ("Age", "100"), ("ETag", '"e"')]
    headers = f.updated_headers(stored, [("ETag", '"e"')])
    assert f.header_values(headers, "age") == []
    # Freshened at NOW (the 304's request and response times), 550 s later it is still fresh.
    assert f.is_fresh(200, headers, NOW, NOW, NOW + 550)
    assert not f.is_fresh(200, headers, NOW, NOW, NOW + 601)
    # A 304 with its own Age (it came through another cache) replaces the stored one.
    aged = f.updated_headers(stored, [("Age", "30")])
    assert f.header_values(aged, "age") == ["30"]
    assert f.current_age(aged, NOW, NOW, NOW + 10) == 40


@pytest.mark.parametrize(
    ("request_cc", "response_cc", "age", "accepted"),
    [
        ("max-stale", "max-age=10", 10**9, True),
        ("max-stale=50", "max-age=10", 60, True),
        ("max-stale=50", "max-age=10", 61, False),
        ("max-stale=-1", "max-age=10", 11, False),
        ("max-stale=x", "max-age=10", 11, False),
        ("max-stale", "max-age=10, must-revalidate", 11, False),
        ("max-stale", "max-age=10, proxy-revalidate", 11, False),
        ("max-stale", "no-cache", 11, False),
        ("max-stale, no-cache", "max-age=10", 11, False),
        ("max-age=5", "max-age=10", 11, False),
    ],
)
def test_accepts_stale(request_cc: str, response_cc: str, age: float, accepted: bool) -> None:
    """A request's max-stale accepts a stale response within its bound, never one that must be
    revalidated (RFC 9111 §5.2.1.2, §5.2.2)."""
    stored = [("Cache-Control", response_cc)]
    request = [("Cache-Control", request_cc)]
    assert f.accepts_stale(stored, request, age, status=200, response_time=0.0) is accepted


# -- the Cache-Control parser, fed whole, member by member, and with trailing data -----------------

_members = st.one_of(
    st.sampled_from(["no-cache", "no-store", "public", "private", "max-age=60", "MAX-AGE=5"]),
    st.sampled_from(['no-cache="a, b"', 'x="q\\"uote, ,"', "max-age =5", "max-age= 5", "=5"]),
    st.builds(
        "{}={}".format,
        st.sampled_from(["max-age", "max-stale", "stale-if-error", "x-ext"]),
        st.integers(0, 10**12).map(str) | st.sampled_from(["-1", "1.5", "abc", ""]),
    ),
)


@given(st.lists(_members, max_size=6), st.sampled_from(["", ",", " ,  ,", ",\t"]))
def test_cache_control_reads_the_same_in_one_line_or_many(
    members: list[str], trailing: str
) -> None:
    """Directives read the same from one field line, from one line per member (RFC 9110 §5.3
    lets a list be split across lines) and with empty list members trailing."""
    whole = f.parse_cache_control([", ".join(members)])
    assert f.parse_cache_control(members) == whole
    assert f.parse_cache_control([", ".join(members) + trailing]) == whole


@given(st.lists(_members, max_size=4), _members)
def test_cache_control_trailing_member_adds_only_itself(members: list[str], last: str) -> None:
    """A member after the others adds its own directive and changes none of theirs."""
    before = f.parse_cache_control(members)
    after = f.parse_cache_control([*members, last])
    alone = f.parse_cache_control([last])
    for name, values in after.items():
        assert values == before.get(name, []) + alone.get(name, [])


_field_names = st.sampled_from(["Age", "age", "AGE", "Cache-Control", "cache-control", "ETag", "X"])


@given(st.lists(st.tuples(_field_names, st.text(max_size=8)), max_size=8), _field_names)
def test_header_values_of_a_tuple_match_those_of_a_list(
    headers: list[tuple[str, str]], name: str
) -> None:
    """Stored fields (a tuple, looked up through an index) give the same values, in the same
    order, as the same fields in a list; the result is the caller's to change."""
    found = f.header_values(tuple(headers), name)
    assert found == f.header_values(headers, name)
    found.append("changed")
    assert f.header_values(tuple(headers), name) == f.header_values(headers, name)


@given(st.integers(min_value=0, max_value=4000), st.integers(min_value=0, max_value=100))
def test_is_fresh_with_the_age_given_matches_is_fresh_computing_it(later: int, age: int) -> None:
    """Passing the current age already computed decides exactly as computing it again."""
    headers = (("Cache-Control", "max-age=3600"), ("Age", str(age)))
    now = NOW + later
    current = f.current_age(headers, NOW, NOW, now)
    assert f.is_fresh(200, headers, NOW, NOW, now, age=current) == f.is_fresh(
        200, headers, NOW, NOW, now
    )
