"""RFC 9111's rules (HTTP caching), as pure functions: no I/O, no clock, so every rule can be
tested and fuzzed. Whatever depends on the time takes ``now`` (or the response's arrival time) as an
argument.

Rules kept (section numbers of RFC 9111 unless said otherwise):

- Cache-Control is parsed as a list of directives; a quoted value is unquoted, text inside quotes is
  never taken for a directive, and a directive written with spaces around "=" is not that
  directive (§5.2).
- A delta-seconds value is digits only, capped at 2**31; anything else, or a directive repeated
  with different values, makes the response stale (§1.2.2, §4.2.1).
- Freshness lifetime: ``max-age``, else ``Expires - Date``; ``s-maxage`` is ignored because this is
  a private cache (§4.2.1). An Expires that is not a valid HTTP-date (``0``, ``UTC`` for ``GMT``, a
  missing comma, doubled spaces, dashes in the IMF-fixdate form), or several Expires fields, count
  as already expired (§5.3).
- HTTP-date (parsed by :mod:`webclient._shared.httpdate`, the server's parser too): exactly the
  three forms of RFC 9110 §5.6.7 -- IMF-fixdate, rfc850-date (a two-digit year more than 50 years
  ahead of ``now`` is the century before) and asctime-date -- with real calendar days, hours to
  23, minutes to 59 and seconds to 60 (a leap second). Day and month names and ``GMT`` are read in
  any letter case; the day name is not checked against the date.
- Heuristic freshness (10% of the time since Last-Modified, at most a day) only for heuristically
  cacheable status codes or ``public`` responses without explicit freshness (§4.2.2).
- Age: the corrected initial age plus the time resident (§4.2.3). Of several Age field lines the
  first is used, and of a list in one line the first member; an Age that is not delta-seconds
  (``abc``, ``-7200``, ``7200.0``) is ignored, as if absent (§5.1).
- Storable: GET, a final status other than 206 and 304, no ``no-store`` on either side, not
  ``Vary: *``, and explicit freshness, ``public``/``private`` or a heuristically cacheable status
  (§3). ``private`` is fine: this cache serves one user.
- Stored fields: never the hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection, TE,
  Transfer-Encoding, Upgrade) nor those the Connection field names (§3.1).
- Vary: a stored response matches when every named request header has the same normalised value,
  absent matching absent; ``*`` matches nothing (§4.1).
- A 304 replaces the stored header fields it carries, except framing and hop-by-hop fields (§3.2,
  §4.3.4); the stored Age is always dropped, since the age then counts from the 304 (§4.2.3). A 304
  carrying ``no-store`` or ``Vary: *`` removes the stored response instead: it could no longer be
  stored (§3, §4.3.4).
- Stale on error: when the origin cannot be reached, a stale response may be served, with a
  warning (§4.2.4), but never under ``no-cache``, ``must-revalidate`` or ``proxy-revalidate`` in
  the response (§5.2.2), nor for a request with ``no-cache``; ``stale-if-error=N`` (RFC 5861 §4)
  or ``max-stale[=N]`` in the request, else ``stale-if-error=N`` in the response, bounds how stale.
- A 2xx/3xx answer to an unsafe method invalidates the target URI and same-origin
  Location/Content-Location (§4.4).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from urllib.parse import urljoin, urlsplit

# HTTP-dates are shared with the server; they are named here too, where the rules use them.
from ._shared.httpdate import is_http_date, parse_http_date

HeaderList = Sequence[tuple[str, str]]

HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Fraction of the time since Last-Modified a heuristic may count as fresh (§4.2.2 suggests 10%).
HEURISTIC_FRACTION = 0.1
#: A cap on heuristic freshness: a file unchanged for a year may still change tomorrow.
HEURISTIC_CAP = 24 * 60 * 60.0
#: The largest delta-seconds value a cache must handle (§1.2.2).
DELTA_SECONDS_MAX = 2**31
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, so a cache never stores
#: them (§3.1), nor the fields the Connection field names.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"}
)
#: Response directives that forbid serving the response stale, even when the origin is down
#: (§4.2.4, §5.2.2.2, §5.2.2.4, §5.2.2.8).
NO_STALE_DIRECTIVES = ("no-cache", "must-revalidate", "proxy-revalidate")
#: Fields a 304 never updates: they describe the framing of that 304, not the stored body.
NOT_UPDATED_BY_304 = frozenset(
    {
        "connection",
        "content-length",
        "content-range",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

Directives = dict[str, list[str | None]]
#: The request values a stored response was selected by: (lower-case name, normalised value).
VaryKey = tuple[tuple[str, str | None], ...]


def header_values(headers: HeaderList, name: str) -> list[str]:
    """Every value of a field, in order (names compared case-insensitively)."""
    name = name.lower()
    if type(headers) is tuple:
        # A stored response's fields (a tuple) are asked for some ten fields per lookup: index
        # them once instead of lower-casing every name ten times.
        try:
            return list(_field_index(headers).get(name, ()))
        except TypeError:  # fields that are not (str, str) pairs cannot be a key
            pass
    return [value for field, value in headers if field.lower() == name]


@functools.lru_cache(maxsize=64)
def _field_index(headers: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, ...]]:
    """The values of each field by lower-case name, in order (read-only: it may be shared)."""
    index: dict[str, list[str]] = {}
    for field, value in headers:
        index.setdefault(field.lower(), []).append(value)
    return {name: tuple(values) for name, values in index.items()}


def header_value(headers: HeaderList, name: str) -> str | None:
    """The field's values joined with ", " as RFC 9110 §5.3 combines them, or None."""
    values = header_values(headers, name)
    return ", ".join(values) if values else None


