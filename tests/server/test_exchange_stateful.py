"""A hypothesis state machine driving connections with valid, invalid and pipelined requests.

The model is simple: every valid request gets its answer, in order; an invalid one gets a 4xx and
the connection closes, with nothing after it answered. Any other behaviour is a failure, and so
is a server that stops answering a fresh connection.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from webserver._connection import PARKED
from webserver.testing import running_server

from .wire import WireReader, send_in_pieces

FILES = {"a.txt": b"alpha\n", "b.bin": bytes(range(256)) * 10}
VALID = [
    (b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 200, FILES["a.txt"]),
    (b"GET /b.bin HTTP/1.1\r\nHost: x\r\n\r\n", 200, FILES["b.bin"]),
    (b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n", 404, None),
    (b"HEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 200, b""),
    (b"GET /a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n", 304, b""),
    (b"GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n", 206, b"lp"),
    (b"GET /.a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 404, None),
    (b"OPTIONS /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 204, b""),
    (b"POST /up/n.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 201, None),
    (
        b"POST /up/c.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nz\r\n0\r\n\r\n",
        201,
        None,
    ),
    (b"DELETE /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 405, None),
    (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
]
INVALID = [
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: user@evil\r\n\r\n", 400),
    (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    (
        b"POST /up/s.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1;a=b\r\rz\r\n0\r\n\r\n",
        400,
    ),
    (
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n",
        400,
    ),
]


#: How a pipelined stream is sent: whole, byte by byte, or cut at random fractions of its length.
Split = str | list[float]
SPLIT: st.SearchStrategy[Split] = st.one_of(
    st.sampled_from(["whole", "bytes"]),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6),
)


def _cuts(stream: bytes, split: Split) -> list[int]:
    if split == "whole":
        return []
    if split == "bytes":
        return list(range(1, len(stream)))
    return [int(f * len(stream)) for f in split]


class ConnectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        root = Path(self.folder.name)
        for name, data in FILES.items():
            (root / name).write_bytes(data)
        self.context = running_server(root=root, access_log=False)
        self.server = self.context.__enter__()
        self.sock: socket.socket | None = None
        self.reader: WireReader | None = None

    def _connection(self) -> tuple[socket.socket, WireReader]:
        if self.sock is None:
            self.sock = socket.create_connection(self.server.listen(), timeout=10)
            self.reader = WireReader(self.sock)
        assert self.reader is not None
        return self.sock, self.reader

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None

    def _settle(self) -> None:
        """Wait until no worker runs and every connection is parked, so that the selector
        answers what comes next itself if it can (``Server._answer_here``)."""
        server = self.server
        deadline = time.monotonic() + 10

        def settled() -> bool:
            parked = all(c.owner in PARKED for c in list(server._poller.connections.values()))
            return parked and server._running == server._lingering and not server._ready

        while not settled():
            assert time.monotonic() < deadline, "the server never settled"
            threading.Event().wait(0.002)

    @rule(
        requests=st.lists(st.sampled_from(VALID), min_size=1, max_size=8),
        split=SPLIT,
        idle=st.booleans(),
    )
    def pipeline_valid(
        self, requests: list[tuple[bytes, int, bytes | None]], split: Split, idle: bool
    ) -> None:
        """Valid requests, pipelined (whole, byte by byte or in random pieces), are answered in
        order, also when they reach an idle server whose selector answers cached files."""
        sock, reader = self._connection()
        if idle:
            self._settle()
        stream = b"".join(raw for raw, _, _ in requests)
        send_in_pieces(sock, stream, _cuts(stream, split))
        for raw, status, body in requests:
            response = reader.read(head_only=raw.startswith(b"HEAD"))
            assert response.status == status
            if body is not None:
                assert response.body == body

    @rule(
        before=st.lists(st.sampled_from(VALID), max_size=3),
        bad=st.sampled_from(INVALID),
        after=st.lists(st.sampled_from(VALID), max_size=3),
        split=SPLIT,
    )
    def pipeline_with_invalid(
        self,
        before: list[tuple[bytes, int, bytes | None]],
        bad: tuple[bytes, int],
        after: list[tuple[bytes, int, bytes | None]],
        split: Split,
    ) -> None:
        """Requests before an invalid one are answered; it gets its 4xx/5xx; nothing after it;
        however the stream is split."""
        sock, reader = self._connection()
        stream = b"".join(r for r, _, _ in before) + bad[0] + b"".join(r for r, _, _ in after)
        send_in_pieces(sock, stream, _cuts(stream, split))
        for raw, status, _ in before:
            assert reader.read(head_only=raw.startswith(b"HEAD")).status == status
        response = reader.read()
        assert response.status == bad[1]
        assert response.header("Connection") == "close"
        with contextlib.suppress(ConnectionResetError):
            assert reader.at_eof()
        self._drop()

    @precondition(lambda self: self.sock is not None)
    @rule()
    def client_closes(self) -> None:
        """The client may hang up between requests at any time."""
        self._drop()

    @rule(cut=st.integers(min_value=1, max_value=40))
    def abandon_midway(self, cut: int) -> None:
        """A request cut off midway and abandoned does not disturb the next connection."""
        sock, _ = self._connection()
        sock.sendall(VALID[4][0][:cut])
        self._drop()

    def teardown(self) -> None:
        # A fresh connection is still answered after whatever happened.
        self._drop()
        sock, reader = self._connection()
        sock.sendall(VALID[0][0])
        assert reader.read().status == 200
        self._drop()
        self.context.__exit__(None, None, None)
        self.folder.cleanup()


# Examples come from the active profile (default or long); each runs a dozen steps.
ConnectionMachine.TestCase.settings = settings(stateful_step_count=12)
test_connection_state_machine = ConnectionMachine.TestCase
