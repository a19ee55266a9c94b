"""A minimal ASGI static-file app, so uvicorn serves the same files as ours.

The folder comes from the ``BENCH_WWW_ROOT`` environment variable. Each GET or HEAD opens and
stats the file and answers with the same header fields our server sends (Content-Type,
Content-Length, Last-Modified, ETag). The file is read on the event loop itself (from the page
cache, in 256 KiB pieces) rather than in a thread as frameworks do: that is the fastest a plain
ASGI app can be, so uvicorn is measured at its best.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

ROOT = os.path.realpath(os.environ.get("BENCH_WWW_ROOT", "."))
CHUNK = 256 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def resolve(path: str) -> str | None:
    """The file under ROOT that a request path names, or None if it falls outside or is absent."""
    clean = posixpath.normpath("/" + unquote(path)).lstrip("/")
    full = os.path.realpath(os.path.join(ROOT, clean))
    if full != ROOT and not full.startswith(ROOT + os.sep):
        return None
    return full if os.path.isfile(full) else None


async def _plain(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve GET and HEAD of files under ROOT; 404 for anything missing, 405 for other methods."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method = scope["method"]
    if method not in ("GET", "HEAD"):
        await _plain(send, 405, b"")
        return
    path = resolve(scope["path"])
    if path is None:
        await _plain(send, 404, b"not found\n")
        return
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(st.st_size).encode()),
            (b"last-modified", formatdate(st.st_mtime, usegmt=True).encode()),
            (b"etag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        block = handle.read(CHUNK)
        while True:
            following = handle.read(CHUNK) if len(block) == CHUNK else b""
            await send({"type": "http.response.body", "body": block, "more_body": bool(following)})
            if not following:
                return
            block = following
