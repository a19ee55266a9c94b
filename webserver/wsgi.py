"""WSGI applications (PEP 3333) served as handlers, on the server's own threads.

Rules: the application is mounted at a prefix, which becomes ``SCRIPT_NAME``; ``PATH_INFO`` is the
rest of the path, percent-decoded once and carried as ISO-8859-1 text as PEP 3333 asks.
``wsgi.input`` reads ``request.body`` on demand and never yields more than ``max_upload`` bytes: a
declared length over it is 413 before the application runs, a chunked body that grows past it is
413 whatever the application answered. ``start_response`` may be called again only with
``exc_info``, and only until the head goes out. The response head goes out when the application's
iterable yields its first non-empty chunk (or ends); what ``write()`` was given comes first in the
body. A ``wsgi.file_wrapper`` over a regular file becomes a file body sent with ``sendfile``; any
other iterable is streamed as it is produced. The iterable's ``close()`` is called once the body
is sent or abandoned, always.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from .config import DEFAULT_MAX_UPLOAD
from .errors import PayloadTooLarge
from .handler import Handler
from .paths import split_target
from .request import Request, RequestBody
from .response import Response

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication, WSGIEnvironment

    from _typeshed import OptExcInfo

#: Fields an application may not set (RFC 9110 §7.6.1): the connection frames the response.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Block size a :class:`FileWrapper` reads in when its file cannot be sent with ``sendfile``.
FILE_BLOCK_SIZE = 64 * 1024


class FileWrapper:
    """``wsgi.file_wrapper``: marks a file the server may send with ``sendfile``.

    Iterating reads it in ``blksize`` blocks, for a file that is not a regular file on disk.
    """

    def __init__(self, filelike: IO[bytes], blksize: int = FILE_BLOCK_SIZE) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        while block := self.filelike.read(self.blksize):
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if callable(close):
            close()


class _Input:
    """``wsgi.input``: the request body as a file, refusing to go past the upload limit."""

    def __init__(self, body: RequestBody, limit: int) -> None:
        self._body = body
        self._limit = limit
        self._buffer = bytearray()
        #: Set once the body went past the limit, even if the application swallowed the 413.
        self.exceeded = False

    def _fill(self) -> bool:
        chunk = self._body.read_chunk()
        if not chunk:
            return False
        if self._body.received > self._limit:
            self.exceeded = True
            raise PayloadTooLarge(f"the body exceeds {self._limit} bytes", close=True)
        self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        want = -1 if size is None else size
        while (want < 0 or len(self._buffer) < want) and self._fill():
            pass
        return self._take(len(self._buffer) if want < 0 else want)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        scanned = 0
        while True:
            newline = self._buffer.find(b"\n", scanned)
            if newline >= 0:
                end = newline + 1
                break
            scanned = len(self._buffer)
            if 0 <= limit <= scanned or not self._fill():
                end = len(self._buffer)
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class _Start:
    """``start_response`` and ``write`` for one request."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []
        #: True once the head is committed: a later ``start_response`` may only re-raise.
        self.committed = False

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        if exc_info is not None and exc_info[1] is not None:
            if self.committed:  # too late to replace the head: let the error end the response
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        self.status = _parse_status(status)
        self.headers = _check_headers(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """The deprecated imperative body: kept, in order, ahead of the returned iterable."""
        if self.status is None:
            raise RuntimeError("write() called before start_response()")
        if not isinstance(data, bytes):
            raise TypeError(f"write() takes bytes, not {type(data).__name__}")
        self.written.append(data)


def _parse_status(status: str) -> int:
    code, space, _ = status.partition(" ")
    if type(status) is not str or not space or len(code) != 3 or not code.isdigit():
        raise ValueError(f"WSGI status must be like '200 OK', not {status!r:.80}")
    return int(code)


def _check_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    checked = []
    for field in headers:
        if type(field) is not tuple or len(field) != 2:
            raise TypeError(f"WSGI header fields are (name, value) tuples, not {field!r:.80}")
        name, value = field
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"WSGI header names and values are str, not {field!r:.80}")
        if name.lower() in HOP_BY_HOP:
            raise ValueError(f"a WSGI application may not set the hop-by-hop field {name!r}")
        checked.append((name, value))
    return checked


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if callable(close):
        close()


class _Body:
    """A streamed response body: the bytes already produced, then the rest of the iterable;
    ``close()`` (called by the connection when done) closes the application's iterable."""

    def __init__(self, first: bytes, rest: Iterator[bytes], result: Iterable[bytes]) -> None:
        self._first = first
        self._rest = rest
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        yield self._first
        for chunk in self._rest:
            if not isinstance(chunk, bytes):
                raise TypeError(f"a WSGI body yields bytes, not {type(chunk).__name__}")
            yield chunk

    def close(self) -> None:
        _close(self._result)


def _split_host(host: str) -> tuple[str, str]:
    """``SERVER_NAME`` and ``SERVER_PORT`` from a Host field (``[::1]:8080``, ``example.org``)."""
    name, port = host, ""
    if host.startswith("["):
        end = host.find("]") + 1
        if end:
            name, port = host[:end], host[end + 1 :] if host[end : end + 1] == ":" else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    return name, port if port.isdigit() else "80"


