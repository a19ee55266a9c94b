"""The exceptions webclient raises, one tree under :class:`WebClientError`.

Rules: OS, socket, h11 and sqlite3 errors never leave the package raw; they are wrapped at the
boundary where they happen (``raise ... from exc``) so callers catch one family and the original
is kept as ``__cause__``. Every message is one sentence a user can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WebClientError(Exception):
    """Base of every error webclient raises on purpose."""


class ClientConfigError(WebClientError, ValueError):
    """A setting is out of range or of the wrong kind."""


class InvalidURL(WebClientError, ValueError):
    """A URL the client cannot fetch (not http://, no host, bad port)."""


@dataclass(frozen=True, slots=True)
class LineError:
    """One invalid line of a command file."""

    line: int
    message: str


class CommandFileError(WebClientError):
    """A command file could not be read, or has invalid lines (all of them are listed)."""

    def __init__(self, filename: str, errors: Sequence[LineError] = (), message: str = "") -> None:
        self.filename = filename
        self.errors = tuple(errors)
        lines = [f"{filename}:{e.line}: {e.message}" for e in self.errors]
        super().__init__(message or "\n".join(lines))


class TransportError(WebClientError):
    """The exchange with the server failed below HTTP: connecting, sending or receiving."""


class ResolveError(TransportError):
    """The host name could not be resolved (DNS failure, unknown host)."""


class ConnectionRefused(TransportError):
    """Nothing listens on the host and port."""


class ConnectTimeout(TransportError):
    """The server did not accept the connection in time."""


class ReadTimeout(TransportError):
    """The server accepted the request but did not answer in time."""


class ResponseTimeout(ReadTimeout):
    """The response took longer than ``ClientConfig.max_time``, or came slower than the minimum
    rate (a drip-fed body)."""


class ConnectionClosed(TransportError):
    """The server closed the connection before the response was complete."""


class CertificateError(WebClientError):
    """The server's TLS certificate did not verify (untrusted, expired, another host's name).

    Not a :class:`TransportError`: it is neither retried nor answered from the cache."""


class RedirectError(WebClientError):
    """Redirects went in a loop or past ``ClientConfig.max_redirects``."""


class ProtocolError(WebClientError):
    """The server sent something that is not valid HTTP/1.x, or a response head too large."""


class ResponseTooLarge(WebClientError):
    """The response body is larger than ``ClientConfig.max_body_size``; it was not kept."""


class NotCached(WebClientError):
    """Offline (``ClientConfig.offline``), the request has no stored response it may be
    answered with; nothing was sent."""


class CacheError(WebClientError):
    """The cache folder cannot be used (permissions, disk full); the request may go on uncached."""


class LocalFileError(WebClientError):
    """A local file to upload or to write cannot be read or written."""


class UnsafePathError(LocalFileError):
    """A command's file name would land outside the output folder."""
