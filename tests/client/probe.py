"""A raw HTTP/1.1 test server that shows how requests arrive: which came together in a batch.

It gathers complete requests until no more bytes come within ``window`` seconds, records the
batch, then answers every request of it in order. ``close_after`` makes it drop its first connection
after that many responses without saying so, as a server whose keep-alive timer fired would.
``first_only`` answers only the first request of each batch and ignores the rest, as a server
that mishandles pipelining (reads one request, drops what came with it) would.
"""

from __future__ import annotations

import selectors
import socket

from .conftest import ListeningThreads


class Probe(ListeningThreads):
    """The test server of the module docstring; connections are served one after another."""

    def __init__(
        self,
        window: float = 0.25,
        close_after: int | None = None,
        close_all: bool = False,
        first_only: bool = False,
    ) -> None:
        super().__init__()
        self.window = window
        self.close_after = close_after
        #: Apply ``close_after`` to every connection, not just the first.
        self.close_all = close_all
        #: Answer the first request of each batch only; the others are never answered.
        self.first_only = first_only
        #: Per connection, the batches of request lines as they arrived together.
        self.batches: list[list[list[str]]] = []

    def _accepted(self, conn: socket.socket) -> None:
        with conn:
            self._connection(conn)

    def _connection(self, conn: socket.socket) -> None:
        batches: list[list[str]] = []
        self.batches.append(batches)
        buffer = b""
        pending: list[str] = []
        answered = 0
        selector = selectors.DefaultSelector()
        selector.register(conn, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if selector.select(self.window if pending else 5.0):
                    data = conn.recv(65536)
                    if not data:
                        return
                    new, buffer = _split_requests(buffer + data)
                    pending += new
                    continue
                if not pending:
                    return
                batches.append(pending)
                for line in pending[:1] if self.first_only else pending:
                    first = len(self.batches) == 1 or self.close_all
                    if first and self.close_after is not None and answered >= self.close_after:
                        return
                    body = line.encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    answered += 1
                pending = []
        finally:
            selector.close()


def _split_requests(buffer: bytes) -> tuple[list[str], bytes]:
    """The request lines of the complete requests at the start of ``buffer``, and the rest."""
    lines: list[str] = []
    while b"\r\n\r\n" in buffer:
        head, rest = buffer.split(b"\r\n\r\n", 1)
        length = 0
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            break
        lines.append(head.split(b"\r\n")[0].decode("latin-1"))
        buffer = rest[length:]
    return lines, buffer
