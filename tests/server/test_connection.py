"""The connection's own rules: output is flushed whole or the connection is broken."""

from __future__ import annotations

import socket

import pytest

from webserver._connection import Connection


def test_send_timeout_breaks_the_connection() -> None:
    """When the client stops reading, a flush that times out raises instead of silently
    dropping the unsent part (which would corrupt the response stream)."""
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        conn = Connection(server_end, ("127.0.0.1", 1))
        conn.set_timeouts(0.2)
        conn._out.append(b"x" * (32 * 1024 * 1024))  # queued, as a long pipelined burst would be
        with pytest.raises(TimeoutError):
            conn.flush()  # far more than the socket buffers hold; the client never reads