def _quoted_string(text: str, start: int) -> tuple[str, int]:
    """The unescaped content of the quoted string at ``start`` and the index after it."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    return "".join(out), i


def _skip_to_comma(text: str, i: int) -> int:
    """Index of the next list separator outside quotes (or the end)."""
    while i < len(text) and text[i] != ",":
        i = _quoted_string(text, i)[1] if text[i] == '"' else i + 1
    return i


def parse_cache_control(values: Iterable[str]) -> Directives:
    """Directives by lower-case name, each with every value it was given (None: no value)."""
    directives: Directives = {}
    for text in values:
        i = 0
        while i < len(text):
            while i < len(text) and text[i] in " \t,":
                i += 1
            start = i
            while i < len(text) and text[i] in _TCHAR:
                i += 1
            name = text[start:i].lower()
            value: str | None = None
            valid = bool(name)
            if i < len(text) and text[i] == "=":
                i += 1
                if i < len(text) and text[i] == '"':
                    value, i = _quoted_string(text, i)
                else:
                    vstart = i
                    while i < len(text) and text[i] in _TCHAR:
                        i += 1
                    value = text[vstart:i]
            rest = _skip_to_comma(text, i)
            if text[i:rest].strip(" \t"):
                valid = False  # e.g. "max-age =100" or "max-age= 100"
            i = rest
            if valid:
                directives.setdefault(name, []).append(value)
    return directives


def cache_control(headers: HeaderList) -> Directives:
    """The response's or request's directives (read-only: the result may be shared)."""
    values = header_values(headers, "cache-control")
    return _cached_cache_control(tuple(values)) if values else {}


@functools.lru_cache(maxsize=256)
def _cached_cache_control(values: tuple[str, ...]) -> Directives:
    return parse_cache_control(values)


def parse_delta_seconds(value: str | None) -> int | None:
    """Digits only, capped at 2**31; None for anything else."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), DELTA_SECONDS_MAX)


def directive_seconds(directives: Directives, name: str) -> int | None:
    """A delta-seconds directive's value; -1 when invalid or given conflicting values."""
    if name not in directives:
        return None
    parsed = {parse_delta_seconds(v) for v in directives[name]}
    if len(parsed) != 1 or None in parsed:
        return -1
    (seconds,) = parsed
    assert seconds is not None
    return seconds


