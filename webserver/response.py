"""What a handler returns.

A body is ``bytes``, an iterable of ``bytes`` (streamed, chunked to HTTP/1.1 clients), or an open
binary file, which the connection sends with ``socket.sendfile`` so the bytes never pass through
Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO

Body = bytes | Iterable[bytes] | BinaryIO


@dataclass(slots=True, eq=False)
class Response:
    """Status, header fields and body of one response.

    ``Content-Length`` is added for ``bytes`` and file bodies; ``Date`` and ``Server`` are added by
    the connection. For a file body, ``file_length`` bytes are sent starting at the file's current
    position, and the connection closes the file when done.
    """

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Body = b""
    file_length: int | None = None

    @classmethod
    def text(
        cls,
        text: str,
        status: int = 200,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """A UTF-8 text body."""
        return cls(status, [("Content-Type", content_type), *headers], text.encode("utf-8"))

    @classmethod
    def html(cls, html: str, status: int = 200) -> Response:
        return cls.text(html, status, content_type="text/html; charset=utf-8")

    @classmethod
    def file(
        cls,
        file: BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        status: int = 200,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """The rest of an open binary file, sent zero-copy; the response owns (and closes) it."""
        size = os.fstat(file.fileno()).st_size - file.tell()
        return cls(status, [("Content-Type", content_type), *headers], file, max(size, 0))

    @classmethod
    def error(
        cls, status: int, detail: str = "", *, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """A short plain-text error page: the status line, then the detail if any."""
        phrase = HTTPStatus(status).phrase
        text = f"{status} {phrase}\n" + (f"{detail}\n" if detail else "")
        return cls.text(text, status, headers=headers)

    def header(self, name: str) -> str | None:
        """The first value of a header field set on this response."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def close_body(self) -> None:
        """Release a file or generator body that will not be sent."""
        close = getattr(self.body, "close", None)
        if callable(close):
            close()
