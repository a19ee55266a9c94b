"""Validators and conditional requests (RFC 9110 §8.8, §13).

Pure functions over values, so they can be fuzzed: a file's ``os.stat_result`` gives its strong
ETag and Last-Modified; request headers decide whether a 412 is due (If-Match, and only without
it If-Unmodified-Since), then whether a 304 is (If-None-Match, and only without it
If-Modified-Since), in the order of RFC 9110 §13.2.2.
"""

from __future__ import annotations

import os

from .headers import Headers
from .httpdate import parse_http_date


def make_etag(st: os.stat_result) -> str:
    """A strong ETag that changes whenever the file's content may have: size, mtime and inode."""
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def _opaque(tag: str) -> str:
    """The opaque part of an entity-tag, for weak comparison (RFC 9110 §8.8.3.2)."""
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-None-Match field value lists ``etag`` (weak comparison) or is ``*``."""
    if header.strip() == "*":
        return True
    wanted = _opaque(etag)
    return any(_opaque(candidate) == wanted for candidate in header.split(","))


def precondition_failed(headers: Headers, etag: str, mtime: float) -> bool:
    """True when a GET/HEAD must be answered 412 Precondition Failed (RFC 9110 §13.1.1,
    §13.1.4): ``If-Match`` names none of the current ETag by strong comparison (``*``: any
    file matches), or, without ``If-Match``, ``If-Unmodified-Since`` is before the mtime (to
    the second; an invalid date is ignored)."""
    if_match = headers.get("if-match")
    if if_match is not None:
        if if_match.strip() == "*":
            return False
        return etag not in {tag.strip() for tag in if_match.split(",")}
    since = headers.get("if-unmodified-since")
    if since is None:
        return False
    since_time = parse_http_date(since)
    return since_time is not None and int(mtime) > since_time


def not_modified(headers: Headers, etag: str, mtime: float) -> bool:
    """True when a GET/HEAD may be answered with 304 Not Modified."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = headers.get("if-modified-since")
    if since is None:
        return False
    since_time = parse_http_date(since)
    # Last-Modified has one-second resolution: compare whole seconds.
    return since_time is not None and int(mtime) <= since_time
