"""Validators and the 304 decision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver.conditional import etag_matches, make_etag, not_modified, precondition_failed
from webserver.headers import Headers
from webserver.httpdate import format_http_date

ETAG = '"abc"'
MTIME = 1_700_000_000.5


def test_etag_changes_with_content(tmp_path: Path) -> None:
    """Rewriting a file with other content gives another strong ETag."""
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = make_etag(os.stat(path))
    path.write_bytes(b"other")
    assert make_etag(os.stat(path)) != first
    assert first.startswith('"')
    assert first.endswith('"')
    assert not first.startswith("W/")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ("*", True),
        ('"abd"', False),
        ("", False),
        ('"x",W/"y"', False),
    ],
)
def test_etag_matches(header: str, expected: bool) -> None:
    """If-None-Match uses weak comparison and accepts lists and '*'."""
    assert etag_matches(header, ETAG) is expected


def test_if_none_match_wins_over_if_modified_since() -> None:
    """With If-None-Match present, If-Modified-Since is ignored (RFC 9110 §13.2.2)."""
    headers = Headers(
        [("If-None-Match", '"other"'), ("If-Modified-Since", format_http_date(MTIME + 100))]
    )
    assert not not_modified(headers, ETAG, MTIME)


def test_if_modified_since() -> None:
    """Not modified when the file is no newer than the date, to the second."""
    same = Headers([("If-Modified-Since", format_http_date(MTIME))])
    older = Headers([("If-Modified-Since", format_http_date(MTIME - 10))])
    assert not_modified(same, ETAG, MTIME)
    assert not not_modified(older, ETAG, MTIME)


def test_invalid_date_is_ignored() -> None:
    """An unparsable If-Modified-Since is treated as absent."""
    assert not not_modified(Headers([("If-Modified-Since", "yesterday")]), ETAG, MTIME)


@given(st.text(max_size=60))
def test_fuzz_never_raises(value: str) -> None:
    """Arbitrary header values give a yes/no, never an exception."""
    for name in ("If-None-Match", "If-Modified-Since"):
        assert not_modified(Headers([(name, value)]), ETAG, MTIME) in (True, False)


@pytest.mark.parametrize(
    "since",
    [
        "Sun, 06 Nov 2094 08:49:37 +0000",  # a numeric zone: not an HTTP-date
        "Sun, 06 Nov 2094 08:49:37 UTC",
        "06 Nov 2094 08:49:37 GMT",  # no day name
        "Sun, 06 Nov 2094 08:49:37 GMT junk",
    ],
)
def test_if_modified_since_in_no_http_date_form_is_ignored(since: str) -> None:
    """An If-Modified-Since in none of RFC 9110's three date forms is ignored (§13.1.3: an
    invalid date), even one far in the future: the whole file is sent, not a 304."""
    assert not not_modified(Headers([("If-Modified-Since", since)]), '"e"', 1_000_000.0)
    valid = "Sun, 06 Nov 2094 08:49:37 GMT"
    assert not_modified(Headers([("If-Modified-Since", valid)]), '"e"', 1_000_000.0)


@pytest.mark.parametrize(
    ("fields", "failed"),
    [
        ([], False),
        ([("If-Match", '"abc"')], False),
        ([("If-Match", '"x", "abc"')], False),
        ([("If-Match", "*")], False),
        ([("If-Match", '"abd"')], True),
        ([("If-Match", 'W/"abc"')], True),  # strong comparison: a weak tag never matches
        ([("If-Match", "")], True),
        ([("If-Unmodified-Since", format_http_date(MTIME))], False),
        ([("If-Unmodified-Since", format_http_date(MTIME + 10))], False),
        ([("If-Unmodified-Since", format_http_date(MTIME - 10))], True),
        ([("If-Unmodified-Since", "yesterday")], False),  # an invalid date is ignored
        ([("If-Match", '"abc"'), ("If-Unmodified-Since", format_http_date(MTIME - 10))], False),
    ],
)
def test_precondition_failed(fields: list[tuple[str, str]], failed: bool) -> None:
    """If-Match compares strongly and accepts lists and '*'; only without it is
    If-Unmodified-Since evaluated, to the second (RFC 9110 §13.2.2 steps 1-2)."""
    assert precondition_failed(Headers(fields), ETAG, MTIME) is failed


@given(st.text(max_size=60))
def test_fuzz_preconditions_never_raise(value: str) -> None:
    """Arbitrary If-Match and If-Unmodified-Since values give a yes/no, never an exception."""
    for name in ("If-Match", "If-Unmodified-Since"):
        assert precondition_failed(Headers([(name, value)]), ETAG, MTIME) in (True, False)
