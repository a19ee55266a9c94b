"""A minimal WSGI static-file app, so waitress, cheroot and gunicorn serve the same files as ours.

The folder comes from the ``BENCH_WWW_ROOT`` environment variable. Each GET or HEAD opens and
stats the file and answers with the same header fields our server sends (Content-Type,
Content-Length, Last-Modified, ETag); the body goes through ``wsgi.file_wrapper`` when the server
offers one (gunicorn and waitress do; gunicorn's uses ``sendfile``), else in 256 KiB reads.
There is no conditional-request or range handling: the peers get the cheapest possible app.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate
from typing import Any, BinaryIO
from urllib.parse import unquote

ROOT = os.path.realpath(os.environ.get("BENCH_WWW_ROOT", "."))
CHUNK = 256 * 1024

StartResponse = Callable[..., Any]


def resolve(path_info: str) -> str | None:
    """The file under ROOT that a request path names, or None if it falls outside or is absent."""
    clean = posixpath.normpath("/" + unquote(path_info)).lstrip("/")
    full = os.path.realpath(os.path.join(ROOT, clean))
    if full != ROOT and not full.startswith(ROOT + os.sep):
        return None
    return full if os.path.isfile(full) else None


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(CHUNK):
            yield block


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serve GET and HEAD of files under ROOT; 404 for anything missing, 405 for other methods."""
    method = environ["REQUEST_METHOD"]
    if method not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Content-Length", "0"), ("Allow", "GET, HEAD")])
        return [b""]
    path = resolve(environ.get("PATH_INFO", "/"))
    if path is None:
        body = b"not found\n"
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]
    handle = open(path, "rb")  # noqa: SIM115 - closed by the server through the iterable
    st = os.fstat(handle.fileno())
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(st.st_size)),
            ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
            ("ETag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"'),
        ],
    )
    if method == "HEAD":
        handle.close()
        return [b""]
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(handle, CHUNK)  # type: ignore[no-any-return]
    return _chunks(handle)
