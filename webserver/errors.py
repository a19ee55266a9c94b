"""The server's error tree.

Errors say who is at fault and what the client is told::

    WebServerError
    ├── ConfigError            a bad setting; raised before anything listens
    ├── HTTPError              a request we answer with a 4xx/5xx status
    │   ├── BadRequest         400: the request is malformed
    │   │   └── MultipartError 400: a malformed multipart/form-data body (multipart.py)
    │   ├── NotFound           404: nothing at that path (also: outside the root)
    │   ├── PayloadTooLarge    413: an upload over the configured limit
    │   ├── RangeNotSatisfiable 416: no requested byte range overlaps the file
    │   └── RequestTimeout     408: the client was too slow to send its body
    └── ClientDisconnected     the peer vanished mid-request; nobody is left to answer

Handlers raise these (``NotFound("no such report")``, ``HTTPError("...", status=409)``); the
connection turns them into responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus


class WebServerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(WebServerError, ValueError):
    """A configuration value is out of range or inconsistent."""


class HTTPError(WebServerError):
    """Abort the current request with ``status``; ``detail`` becomes the short body."""

    status: int = 500

    def __init__(
        self,
        detail: str = "",
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        if status is not None:
            self.status = status
        self.detail = detail
        self.headers = tuple(headers)
        #: Close the connection after answering (e.g. when the body was not read).
        self.close = close
        super().__init__(f"{self.status} {HTTPStatus(self.status).phrase}: {detail}".rstrip(": "))


class BadRequest(HTTPError):
    status = 400


class NotFound(HTTPError):
    status = 404


class PayloadTooLarge(HTTPError):
    status = 413


class RangeNotSatisfiable(HTTPError):
    """No range of a Range header overlaps the representation (RFC 9110 §15.5.17)."""

    status = 416

    def __init__(self, size: int) -> None:
        #: The representation's length, sent as ``Content-Range: bytes */size``.
        self.size = size
        super().__init__(headers=[("Content-Range", f"bytes */{size}")])


class RequestTimeout(HTTPError):
    status = 408


class ClientDisconnected(WebServerError):
    """The client closed or reset the connection before the request was complete."""
