"""Serving files from a folder: GET and HEAD, with validators and conditional requests.

Rules: a path resolves inside the root or is 404 (see :mod:`webserver.paths`); a folder serves its
``index.html`` (a folder asked for without its trailing slash is redirected to it, so relative links
work); upload temporaries are never served; every 200 carries Content-Type, Content-Length,
Last-Modified and a strong ETag; a matching conditional request gets 304 with no body.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path
from typing import Self
from urllib.parse import quote

from .conditional import make_etag, not_modified
from .config import ServerConfig
from .errors import NotFound
from .handler import Handler
from .httpdate import format_http_date
from .paths import TEMP_PREFIX, file_segments, resolve_inside
from .request import Request
from .response import Response


class StaticFiles(Handler):
    """GET and HEAD of the files under ``root``.

    Subclasses may override :meth:`content_type` or :meth:`extra_headers` to change what is sent
    with each file.
    """

    def __init__(self, root: str | os.PathLike[str], *, index: str = "index.html") -> None:
        self.root = Path(os.path.realpath(root))
        self.index = index

    @classmethod
    def from_config(cls, config: ServerConfig) -> Self:
        return cls(config.root)

    def content_type(self, path: Path) -> str:
        """The Content-Type for ``path``: by its suffix, text in UTF-8, else octet-stream."""
        guessed, encoding = mimetypes.guess_type(path.name, strict=False)
        if guessed is None or encoding is not None:
            # A .gz file is a gzip file to the client; sending Content-Encoding would unpack it.
            return "application/octet-stream"
        if guessed.startswith("text/") or guessed in ("application/javascript", "image/svg+xml"):
            return f"{guessed}; charset=utf-8"
        return guessed

    def extra_headers(self, path: Path, st: os.stat_result) -> list[tuple[str, str]]:
        """Further header fields for a file response; none by default."""
        return []

    def get(self, request: Request) -> Response:
        segments = file_segments(request.route_path)
        if any(s.startswith(TEMP_PREFIX) for s in segments):
            raise NotFound()
        path = resolve_inside(self.root, segments)
        try:
            # O_NONBLOCK: opening a FIFO someone left in the root must not hang a worker.
            file = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb")
        except IsADirectoryError:
            return self._folder(request, path)
        except OSError:
            # Missing, not readable, or a path through a file: all look the same from outside.
            raise NotFound() from None
        try:
            st = os.fstat(file.fileno())
            if stat.S_ISDIR(st.st_mode):
                file.close()
                return self._folder(request, path)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound()
            etag = make_etag(st)
            headers = [
                ("Last-Modified", format_http_date(st.st_mtime)),
                ("ETag", etag),
                *self.extra_headers(path, st),
            ]
            if not_modified(request.headers, etag, st.st_mtime):
                file.close()
                return Response(304, headers)
            headers.insert(0, ("Content-Type", self.content_type(path)))
            if request.method == "HEAD":
                file.close()
                return Response(200, [*headers, ("Content-Length", str(st.st_size))])
            return Response(200, headers, file, st.st_size)
        except BaseException:
            file.close()
            raise

    def _folder(self, request: Request, path: Path) -> Response:
        if not request.path.endswith("/"):
            location = quote(request.path + "/", safe="/")
            if request.query:
                location += "?" + request.query
            return Response(301, [("Location", location), ("Content-Length", "0")], b"")
        index = path / self.index
        if not index.is_file():
            raise NotFound()
        sub = request.route_path.rstrip("/") + "/" + self.index
        request.route_path = sub
        return self.get(request)
