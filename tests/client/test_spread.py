"""Tests of webclient/_spread.py: one origin's requests over several keep-alive connections."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from webclient import Client, ClientConfig, Request, Response
from webclient._spread import spread
from webserver import Request as WebRequest
from webserver import Response as WebResponse
from webserver import Server

from .conftest import CLIENT_TIMEOUT, Origin

pytestmark = pytest.mark.timeout(30)


def _spread(items: list[tuple[str, str]], connections: int) -> list[list[tuple[str, str]]]:
    return spread(items, connections, method=lambda i: i[0], key=lambda i: i[1])


def test_requests_are_dealt_in_turn() -> None:
    """GETs go to the connections in turn, so the first ones finish first everywhere."""
    items = [("GET", f"/{n}") for n in range(7)]
    assert [[u for _, u in run] for run in _spread(items, 3)] == [
        ["/0", "/3", "/6"],
        ["/1", "/4"],
        ["/2", "/5"],
    ]


def test_a_repeated_url_stays_on_its_first_connection() -> None:
    """A URL asked again goes where it went first (the cache that run fills can answer it)."""
    items = [("GET", "/a"), ("GET", "/b"), ("GET", "/a"), ("HEAD", "/c")]
    assert _spread(items, 2) == [[("GET", "/a"), ("GET", "/a"), ("HEAD", "/c")], [("GET", "/b")]]


def test_other_methods_keep_one_connection() -> None:
    """A POST among the requests keeps them all on one connection, in order."""
    items = [("GET", "/a"), ("POST", "/b"), ("GET", "/c")]
    assert _spread(items, 4) == [items]


def test_no_more_connections_than_requests() -> None:
    """Two requests never open four connections; nothing gives no run."""
    assert len(_spread([("GET", "/a"), ("GET", "/b")], 4)) == 2
    assert _spread([], 4) == []


def test_a_batch_uses_several_connections(origin: tuple[Server, Origin], tmp_path: Path) -> None:
    """Eight GETs with connections=4 are in flight on four connections at once (the first four
    answers wait until four requests are being served), each answered correctly."""
    server, handler = origin
    together = threading.Barrier(4)

    def answer(body: bytes) -> Callable[[WebRequest], WebResponse]:
        def step(request: WebRequest) -> WebResponse:
            if int(body) < 4:
                together.wait(CLIENT_TIMEOUT)
            return WebResponse(200, [], body)

        return step

    for n in range(8):
        handler.script(f"/{n}", answer(str(n).encode()))
    config = ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT, connections=4, pipeline=4)
    with Client(config) as client:
        results = client.request_all([Request("GET", f"{server.url}{n}") for n in range(8)])
        assert client.connections_opened == 4
    assert [r.body for r in results if isinstance(r, Response)] == [
        str(n).encode() for n in range(8)
    ]
    assert len(handler.connections) == 4


def test_a_batch_with_a_post_uses_one_connection(
    origin: tuple[Server, Origin], tmp_path: Path
) -> None:
    """With a POST among them, the requests keep their order on one connection."""
    server, handler = origin
    handler.script("/a", (200, [], b"a"))
    handler.script("/up", (201, [], b""))
    requests = [
        Request("GET", server.url + "a"),
        Request("POST", server.url + "up", body=b"x"),
        Request("GET", server.url + "a"),
    ]
    with Client(ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT, connections=4)) as client:
        client.request_all(requests)
        assert client.connections_opened == 1
    assert [s.method for s in handler.seen] == ["GET", "POST", "GET"]