def date_value(headers: HeaderList, response_time: float) -> float:
    """The Date header, or the time the response arrived when it is missing or invalid."""
    parsed = parse_http_date(header_value(headers, "date"), response_time)
    return response_time if parsed is None else parsed


def freshness_lifetime(status: int, headers: HeaderList, response_time: float) -> float:
    """How long the response is fresh after it was generated, in seconds (§4.2.1, §4.2.2)."""
    directives = cache_control(headers)
    max_age = directive_seconds(directives, "max-age")
    if max_age is not None:
        return float(max(max_age, 0))
    expires_text = header_value(headers, "expires")
    date = date_value(headers, response_time)
    if expires_text is not None:
        expires = parse_http_date(expires_text, response_time)
        if expires is None or len(header_values(headers, "expires")) > 1:
            return 0.0
        return max(0.0, expires - date)
    if status not in HEURISTICALLY_CACHEABLE and "public" not in directives:
        return 0.0
    last_modified = parse_http_date(header_value(headers, "last-modified"), response_time)
    if last_modified is None or last_modified >= date:
        return 0.0
    return min(HEURISTIC_CAP, HEURISTIC_FRACTION * (date - last_modified))


def has_explicit_freshness(headers: HeaderList) -> bool:
    return "max-age" in cache_control(headers) or bool(header_values(headers, "expires"))


def age_value(headers: HeaderList) -> int:
    """The Age field's seconds (§5.1): the first member of its first field line; 0 when absent or
    not delta-seconds, since an invalid Age is ignored rather than trusted."""
    values = header_values(headers, "age")
    if not values:
        return 0
    first = values[0].split(",", 1)[0].split(";", 1)[0].strip(" \t")
    parsed = parse_delta_seconds(first)
    return 0 if parsed is None else parsed


def current_age(
    headers: HeaderList, request_time: float, response_time: float, now: float
) -> float:
    """The response's age now (§4.2.3)."""
    apparent_age = max(0.0, response_time - date_value(headers, response_time))
    response_delay = max(0.0, response_time - request_time)
    corrected_initial_age = max(apparent_age, age_value(headers) + response_delay)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


def is_fresh(
    status: int,
    headers: HeaderList,
    request_time: float,
    response_time: float,
    now: float,
    *,
    age: float | None = None,
) -> bool:
    """Whether a stored response may be served without contacting the origin (``age``: its
    :func:`current_age` at ``now``, when the caller has it already)."""
    if "no-cache" in cache_control(headers):
        return False
    lifetime = freshness_lifetime(status, headers, response_time)
    if age is None:
        age = current_age(headers, request_time, response_time, now)
    return lifetime > age


def request_allows_stored(request_headers: HeaderList, age: float) -> bool:
    """Whether the request's own Cache-Control lets a fresh stored response be used unvalidated."""
    directives = cache_control(request_headers)
    if "no-cache" in directives or "no-store" in directives:
        return False
    # Pragma: no-cache counts only where Cache-Control is absent (RFC 9111 §5.4).
    pragma = (header_value(request_headers, "pragma") or "").lower()
    if not header_values(request_headers, "cache-control") and "no-cache" in pragma:
        return False
    max_age = directive_seconds(directives, "max-age")
    return max_age is None or (max_age >= 0 and age <= max_age)


def accepts_stale(
    stored_headers: HeaderList,
    request_headers: HeaderList,
    age: float,
    *,
    status: int,
    response_time: float,
) -> bool:
    """Whether the request's ``max-stale`` lets a stale stored response answer it unvalidated
    (§5.2.1.2); never past ``no-cache``, ``must-revalidate`` or ``proxy-revalidate`` in the
    response (§5.2.2), nor for a request that also says ``no-cache``."""
    request = cache_control(request_headers)
    if "max-stale" not in request or "no-cache" in request or "no-store" in request:
        return False
    if any(name in cache_control(stored_headers) for name in NO_STALE_DIRECTIVES):
        return False
    if request["max-stale"] == [None]:
        limit = math.inf
    else:
        seconds = directive_seconds(request, "max-stale")
        if seconds is None or seconds < 0:
            return False  # an invalid value allows nothing stale rather than anything
        limit = float(seconds)
    return age - freshness_lifetime(status, stored_headers, response_time) <= limit


