"""What a handler sees of one request.

The body has arrived whole before the handler runs (in memory when small, else in a private
temporary file), and is read as a stream: a handler that stores a 1 GiB upload never holds more
than one read's worth of it in memory, and never waits on the client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .headers import Headers


class RequestBody:
    """The request body, read in chunks as they arrive.

    ``read_chunk`` is supplied by the connection: it returns the next piece of the body, ``b""`` at
    its end. ``spooled_path`` names the private (0600) temporary file holding the whole body when
    it was too large for memory and the handler named a folder for it
    (:meth:`~webserver.Handler.spool_folder`), else None: such a handler may link that file into
    place (``os.link``) instead of copying it. The server removes that name once the response
    has been written.
    """

    __slots__ = ("_buffer", "_done", "_read_chunk", "length", "received", "spooled_path")

    def __init__(
        self,
        read_chunk: Callable[[], bytes],
        length: int | None,
        *,
        spooled_path: str | None = None,
    ) -> None:
        self._read_chunk = read_chunk
        self.spooled_path = spooled_path
        self._buffer = b""
        self._done = False
        #: The declared ``Content-Length``, or ``None`` for a chunked body.
        self.length = length
        #: Bytes taken from the connection so far.
        self.received = 0

    @classmethod
    def empty(cls) -> RequestBody:
        body = cls(lambda: b"", 0)
        body._done = True
        return body

    @property
    def done(self) -> bool:
        """True once the whole body has been taken from the connection."""
        return self._done and not self._buffer

    def _pull(self) -> bytes:
        if self._done:
            return b""
        chunk = self._read_chunk()
        if not chunk:
            self._done = True
        self.received += len(chunk)
        return chunk

    def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived (any size), or ``b""`` at the end."""
        if self._buffer:
            chunk, self._buffer = self._buffer, b""
            return chunk
        while not self._done:
            chunk = self._pull()
            if chunk:
                return chunk
        return b""

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that remain when negative); ``b""`` at the end."""
        if size < 0:
            return b"".join(self)
        while len(self._buffer) < size and not self._done:
            self._buffer += self._pull()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read_chunk():
            yield chunk


@dataclass(slots=True, eq=False)
class Request:
    """One parsed request. ``path`` is percent-decoded once; ``target`` is exactly as sent."""

    method: str
    target: str
    path: str
    query: str
    headers: Headers
    http_version: str
    client: tuple[str, int]
    body: RequestBody = field(default_factory=RequestBody.empty)
    #: The part of ``path`` below the route it matched (``/a/b`` for ``/files/a/b`` under the
    #: prefix route ``/files``); equal to ``path`` for exact routes.
    route_path: str = ""

    def __post_init__(self) -> None:
        if not self.route_path:
            self.route_path = self.path
