"""Range parsing: the spans a Range header selects, If-Range, and the bounds against abuse."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver.errors import RangeNotSatisfiable
from webserver.ranges import (
    MAX_RANGES,
    content_range,
    if_range_allows,
    parse_ranges,
)

ETAG = '"abc-1"'
LAST_MODIFIED = "Sat, 05 Dec 2026 10:00:00 GMT"


@pytest.mark.parametrize(
    ("header", "spans"),
    [
        ("bytes=0-0", [(0, 1)]),
        ("bytes=0-99", [(0, 100)]),
        ("bytes=0-999", [(0, 100)]),
        ("bytes=10-", [(10, 100)]),
        ("bytes=-10", [(90, 100)]),
        ("bytes=-1000", [(0, 100)]),
        ("Bytes = 1-2 , 5-6", [(1, 3), (5, 7)]),
        ("bytes=50-59,0-9", [(50, 60), (0, 10)]),
        ("bytes=0-9,200-300", [(0, 10)]),
        ("bytes=0-1,,3-4", [(0, 2), (3, 5)]),
        ("bytes=0-" + "9" * 5000, [(0, 100)]),
    ],
)
def test_satisfiable(header: str, spans: list[tuple[int, int]]) -> None:
    """first-last, open, suffix and lists: clipped to the size, in the order asked."""
    assert parse_ranges(header, 100) == spans


@pytest.mark.parametrize(
    "header",
    [
        "items=0-1",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=5-1",
        "bytes=a-b",
        "bytes=0-1,x",
        "bytes=1-2-3",
        "bytes=+1-2",
    ],
)
def test_ignored(header: str) -> None:
    """Another unit or a malformed specifier is ignored: the whole file is sent."""
    assert parse_ranges(header, 100) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=200-300,100-", 100),
        ("bytes=0-" + "9" * 30, 0),
        ("bytes=" + "9" * 30 + "-", 100),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    """No range overlapping the file is 416."""
    with pytest.raises(RangeNotSatisfiable):
        parse_ranges(header, size)


def test_too_many_ranges_send_the_whole_file() -> None:
    """More than MAX_RANGES ranges, even small and sorted, get the whole file once."""
    many = ",".join(f"{i * 2}-{i * 2}" for i in range(MAX_RANGES + 1))
    assert parse_ranges("bytes=" + many, 1000) is None
    allowed = ",".join(f"{i * 2}-{i * 2}" for i in range(MAX_RANGES))
    assert parse_ranges("bytes=" + allowed, 1000) is not None


def test_overlapping_ranges_past_the_size_send_the_whole_file() -> None:
    """Overlapping ranges adding up to more than the file get it whole, not amplified."""
    assert parse_ranges("bytes=0-99,0-99", 100) is None
    assert parse_ranges("bytes=0-,1-", 100) is None
    assert parse_ranges("bytes=0-49,25-74", 100) == [(0, 50), (25, 75)]


@given(
    size=st.integers(0, 10_000),
    specs=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 20_000)), st.integers(0, 20_000)),
        min_size=1,
        max_size=MAX_RANGES + 4,
    ),
    suffixes=st.lists(st.booleans(), min_size=MAX_RANGES + 4, max_size=MAX_RANGES + 4),
)
def test_spans_always_lie_inside_the_file(
    size: int, specs: list[tuple[int | None, int]], suffixes: list[bool]
) -> None:
    """Whatever is asked, a served span is non-empty, inside the file, and never more bytes in
    total than the file; ignoring and 416 are the only other outcomes."""
    parts = []
    for (first, last), suffix in zip(specs, suffixes, strict=False):
        if suffix:
            parts.append(f"-{last}")
        else:
            parts.append(f"{first if first is not None else 0}-{'' if first is None else last}")
    try:
        spans = parse_ranges("bytes=" + ",".join(parts), size)
    except RangeNotSatisfiable:
        return
    if spans is None:
        return
    assert 1 <= len(spans) <= MAX_RANGES
    assert all(0 <= start < stop <= size for start, stop in spans)
    assert sum(stop - start for start, stop in spans) <= size


@given(st.text(max_size=60), st.integers(0, 1000))
def test_never_raises_on_any_text(header: str, size: int) -> None:
    """Any header text is parsed, ignored or 416 -- never another exception."""
    with contextlib.suppress(RangeNotSatisfiable):
        parse_ranges(header, size)


class TestIfRange:
    def test_absent_allows(self) -> None:
        """Without If-Range the Range applies."""
        assert if_range_allows(None, ETAG, LAST_MODIFIED)

    def test_etag(self) -> None:
        """The current strong ETag allows; another or a weak one does not."""
        assert if_range_allows(ETAG, ETAG, LAST_MODIFIED)
        assert not if_range_allows('"other"', ETAG, LAST_MODIFIED)
        assert not if_range_allows("W/" + ETAG, ETAG, LAST_MODIFIED)

    def test_date(self) -> None:
        """Exactly the Last-Modified date allows; another or garbage does not."""
        assert if_range_allows(LAST_MODIFIED, ETAG, LAST_MODIFIED)
        assert not if_range_allows("Sat, 05 Dec 2026 10:00:01 GMT", ETAG, LAST_MODIFIED)
        assert not if_range_allows("yesterday", ETAG, LAST_MODIFIED)


def test_content_range() -> None:
    """Content-Range names the last byte, inclusive, and the full length."""
    assert content_range(0, 10, 100) == "bytes 0-9/100"
