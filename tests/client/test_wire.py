"""Tests of webclient/_wire.py: a request's head as h11 writes it, kept, and when h11 reads."""

from __future__ import annotations

import os
import tempfile

import h11
import pytest

from webclient import ProtocolError
from webclient._wire import WireRequest, file_length

HOST = [("Host", "h")]


def _h11_bytes(method: str, headers: list[tuple[str, str]], body_length: int | None) -> bytes:
    fields = [(n.encode(), v.encode()) for n, v in headers]
    if body_length is not None:
        fields.append((b"Content-Length", str(body_length).encode()))
    return h11.Connection(h11.CLIENT).send(h11.Request(method=method, target="/x", headers=fields))


@pytest.mark.parametrize(
    ("method", "headers", "body", "length"),
    [
        ("GET", HOST, None, None),
        ("HEAD", [*HOST, ("Accept", "*/*")], None, None),
        ("GET", [*HOST, ("Connection", "close")], None, None),
        ("POST", HOST, b"abc", 3),
        ("POST", HOST, None, 0),
        ("PUT", HOST, b"", 0),
    ],
)
def test_the_head_is_what_h11_writes(
    method: str, headers: list[tuple[str, str]], body: bytes | None, length: int | None
) -> None:
    """Plain or not, the head is h11's bytes; a body (or a POST) gets its Content-Length."""
    request = WireRequest(method, "/x", headers, body, len(body or b""))
    assert request.wire_head() == _h11_bytes(method, headers, length)


def test_the_head_is_made_once_and_kept() -> None:
    """A request sent again goes out with the very bytes it was first written with."""
    request = WireRequest("POST", "/x", HOST, b"abc", 3)
    assert request.wire_head() is request.wire_head()


def test_a_head_h11_refuses_is_a_protocol_error() -> None:
    """No Host field: h11 refuses the request, and so does the wire."""
    with pytest.raises(ProtocolError):
        WireRequest("POST", "/x", [], b"a", 1).wire_head()


@pytest.mark.parametrize(
    ("method", "headers", "body", "plain"),
    [
        ("GET", HOST, None, True),
        ("HEAD", HOST, None, True),
        ("GET", [*HOST, ("Connection", "close")], None, False),
        ("GET", [*HOST, ("expect", "100-continue")], None, False),
        ("GET", HOST, b"x", False),
        ("POST", HOST, None, False),
    ],
)
def test_plain_requests_are_those_the_fast_path_may_read_answers_to(
    method: str, headers: list[tuple[str, str]], body: bytes | None, plain: bool
) -> None:
    """Only a bodiless GET/HEAD with no framing or hop-by-hop field is plain."""
    assert WireRequest(method, "/x", headers, body, len(body or b"")).plain is plain


def test_the_reader_sees_no_framing_fields() -> None:
    """The request handed to the reading state machine has no field about the request body."""
    request = WireRequest("POST", "/x", [*HOST, ("Transfer-Encoding", "chunked")], b"a", 1)
    names = [name for name, _ in request.h11_request(framing=False).headers]
    assert b"content-length" not in names and b"transfer-encoding" not in names
    assert request.h11_request(framing=False) is request.h11_request(framing=False)


def test_replace_keeps_the_body_and_makes_a_new_head() -> None:
    """A copy with other fields keeps method, target and body, and gets its own head."""
    request = WireRequest("POST", "/x", HOST, b"abc", 3)
    head = request.wire_head()
    again = request.replace(headers=[*HOST, ("If-None-Match", '"e"')])
    assert (again.method, again.target, again.body, again.body_length) == ("POST", "/x", b"abc", 3)
    assert again.wire_head() != head and b"If-None-Match" in again.wire_head()


def test_file_length_counts_what_is_left_to_read() -> None:
    """An open file's Content-Length is what remains from its current position."""
    with tempfile.TemporaryFile() as file:
        file.write(b"0123456789")
        file.seek(4)
        assert file_length(file) == 6
        file.seek(0, os.SEEK_END)
        assert file_length(file) == 0
