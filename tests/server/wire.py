"""A minimal HTTP/1.1 response reader for raw-socket tests, independent of the server's code.

It reads exactly one response off a socket (Content-Length, chunked, or read-to-close bodies),
so tests can send hand-written bytes -- pipelines, broken framing -- and check each answer.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class WireResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


class WireReader:
    """Reads successive responses from one socket, keeping bytes that belong to the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError("connection closed inside a response head")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise EOFError("connection closed inside a response body")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read(self, *, head_only: bool = False) -> WireResponse:
        """The next response; ``head_only`` for answers to HEAD (no body whatever the headers)."""
        status_line = self._line().decode("latin-1")
        version, status, reason = ([*status_line.split(" ", 2), ""])[:3]
        response = WireResponse(version, int(status), reason)
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            response.headers.append((name.strip(), value.strip()))
        if head_only or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        length = response.header("content-length")
        if response.header("transfer-encoding") == "chunked":
            parts = []
            while size := int(self._line().split(b";")[0], 16):
                parts.append(self._exactly(size))
                self._line()
            while self._line():
                pass
            response.body = b"".join(parts)
        elif length is not None:
            response.body = self._exactly(int(length))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def at_eof(self) -> bool:
        """True if the server has closed the connection and nothing is left unread."""
        return not self.buffer and not self._fill()


def send_in_pieces(sock: socket.socket, data: bytes, cuts: Iterable[int]) -> None:
    """Send ``data`` cut at the offsets ``cuts`` (``[]``: whole; ``range(1, len(data))``: byte by
    byte), each piece its own segment, so the server reads the stream as split; stops quietly
    once the server has closed (a request it refused may be followed by bytes it never reads)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = 0
    try:
        for cut in [*sorted(set(cuts)), len(data)]:
            if start < cut <= len(data):
                sock.sendall(data[start:cut])
                start = cut
    except (BrokenPipeError, ConnectionResetError):
        return


def split_ways(data: bytes, random_cuts: Iterable[int]) -> list[list[int]]:
    """The cuts that send ``data`` whole, byte by byte, and at ``random_cuts``."""
    return [[], list(range(1, len(data))), sorted(set(random_cuts))]