def has_validator(headers: HeaderList) -> bool:
    return bool(header_values(headers, "etag") or header_values(headers, "last-modified"))


def vary_names(headers: HeaderList) -> list[str] | None:
    """The request header names a response varies on, lower-case and sorted; None for ``*``."""
    names: set[str] = set()
    for value in header_values(headers, "vary"):
        for item in value.split(","):
            name = item.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return sorted(names)


def normalise_field(request_headers: HeaderList, name: str) -> str | None:
    """A request field's value in a form where equivalent spellings compare equal."""
    values = header_values(request_headers, name)
    if not values:
        return None
    items = [item.strip(" \t") for value in values for item in value.split(",")]
    return ",".join(" ".join(item.split()) for item in items)


def vary_key(response_headers: HeaderList, request_headers: HeaderList) -> VaryKey | None:
    """The request values a stored response is keyed on; None when it varies on ``*``."""
    names = vary_names(response_headers)
    if names is None:
        return None
    return tuple((name, normalise_field(request_headers, name)) for name in names)


def vary_matches(stored: VaryKey, request_headers: HeaderList) -> bool:
    """Whether a new request selects a response stored for a request with ``stored`` values."""
    return all(normalise_field(request_headers, name) == value for name, value in stored)


def is_storable(
    method: str, status: int, response_headers: HeaderList, request_headers: HeaderList
) -> bool:
    """Whether a private cache may store the response (§3), and storing it could ever help."""
    if method != "GET" or status < 200 or status in (206, 304):
        return False
    response_cc = cache_control(response_headers)
    if "no-store" in response_cc or "no-store" in cache_control(request_headers):
        return False
    if vary_names(response_headers) is None:
        return False
    explicit = has_explicit_freshness(response_headers)
    allowed = (
        explicit
        or "public" in response_cc
        or "private" in response_cc
        or status in HEURISTICALLY_CACHEABLE
    )
    if not allowed:
        return False
    # Storing a response that is never fresh and cannot be validated would only waste disk.
    return has_validator(response_headers) or (
        "no-cache" not in response_cc and freshness_lifetime(status, response_headers, 0.0) > 0
    )


def conditional_headers(stored_headers: HeaderList) -> list[tuple[str, str]]:
    """Validators for revalidating a stored response: its ETag and/or Last-Modified (§4.3.1)."""
    out: list[tuple[str, str]] = []
    etag = header_value(stored_headers, "etag")
    if etag is not None:
        out.append(("If-None-Match", etag))
    last_modified = header_value(stored_headers, "last-modified")
    if last_modified is not None and is_http_date(last_modified):
        out.append(("If-Modified-Since", last_modified))
    return out


