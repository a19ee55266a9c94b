"""Tests of webclient/_pool.py: reuse of idle connections and detection of dropped ones."""

from __future__ import annotations

import pytest

from webclient import Client, ClientConfig
from webserver import Server
from webserver.testing import running_server

from .conftest import CLIENT_TIMEOUT, Origin

pytestmark = pytest.mark.timeout(20)


def test_idle_connection_is_reused_between_calls(origin: tuple[Server, Origin]) -> None:
    """Separate get() calls to one origin use one connection."""
    server, handler = origin
    handler.script("/a", (200, [], b"a"))
    with Client(ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT)) as client:
        for _ in range(5):
            assert client.get(server.url + "a").body == b"a"
        assert client.connections_opened == 1
    assert len(handler.connections) == 1


def test_connection_closed_by_the_server_is_replaced(www: object, tmp_path: object) -> None:
    """After the server stops and a new one takes the port, the stale connection is dropped."""
    with Client(ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT)) as client:
        with running_server(root=www, access_log=False) as first:
            port = first.listen()[1]
            assert client.get(first.url + "hello.txt").ok
        try:
            second_cm = running_server(root=www, access_log=False, port=port)
            second = second_cm.__enter__()
        except OSError:
            pytest.skip("the port was taken by another process meanwhile")
        try:
            assert client.get(second.url + "hello.txt").body == b"hello, world\n"
        finally:
            second_cm.__exit__(None, None, None)
        assert client.connections_opened == 2


def test_pipelining_is_stopped_per_origin() -> None:
    """An origin marked unpipelined stays so; other origins and schemes are untouched."""
    from webclient._pool import ConnectionPool

    def connect(host: str, port: int, scheme: str) -> object:
        raise AssertionError("no connection is opened")

    pool = ConnectionPool(connect)  # type: ignore[arg-type]
    assert pool.may_pipeline("h", 80)
    pool.stop_pipelining("h", 80)
    assert not pool.may_pipeline("h", 80)
    assert pool.may_pipeline("h", 81)
    assert pool.may_pipeline("h", 80, "https")
    assert not pool.may_pipeline("h", 80, "http")