def _file_length(wrapper: FileWrapper, headers: list[tuple[str, str]]) -> int | None:
    """Bytes to ``sendfile`` from a wrapped regular file, or ``None`` to iterate it instead."""
    try:
        fd = wrapper.filelike.fileno()
        info = os.fstat(fd)
        position = wrapper.filelike.tell()
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    length = max(info.st_size - position, 0)
    for name, value in headers:
        if name.lower() == "content-length" and value.strip().isdigit():
            length = min(length, int(value))
    return length


def _whole_response(result: Iterable[bytes], start: _Start) -> Response | None:
    """A response needing no iteration: a wrapped regular file (sent with ``sendfile``) or a
    list of bytes (one write, with Content-Length instead of chunks); else ``None``."""
    if start.status is None:
        return None
    if isinstance(result, FileWrapper) and not start.written:
        length = _file_length(result, start.headers)
        if length is not None:
            start.committed = True
            return Response(start.status, start.headers, result.filelike, length)
    if type(result) in (list, tuple):
        parts = [*start.written, *result]
        if all(type(part) is bytes for part in parts):
            start.committed = True
            return Response(start.status, start.headers, b"".join(parts))
    return None


class WSGIHandler(Handler):
    """Serve a WSGI application under ``prefix`` (``SCRIPT_NAME``), for every method.

    ``max_upload`` bounds what ``wsgi.input`` delivers; ``multiprocess`` is what
    ``wsgi.multiprocess`` tells the application (true with ``--workers`` above 1).
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        prefix: str = "/",
        max_upload: int = DEFAULT_MAX_UPLOAD,
        multiprocess: bool = False,
        server_address: tuple[str, int] = ("127.0.0.1", 80),
    ) -> None:
        if not prefix.startswith("/"):
            raise ValueError(f"a mount prefix starts with '/': {prefix!r}")
        self.app = app
        self.prefix = prefix.rstrip("/") or "/"
        #: ``SCRIPT_NAME``: the prefix as PEP 3333 text (UTF-8 bytes read as ISO-8859-1).
        self.script_name = "" if self.prefix == "/" else self.prefix.encode().decode("latin-1")
        self.max_upload = max_upload
        self.multiprocess = multiprocess
        self.server_address = server_address

    def get(self, request: Request) -> Response:
        return self(request)

    head = post = put = delete = patch = options = get

    def environ(self, request: Request, stream: _Input) -> WSGIEnvironment:
        """The PEP 3333 ``environ`` for ``request``; the headers become ``HTTP_*`` keys."""
        raw_path, query = split_target(request.target)
        path = unquote_to_bytes(raw_path).decode("latin-1")
        script = self.script_name
        path_info = path[len(script) :] if script and path.startswith(script) else path
        server_name, server_port = self.server_address[0], str(self.server_address[1])
        host_header = request.headers.get("host")
        if host_header:
            server_name, server_port = _split_host(host_header)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": script,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
            "REMOTE_ADDR": request.client[0],
            "REMOTE_PORT": str(request.client[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": stream,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
        }
        for field, value in request.headers:
            if field == "content-type":
                environ["CONTENT_TYPE"] = value
            elif field == "content-length":
                environ["CONTENT_LENGTH"] = value
            elif "_" not in field:  # X_Forwarded_For must not pose as X-Forwarded-For
                key = "HTTP_" + field.upper().replace("-", "_")
                if key in environ:
                    joiner = "; " if key == "HTTP_COOKIE" else ", "
                    value = f"{environ[key]}{joiner}{value}"
                environ[key] = value
        return environ

    def __call__(self, request: Request) -> Response:
        """Run the application for ``request`` and turn what it returns into a Response."""
        declared = request.body.length
        if declared is not None and declared > self.max_upload:
            raise PayloadTooLarge(f"the body exceeds {self.max_upload} bytes", close=True)
        stream = _Input(request.body, self.max_upload)
        start = _Start()
        result = self.app(self.environ(request, stream), start)
        try:
            return self._response(result, start, stream)
        except BaseException:
            _close(result)
            raise

    def _response(self, result: Iterable[bytes], start: _Start, stream: _Input) -> Response:
        if stream.exceeded:
            raise PayloadTooLarge(f"the body exceeds {self.max_upload} bytes", close=True)
        if isinstance(result, (bytes, str)):
            raise TypeError("a WSGI application returns an iterable of bytes, not one string")
        whole = _whole_response(result, start)
        if whole is not None:
            return whole
        chunks = iter(result)
        first = b""
        finished = True
        for chunk in chunks:  # start_response may come as late as the first chunk
            if not isinstance(chunk, bytes):
                raise TypeError(f"a WSGI body yields bytes, not {type(chunk).__name__}")
            if chunk:
                first, finished = chunk, False
                break
        if start.status is None:
            raise RuntimeError("the WSGI application did not call start_response()")
        if stream.exceeded:
            raise PayloadTooLarge(f"the body exceeds {self.max_upload} bytes", close=True)
        start.committed = True
        head = b"".join([*start.written, first])
        if finished:
            _close(result)
            return Response(start.status, start.headers, head)
        return Response(start.status, start.headers, _Body(head, chunks, result))