def _opaque_tag(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def validator_matches(stored_headers: HeaderList, not_modified_headers: HeaderList) -> bool:
    """Whether a 304 is about the stored response (§4.3.4): its ETag, when sent, must match."""
    new_etag = header_value(not_modified_headers, "etag")
    if new_etag is None:
        return True
    old_etag = header_value(stored_headers, "etag")
    return old_etag is not None and _opaque_tag(old_etag) == _opaque_tag(new_etag)


def updated_headers(stored: HeaderList, not_modified: HeaderList) -> list[tuple[str, str]]:
    """Stored fields with every field the 304 carries replaced by the 304's values (§3.2).

    The stored Age goes in every case: once freshened, the entry's request and response times
    are those of the 304, and the age counted from them (§4.2.3) must start from the 304's own
    Age (none: it came from the origin with age 0), not again from the old response's.
    """
    not_modified = stored_fields(not_modified)
    replaced = {n.lower() for n, _ in not_modified if n.lower() not in NOT_UPDATED_BY_304}
    replaced.add("age")
    kept = [(n, v) for n, v in stored if n.lower() not in replaced]
    return kept + [(n, v) for n, v in not_modified if n.lower() in replaced]


def not_modified_evicts(not_modified: HeaderList) -> bool:
    """Whether a 304 removes the stored response it is about instead of freshening it.

    The updated response would carry ``no-store`` or ``Vary: *``, so it could no longer be
    stored (§3, §4.3.4); keeping the old copy would serve what the origin now forbids.
    """
    return "no-store" in cache_control(not_modified) or vary_names(not_modified) is None


def connection_options(headers: HeaderList) -> set[str]:
    """The field names the Connection field lists, lower-case (RFC 9110 §7.6.1)."""
    return {
        name
        for value in header_values(headers, "connection")
        for item in value.split(",")
        if (name := item.strip(" \t").lower())
    }


def stored_fields(headers: HeaderList) -> list[tuple[str, str]]:
    """The response's fields a cache may store: all but the hop-by-hop ones and those named in
    Connection (§3.1), which were about the connection the response came on."""
    dropped = HOP_BY_HOP | connection_options(headers)
    return [(n, v) for n, v in headers if n.lower() not in dropped]


def _staleness_limit(response: Directives, request: Directives) -> float | None:
    """How stale a response may be served on error; None when no directive says."""
    if request.get("max-stale") == [None]:
        return math.inf  # max-stale without a value: any staleness (§5.2.1.2)
    names = ("stale-if-error", "max-stale")
    limits = [s for name in names if (s := directive_seconds(request, name)) is not None]
    if not limits and (seconds := directive_seconds(response, "stale-if-error")) is not None:
        limits = [seconds]
    # An invalid value (-1) allows nothing stale rather than anything.
    return float(max(*limits, 0)) if limits else None


def may_serve_stale_on_error(
    stored_headers: HeaderList,
    request_headers: HeaderList,
    age: float,
    *,
    status: int,
    response_time: float,
) -> bool:
    """Whether a stored response ``age`` seconds old may answer a request whose origin could not
    be reached (§4.2.4; RFC 5861 §4).

    Disconnected, a cache may serve stale unless a directive forbids it: ``no-cache``,
    ``must-revalidate`` or ``proxy-revalidate`` in the response, or ``no-cache`` (or ``Pragma:
    no-cache``) in the request, which asked for a validated answer. ``stale-if-error=N`` or
    ``max-stale=N`` in the request, else ``stale-if-error=N`` in the response, bound the staleness.
    """
    response = cache_control(stored_headers)
    if any(name in response for name in NO_STALE_DIRECTIVES):
        return False
    request = cache_control(request_headers)
    pragma = (header_value(request_headers, "pragma") or "").lower()
    if "no-cache" in request or (
        not header_values(request_headers, "cache-control") and "no-cache" in pragma
    ):
        return False
    staleness = age - freshness_lifetime(status, stored_headers, response_time)
    limit = _staleness_limit(response, request)
    return limit is None or staleness <= limit


#: The port a URL without one means, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443}


def url_origin(url: str) -> tuple[str, str, int | None] | None:
    """A URL's origin as compared (RFC 9110 §4.3.1): scheme and host in lower case, and the port
    with the scheme's default filled in; None when the URL has no usable authority or port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not scheme or not host:
        return None
    return scheme, host, port if port is not None else DEFAULT_PORTS.get(scheme)


def invalidated_urls(method: str, url: str, status: int, response_headers: HeaderList) -> list[str]:
    """URLs whose stored responses a completed request makes stale (§4.4).

    The Location and Content-Location targets count only when they have the request's origin,
    compared as :func:`url_origin` spells it (so ``LOCALHOST`` is ``localhost`` and a missing
    port is the scheme's default).
    """
    if method.upper() in SAFE_METHODS or not 200 <= status < 400:
        return []
    urls = [url]
    origin = url_origin(url)
    if origin is None:
        return urls
    for name in ("location", "content-location"):
        value = header_value(response_headers, name)
        if not value:
            continue
        try:
            target = urlsplit(urljoin(url, value.strip()))._replace(fragment="").geturl()
        except ValueError:
            continue
        if url_origin(target) == origin and target not in urls:
            urls.append(target)
    return urls
