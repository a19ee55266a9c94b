"""Following redirects: where the next request goes and what it may carry (RFC 9110 §15.4).

Rules: 301, 302 and 303 are followed with GET and no body (a HEAD stays a HEAD), 307 and 308 with
the same method and body; a relative ``Location`` is resolved against the URL that answered and
its fragment dropped; a hop to another origin (scheme, host or port) drops the request's
credentials and its own ``Host``, so a token meant for one server is never sent to another; a URL
seen twice in one chain with the same method is a loop, more than ``max_redirects`` hops is an
error, and so is a ``Location`` that is no http(s) URL with a host and a port in 1..65535, or
several different ``Location`` fields (no single target), each one
:class:`~webclient.errors.RedirectError` in one sentence. A ``Location`` with a scheme is taken
as written (RFC 3986 §5.2.2), never completed from the URL that answered. Pure functions over
values: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urldefrag, urljoin, urlsplit

from ._freshness import HeaderList, header_value, header_values, url_origin
from .errors import RedirectError

#: Statuses that send the client elsewhere with a Location (300 and 305 are not followed: the
#: first asks the user to choose, the second is deprecated).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Statuses after which the next request is a GET without body (HEAD stays HEAD).
_BECOMES_GET = frozenset({301, 302, 303})
#: Request fields that must not follow a request to another origin.
_ORIGIN_BOUND = frozenset({"authorization", "proxy-authorization", "cookie", "host"})
#: A character of a header value that may not stand raw in a URL: a byte outside ASCII, a
#: control character, a space.
_RAW_BYTE = re.compile("[\x00-\x20\x7f-\xff]")
#: Request fields that describe a body: dropped with the body.
_BODY_FIELDS = frozenset({"content-type", "content-length", "content-encoding"})


class Hop(NamedTuple):
    """The request a redirect leads to."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    #: False when the body is dropped (the method became GET).
    keeps_body: bool


def is_redirect(status: int, headers: HeaderList) -> bool:
    """Whether a response sends the client elsewhere (a redirect status with a Location)."""
    return status in REDIRECT_STATUSES and bool((header_value(headers, "location") or "").strip())


def next_hop(
    method: str,
    url: str,
    request_headers: HeaderList,
    status: int,
    response_headers: HeaderList,
) -> Hop | None:
    """The request that follows a redirect response; None when the response is not one."""
    if not is_redirect(status, response_headers):
        return None
    target = _target(url, response_headers)
    keeps_body = status not in _BECOMES_GET or method in ("GET", "HEAD")
    new_method = method if keeps_body or method == "HEAD" else "GET"
    dropped: set[str] = set()
    if not keeps_body:
        dropped |= _BODY_FIELDS
    if url_origin(target) != url_origin(url):
        dropped |= _ORIGIN_BOUND
    headers = tuple((n, v) for n, v in request_headers if n.lower() not in dropped)
    return Hop(new_method, target, headers, keeps_body)


def _target(url: str, response_headers: HeaderList) -> str:
    """Where the Location sends the client, without its fragment; RedirectError when nowhere."""
    locations = {value.strip() for value in header_values(response_headers, "location")}
    if len(locations) > 1:
        raise RedirectError(f"several Location fields: {', '.join(sorted(map(repr, locations)))}")
    # Header values are read as latin-1: a non-ASCII character stands for one raw byte (often
    # of UTF-8), escaped as that byte so the target is the one the server wrote, as curl does;
    # control characters too, which urlsplit would silently drop (tabs, CR, LF) or keep raw.
    location = _RAW_BYTE.sub(lambda m: f"%{ord(m.group()):02X}", locations.pop())
    try:
        # With a scheme it is absolute: urljoin would fill a missing host from ``url``.
        absolute = bool(urlsplit(location).scheme)
        target, _ = urldefrag(location if absolute else urljoin(url, location))
        parts = urlsplit(target)
        port = parts.port
    except ValueError as exc:
        raise RedirectError(f"invalid Location {location!r} ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise RedirectError(f"invalid Location {location!r} (not an http:// or https:// URL)")
    if not parts.hostname:
        raise RedirectError(f"invalid Location {location!r} (no host)")
    if port == 0:
        raise RedirectError(f"invalid Location {location!r} (port 0)")
    return target


def check_chain(
    chain: list[str],
    target: str,
    max_redirects: int,
    *,
    methods: Sequence[str] = (),
    method: str = "",
) -> None:
    """Refuse a hop to ``target`` after the URLs of ``chain`` (the first is the one asked).

    With ``methods`` (one per URL of the chain) and the hop's ``method``, a loop is the same
    method and URL seen again: a POST answered 303 to its own URL (Post/Redirect/Get) is then
    followed by a GET of that URL, not a loop."""
    seen = list(zip(methods, chain, strict=True)) if methods else [(method, url) for url in chain]
    if (method, target) in seen:
        loop = " -> ".join([*chain[seen.index((method, target)) :], target])
        raise RedirectError(f"redirect loop: {loop}")
    if len(chain) > max_redirects:
        raise RedirectError(f"more than {max_redirects} redirects from {chain[0]} (last: {target})")
