"""The client connection: writes requests, reads their responses with one h11 state machine."""

from __future__ import annotations

from webclient._connection import Connection, WireRequest

from .conftest import BadServer

# -- responses that arrive together -------------------------------------------------------------


def test_pipelined_responses_in_one_buffer() -> None:
    """Several responses arriving in one read are split at their Content-Length, and the
    connection tells that the next one is already there (so the lane reads it before writing)."""
    reply = b"".join(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in (b"a", b"bc", b"")
    )
    with BadServer(reply, hang=True) as server:
        conn = Connection("127.0.0.1", server.port, timeout=2)
        try:
            request = WireRequest("GET", "/x", [("Host", "h")])
            bodies = []
            for _ in range(3):
                conn.send(request)
            for _ in range(3):
                head = conn.receive_head(request)
                assert head.status == 200
                bodies.append(b"".join(conn.iter_body()))
                assert conn.reusable
                assert conn.has_buffered() is (len(bodies) < 3)
            assert bodies == [b"a", b"bc", b""]
            assert conn.answered == 3
        finally:
            conn.close()
