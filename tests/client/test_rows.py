"""Tests of webclient/_rows.py: a row of the cache index read back with every field checked."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webclient._rows import BadRow, Entry, row_entry

SHA = "ab" * 32
GOOD = (7, "http://h:80/a", "[]", 200, "OK", '[["ETag", "\\"a\\""]]', SHA, 3, 1.0, 2.0)


def _with(index: int, value: object) -> tuple[object, ...]:
    row = list(GOOD)
    row[index] = value
    return tuple(row)


def test_a_row_as_written_reads_back() -> None:
    """A row as this program writes it is an Entry with the same values."""
    entry = row_entry(GOOD)
    assert entry == Entry(
        id=7,
        key="http://h:80/a",
        vary=(),
        status=200,
        reason="OK",
        headers=(("ETag", '"a"'),),
        body_sha=SHA,
        body_size=3,
        request_time=1.0,
        response_time=2.0,
    )


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (3, "200", "status"),
        (3, 99, "status"),
        (3, True, "status"),
        (7, -1, "body size"),
        (7, 3.0, "body size"),
        (6, SHA + "\n", "SHA-256"),  # trailing data: a name is all 64 digits or nothing
        (6, SHA + "0", "SHA-256"),
        (6, SHA[:-1], "SHA-256"),  # a prefix
        (6, "../" + SHA[3:], "SHA-256"),
        (6, SHA.upper(), "SHA-256"),
        (1, b"http://h:80/a", "key or reason"),
        (2, '[["accept", null]] x', "Vary"),  # trailing data after the JSON
        (2, '[["accept"]]', "Vary"),
        (5, '[["ETag", null]]', "header fields"),  # only Vary values may be null
        (5, "{}", "header fields"),
        (8, float("nan"), "request time"),
        (9, "2.0", "response time"),
    ],
)
def test_a_field_not_as_written_is_a_bad_row(index: int, value: object, message: str) -> None:
    """Each field of another type, shape or range makes the row unreadable, saying which."""
    with pytest.raises(BadRow, match=message):
        row_entry(_with(index, value))


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4))
def test_header_pairs_round_trip(pairs: list[tuple[str, str]]) -> None:
    """Header fields written as JSON name/value pairs read back the same, whatever the text."""
    entry = row_entry(_with(5, json.dumps([list(p) for p in pairs])))
    assert entry.headers == tuple(pairs)
