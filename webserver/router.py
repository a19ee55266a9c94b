"""Maps request paths to handlers, then the request method to a handler method.

Rules, in order: an exact route beats a prefix route; a longer prefix beats a shorter one; a
prefix ``/static`` matches ``/static`` and ``/static/...`` but not ``/staticky``. Several handlers
may share one route (the default ``/`` route holds both the static-file and the upload handler):
the first that implements the method answers. Unknown methods get 501, a method no handler on
the route implements gets 405 with ``Allow``, ``OPTIONS`` without a handler method gets 204 with
``Allow``.
"""

from __future__ import annotations

from .errors import HTTPError, NotFound
from .handler import KNOWN_METHODS, Handler
from .request import Request
from .response import Response


class Router:
    """A registry of routes; built before serving and only read afterwards."""

    def __init__(self) -> None:
        self._exact: dict[str, list[Handler]] = {}
        self._prefixes: list[tuple[str, list[Handler]]] = []

    def add(self, path: str, handler: Handler, *, prefix: bool = False) -> None:
        """Register ``handler`` at ``path``; handlers added earlier to a route answer first."""
        if not path.startswith("/"):
            raise ValueError(f"route paths start with '/': {path!r}")
        if not prefix:
            self._exact.setdefault(path, []).append(handler)
            return
        path = path.rstrip("/") or "/"
        for existing, handlers in self._prefixes:
            if existing == path:
                handlers.append(handler)
                return
        self._prefixes.append((path, [handler]))
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    def match(self, path: str) -> tuple[list[Handler], str] | None:
        """The handlers for ``path`` and the part of the path below the route."""
        handlers = self._exact.get(path)
        if handlers is not None:
            return handlers, path
        for route, handlers in self._prefixes:
            if route == "/":
                return handlers, path
            if path == route or path.startswith(route + "/"):
                return handlers, path[len(route) :] or "/"
        return None

    def dispatch(self, request: Request) -> Response:
        """Answer ``request`` from the matching handler, or with the status the rules above give."""
        if request.method not in KNOWN_METHODS:
            raise HTTPError(f"method {request.method} is not supported", status=501)
        found = self.match(request.path)
        if found is None:
            raise NotFound()
        handlers, request.route_path = found
        for handler in handlers:
            method = handler.method(request.method)
            if method is not None:
                return method(request)
        allow = ", ".join(
            sorted(set().union(*(h.allowed_methods() for h in handlers)) | {"OPTIONS"})
        )
        if request.method == "OPTIONS":
            return Response(204, [("Allow", allow)])
        raise HTTPError(
            f"{request.method} is not allowed here", status=405, headers=[("Allow", allow)]
        )
