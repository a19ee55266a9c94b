"""The extension point: handler classes with one method per HTTP method.

A subclass defines any of ``get``, ``head``, ``post``, ``put``, ``delete``, ``patch`` and
``options``; each takes a :class:`~webserver.Request` and returns a :class:`~webserver.Response`
(or raises :class:`~webserver.HTTPError`). A method the class does not define is answered with
``405 Method Not Allowed`` and an ``Allow`` header listing the ones it does; ``head`` falls back to
``get`` (the connection drops the body).

One instance serves every request on its route, from several worker threads at once: keep
per-request state in local variables, not on ``self``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from .config import ServerConfig
    from .request import Request
    from .response import Response

#: Methods a handler may implement. Anything else is ``501 Not Implemented`` for the whole server.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

HandlerMethod = Callable[["Request"], "Response"]


class Handler:
    """Base class of request handlers; see the module docstring for what a subclass implements."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> Self:
        """The instance the server registers when given the class; override to read settings."""
        return cls()

    def spool_folder(self) -> str | None:
        """Where a request body too large for memory is kept until this handler runs (None: the
        system's temporary folder). A handler that stores bodies names a folder on the file
        system it stores them in, so it can link the file into place instead of copying it
        (see :class:`~webserver.request.RequestBody`, ``spooled_path``)."""
        return None

    def method(self, name: str) -> HandlerMethod | None:
        """The bound method answering HTTP method ``name``, or ``None``."""
        found = getattr(self, name.lower(), None) if name in KNOWN_METHODS else None
        if found is None and name == "HEAD":
            found = getattr(self, "get", None)
        return found if callable(found) else None

    def allowed_methods(self) -> frozenset[str]:
        """The HTTP methods this handler answers, for ``Allow``."""
        return frozenset(m for m in KNOWN_METHODS if self.method(m) is not None)
