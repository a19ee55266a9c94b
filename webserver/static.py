"""Serving files from a folder: GET and HEAD, with validators and conditional requests.

Rules: a path resolves inside the root or is 404 (see :mod:`webserver.paths`); a folder serves its
``index.html``, else a listing (:mod:`webserver.listing`) unless listings are off (a folder asked
for without its trailing slash is redirected to it, so relative links work); upload temporaries are
never served, nor dot-names unless ``show_hidden`` (``/.well-known/`` always is), also when a
symlink leads there; every 200 carries Content-Type, Content-Length, Last-Modified, a strong ETag,
``Accept-Ranges: bytes`` and ``X-Content-Type-Options: nosniff``; a matching conditional request
gets 304 with no body; a Range gets 206 (:mod:`webserver.ranges`), sent from the file at its offset,
never read whole into memory.
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Self
from urllib.parse import quote

from .conditional import etag_matches, make_etag, not_modified, precondition_failed
from .config import ServerConfig
from .encoding import (
    SIBLING_CODINGS,
    SIBLING_SUFFIX,
    choose_coding,
    gzip_bytes,
    gzip_file,
    is_compressible,
)
from .errors import NotFound, RangeNotSatisfiable
from .handler import Handler
from .httpdate import format_http_date
from .listing import ListingEntry, listing_etag, render_html, render_json, wants_json
from .paths import TEMP_PREFIX, file_segments, hidden_refused, is_hidden, resolve_inside
from .ranges import content_range, if_range_allows, parse_ranges
from .request import Request
from .response import Response

#: Largest file kept in memory by default: small files are most requests and little memory.
CACHE_FILE_LIMIT = 64 * 1024
#: Memory the cache of one StaticFiles handler may hold, bodies and metadata.
CACHE_SIZE = 8 * 1024 * 1024
#: Route paths whose checked, joined file path is remembered, at most (see
#: ``StaticFiles.from_memory``), and the longest remembered: some 0.5 MiB at worst.
JOINED_PATHS = 1024
JOINED_PATH_MAX = 256
#: Rough cost of an entry beyond its body, for the budget.
_ENTRY_OVERHEAD = 512
#: Bytes read per step when a multipart/byteranges body is built from the file.
_PART_CHUNK = 64 * 1024
#: Sent with every static response: a browser must not sniff an uploaded .txt into HTML.
NOSNIFF = ("X-Content-Type-Options", "nosniff")
_ACCEPT_RANGES = ("Accept-Ranges", "bytes")
_VARY = ("Vary", "Accept-Encoding")
#: Request fields that make the answer depend on more than the cached file (see ``from_memory``).
_NEGOTIATED = frozenset({"accept-encoding", "range"})
#: Smallest file gzipped on the fly: below this the gzip header and the CPU outweigh the saving.
COMPRESS_MIN = 1024
#: Largest file gzipped on the fly: bigger ones go by sendfile, as compressing them would hold a
#: worker for long (a precompressed sibling is still sent whatever its size).
COMPRESS_MAX = 8 * 1024 * 1024


class _CachedFile:
    """What serving one version of a file needs, computed once per version."""

    __slots__ = (
        "body",
        "compressible",
        "content_type",
        "etag",
        "fields",
        "identity",
        "last_modified",
    )

    def __init__(
        self,
        st: os.stat_result,
        *,
        content_type: str,
        last_modified: str,
        etag: str,
        body: bytes | None,
        compressible: bool = False,
    ) -> None:
        self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        #: gzip on the fly applies to this file (type and size); its 200 then varies by coding.
        self.compressible = compressible
        self.content_type = content_type
        self.last_modified = last_modified
        self.etag = etag
        self.body = body
        #: The header fields of a 200, built once per version of the file.
        self.fields = [
            ("Content-Type", content_type),
            ("Last-Modified", last_modified),
            ("ETag", etag),
            _ACCEPT_RANGES,
            NOSNIFF,
        ]
        if compressible:
            self.fields.append(_VARY)

    def matches(self, st: os.stat_result) -> bool:
        return self.identity == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def cost(self) -> int:
        return _ENTRY_OVERHEAD + (len(self.body) if self.body is not None else 0)


class _FileCache:
    """Path → :class:`_CachedFile`, bounded in bytes; the oldest entries go first.

    Reads take no lock (a dict lookup is atomic); writers serialise on one.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: dict[str, _CachedFile] = {}
        self._used = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> _CachedFile | None:
        return self._entries.get(key)

    def put(self, key: str, entry: _CachedFile) -> None:
        if entry.cost > self.budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old.cost
            while self._entries and self._used + entry.cost > self.budget:
                oldest = next(iter(self._entries))
                self._used -= self._entries.pop(oldest).cost
            self._entries[key] = entry
            self._used += entry.cost


def _open_matching(path: str, cached: _CachedFile) -> BinaryIO | None:
    """``path`` opened, if what opens is still the cached file (checked on the open descriptor,
    so a swap between ``stat`` and ``open`` is caught)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if cached.matches(os.fstat(fd)):
        return os.fdopen(fd, "rb")
    os.close(fd)
    return None


def _stat_matching(path: str, cached: _CachedFile) -> os.stat_result | None:
    """The ``stat`` of ``path`` if it is still the cached file, else None.

    Same device, inode, size and mtime: the very file read (and checked to lie inside the root)
    before. A path that now leads elsewhere, through a swapped folder or a new symlink, names
    another inode and takes the slow path. ``lstat``, not ``stat``: the path itself must still
    be that file (only real paths are cached), not a symlink to it -- the file may have been
    moved out of the root and linked back, which the slow path refuses.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if cached.matches(st) else None


def _read_small(file: BinaryIO, size: int, limit: int) -> bytes | None:
    """The whole file if it is at most ``limit`` bytes and reads back at its stat size."""
    if size > limit:
        return None
    data = file.read(size + 1)
    return data if len(data) == size else None


class StaticFiles(Handler):
    """GET and HEAD of the files under ``root``.

    Subclasses may override :meth:`content_type` or :meth:`extra_headers` to change what is sent
    with each file.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        index: str = "index.html",
        cache_file_limit: int = CACHE_FILE_LIMIT,
        cache_size: int = CACHE_SIZE,
        listing: bool = True,
        show_hidden: bool = False,
        compress: bool = True,
        upload_form: bool = False,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.index = index
        #: A folder without an index is listed (else 404).
        self.listing = listing
        #: Dot-names (``.git``, ``.env``) are served and listed (else 404 and left out).
        self.show_hidden = show_hidden
        #: Compressible files of COMPRESS_MIN..COMPRESS_MAX bytes are gzipped on the fly for
        #: clients that accept it; precompressed ``.br``/``.gz`` siblings are sent either way.
        self.compress = compress
        #: Listings carry a form that uploads files into the folder (uploads are on).
        self.upload_form = upload_form
        #: Files up to this size are kept in memory and sent with their head in one write;
        #: 0 turns the cache off. Larger files go by ``sendfile`` (their headers are cached).
        self.cache_file_limit = cache_file_limit
        self._cache = _FileCache(cache_size)
        #: Route paths already checked, and the path each names under the root (see
        #: ``_remember_joined``); a dict's get and set need no lock.
        self._joined: dict[str, str] = {}
        self._has_extra_headers = type(self).extra_headers is not StaticFiles.extra_headers

    @classmethod
    def from_config(cls, config: ServerConfig) -> Self:
        return cls(
            config.root,
            listing=config.listing,
            show_hidden=config.show_hidden,
            compress=config.compress,
            upload_form=not config.read_only,
        )

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
        segments = self._segments(request.route_path)
        joined = os.path.join(self.root, *segments)
        cached = self._cache.get(joined)
        if cached is not None:
            st = _stat_matching(joined, cached)
            if st is not None:
                if cached.body is not None:
                    return self._respond(request, joined, st, cached)
                file = _open_matching(joined, cached)
                if file is not None:
                    return self._respond(request, joined, st, cached, file)
        return self._get_uncached(request, segments, joined)

    def from_memory(self, request: Request) -> Response | None:
        """The answer :meth:`get` gives, when it comes from memory at the cost of one ``stat``
        and no other system call (a cached small file, no coding to choose, no range); else
        None, having done nothing.

        Why: such an answer cannot wait on anything, so the server's selector thread gives it
        itself instead of handing the connection to a worker (see ``Server._answer_here``).
        """
        for name, _ in request.headers:
            if name in _NEGOTIATED:
                return None  # a coding means looking for precompressed siblings: more calls
        joined = self._joined.get(request.route_path)
        if joined is None:
            joined = self._remember_joined(request.route_path)
        cached = self._cache.get(joined)
        if cached is None or cached.body is None:
            return None
        st = _stat_matching(joined, cached)
        if st is None:
            return None
        return self._respond(request, joined, st, cached, negotiate=False)

    def _remember_joined(self, route_path: str) -> str:
        """The root joined to the segments of ``route_path``, remembered (a pure function of
        the path: checking and joining segments was a twentieth of a small request's time)."""
        joined = os.path.join(self.root, *self._segments(route_path))
        if len(route_path) <= JOINED_PATH_MAX:
            if len(self._joined) >= JOINED_PATHS:
                self._joined.clear()  # rare: a new set of paths, remembered again as asked
            self._joined[route_path] = joined
        return joined

    def _segments(self, route_path: str) -> list[str]:
        """The path's segments; ``NotFound`` for a hidden one, ``BadRequest`` for one that
        cannot name a file."""
        segments = file_segments(route_path)
        if any(s[0] == "." for s in segments) and hidden_refused(
            segments, show_hidden=self.show_hidden
        ):
            raise NotFound()
        return segments

    def _get_uncached(self, request: Request, segments: list[str], joined: str) -> Response:
        path = resolve_inside(self.root, segments)
        if str(path) != joined and hidden_refused(
            path.relative_to(self.root).parts, show_hidden=self.show_hidden
        ):
            # A symlink (or '..') that leads to a hidden name is refused like the name itself.
            raise NotFound()
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
            cached = _CachedFile(
                st,
                content_type=self.content_type(path),
                last_modified=format_http_date(st.st_mtime),
                etag=make_etag(st),
                body=_read_small(file, st.st_size, self.cache_file_limit),
                compressible=self._compressible(path, st),
            )
            # Only a path that is its own real path is cached: no symlink, no '..' on the way.
            if str(path) == joined and self.cache_file_limit:
                self._cache.put(joined, cached)
            if cached.body is not None:
                file.close()
                return self._respond(request, path, st, cached)
            return self._respond(request, path, st, cached, file)
        except BaseException:
            file.close()
            raise

    def _respond(
        self,
        request: Request,
        where: Path | str,
        st: os.stat_result,
        cached: _CachedFile,
        file: BinaryIO | None = None,
        *,
        negotiate: bool = True,
    ) -> Response:
        """The 200, 206, 304, 416 or HEAD answer for a regular file at ``where``; ``file`` is
        sent unless cached. (A cached file comes as a ``str``: the plain answer needs no
        ``Path``, and building one was a twentieth of a small request's time.) Without
        ``negotiate`` the request is known to carry neither ``Accept-Encoding`` nor ``Range``.

        Preconditions are evaluated against the file itself, before a coding or a range is
        chosen: a client that names the version it has (``If-Match``) gets 412 once the file
        changed, whatever representation it asked for."""
        if precondition_failed(request.headers, cached.etag, st.st_mtime):
            return self._without_file(
                file, Response.error(412, "precondition failed", headers=[NOSNIFF])
            )
        if negotiate:
            accept_encoding = request.headers.get("accept-encoding")
            if accept_encoding is not None and request.headers.get("range") is None:
                encoded = self._encoded(request, accept_encoding, Path(where), st, cached, file)
                if encoded is not None:
                    return encoded
        if not_modified(request.headers, cached.etag, st.st_mtime):
            return self._without_file(file, self._unchanged(Path(where), st, cached))
        headers = cached.fields.copy()
        if self._has_extra_headers:
            headers += self.extra_headers(Path(where), st)
        range_header = request.headers.get("range") if negotiate else None
        if range_header is not None:
            ranged = self._ranged(request, range_header, Path(where), st, cached, headers, file)
            if ranged is not None:
                return ranged
        if request.method == "HEAD":
            if file is not None:
                file.close()
            return Response(200, [*headers, ("Content-Length", str(st.st_size))])
        if file is None:
            assert cached.body is not None
            return Response(200, headers, cached.body)
        return Response(200, headers, file, st.st_size)

    @staticmethod
    def _without_file(file: BinaryIO | None, response: Response) -> Response:
        """``response``, which sends nothing of the file: the file, if open, is closed."""
        if file is not None:
            file.close()
        return response

    def _unchanged(self, path: Path, st: os.stat_result, cached: _CachedFile) -> Response:
        """The 304 for the identity representation: its validators, no body."""
        headers = [("Last-Modified", cached.last_modified), ("ETag", cached.etag), NOSNIFF]
        if cached.compressible:
            headers.append(_VARY)
        if self._has_extra_headers:
            headers += self.extra_headers(path, st)
        return Response(304, headers)

    def _compressible(self, path: Path, st: os.stat_result) -> bool:
        """Whether this file may be gzipped on the fly: compression on, a text-like type, and
        a size where it pays."""
        return (
            self.compress
            and COMPRESS_MIN <= st.st_size <= COMPRESS_MAX
            and is_compressible(self.content_type(path))
        )

    def _sibling(self, path: Path, coding: str) -> tuple[BinaryIO, os.stat_result] | None:
        """The open precompressed sibling of ``path`` for ``coding``, if it is a regular file
        that lies inside the root (a symlink leading out is ignored)."""
        sibling = str(path) + SIBLING_SUFFIX[coding]
        try:
            fd = os.open(sibling, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        real = os.path.realpath(sibling)
        if stat.S_ISREG(st.st_mode) and os.path.commonpath((self.root, real)) == str(self.root):
            return os.fdopen(fd, "rb"), st
        os.close(fd)
        return None

    def _encoded(
        self,
        request: Request,
        accept_encoding: str,
        path: Path,
        st: os.stat_result,
        cached: _CachedFile,
        file: BinaryIO | None,
    ) -> Response | None:
        """The answer with a content coding the client accepts: a precompressed sibling, else
        gzip made on the fly; ``None`` when identity is to be sent."""
        siblings: dict[str, tuple[BinaryIO, os.stat_result]] = {}
        for coding in SIBLING_CODINGS:
            found = self._sibling(path, coding)
            if found is not None:
                siblings[coding] = found
        available = list(siblings)
        if cached.compressible and "gzip" not in siblings:
            available.append("gzip")
        chosen = choose_coding(accept_encoding, available) if available else None
        for coding, (sibling, _) in siblings.items():
            if coding != chosen:
                sibling.close()
        if chosen is None:
            return None
        if chosen not in siblings:
            return self._gzipped(request, path, st, cached, file)
        if file is not None:
            file.close()
        sibling, sibling_st = siblings[chosen]
        return self._precompressed(request, chosen, path, sibling, sibling_st, cached)

    def _encoded_fields(
        self, path: Path, st: os.stat_result, cached: _CachedFile, coding: str, etag: str
    ) -> list[tuple[str, str]]:
        fields = [
            ("Content-Type", cached.content_type),
            ("Content-Encoding", coding),
            ("Last-Modified", format_http_date(st.st_mtime)),
            ("ETag", etag),
            _VARY,
            NOSNIFF,
        ]
        if self._has_extra_headers:
            fields += self.extra_headers(path, st)
        return fields

    def _precompressed(
        self,
        request: Request,
        coding: str,
        path: Path,
        sibling: BinaryIO,
        st: os.stat_result,
        cached: _CachedFile,
    ) -> Response:
        """A ``.br``/``.gz`` sibling as the coded representation, with its own validators."""
        etag = f'{make_etag(st)[:-1]}-{coding}"'
        headers = self._encoded_fields(path, st, cached, coding, etag)
        if not_modified(request.headers, etag, st.st_mtime):
            sibling.close()
            return Response(304, headers[2:])
        if request.method == "HEAD":
            sibling.close()
            return Response(200, [*headers, ("Content-Length", str(st.st_size))])
        return Response(200, headers, sibling, st.st_size)

    def _gzipped(
        self,
        request: Request,
        path: Path,
        st: os.stat_result,
        cached: _CachedFile,
        file: BinaryIO | None,
    ) -> Response:
        """The file gzipped on the fly: from memory when cached, else streamed from the file a
        piece at a time (never read whole). Its ETag is weak, as zlib versions may differ."""
        etag = f'W/{cached.etag[:-1]}-gzip"'
        headers = self._encoded_fields(path, st, cached, "gzip", etag)
        unchanged = not_modified(request.headers, etag, st.st_mtime)
        if file is not None and (unchanged or request.method == "HEAD"):
            file.close()
        if unchanged:
            return Response(304, headers[2:])
        if request.method == "HEAD":
            # The length is known only once compressed: the head promises no length.
            return Response(200, headers, iter(()))
        if file is None:
            assert cached.body is not None  # a file not cached in memory arrives open
            return Response(200, headers, gzip_bytes(cached.body))
        return Response(200, headers, gzip_file(file, st.st_size))

    def _ranged(
        self,
        request: Request,
        range_header: str,
        path: Path,
        st: os.stat_result,
        cached: _CachedFile,
        headers: list[tuple[str, str]],
        file: BinaryIO | None,
    ) -> Response | None:
        """The 206 or 416 answer to a Range; ``None`` to send the whole file instead."""
        if not if_range_allows(request.headers.get("if-range"), cached.etag, cached.last_modified):
            return None
        size = st.st_size
        try:
            spans = parse_ranges(range_header, size)
        except RangeNotSatisfiable as exc:
            if file is not None:
                file.close()
            return Response.error(416, headers=[*exc.headers, _ACCEPT_RANGES, NOSNIFF])
        if spans is None:
            return None
        if file is None:
            # A cached small file too is sent from the file at the offset, not sliced from memory.
            file = _open_matching(str(path), cached)
            if file is None:
                return None  # changed since it was cached: the cached version goes out whole
        if len(spans) == 1:
            start, stop = spans[0]
            headers.append(("Content-Range", content_range(start, stop, size)))
            if request.method == "HEAD":
                file.close()
                return Response(206, [*headers, ("Content-Length", str(stop - start))])
            file.seek(start)
            return Response(206, headers, file, stop - start)
        boundary = secrets.token_hex(12)
        heads = [
            (
                f"\r\n--{boundary}\r\nContent-Type: {cached.content_type}\r\n"
                f"Content-Range: {content_range(start, stop, size)}\r\n\r\n"
            ).encode("latin-1")
            for start, stop in spans
        ]
        tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
        length = sum(len(h) for h in heads) + sum(b - a for a, b in spans) + len(tail)
        headers[0] = ("Content-Type", f"multipart/byteranges; boundary={boundary}")
        headers.append(("Content-Length", str(length)))
        if request.method == "HEAD":
            file.close()
            return Response(206, headers)
        return Response(206, headers, _multipart_body(file, spans, heads, tail))

    def _folder(self, request: Request, path: Path) -> Response:
        if not request.path.endswith("/"):
            # One leading slash only: "//host/.." would be a redirect to another site.
            location = quote("/" + request.path.lstrip("/") + "/", safe="/")
            if request.query:
                location += "?" + request.query
            return Response(301, [("Location", location), ("Content-Length", "0")], b"")
        index = path / self.index
        if not index.is_file():
            if not self.listing:
                raise NotFound()
            return self._listing(request, path)
        sub = request.route_path.rstrip("/") + "/" + self.index
        request.route_path = sub
        return self.get(request)

    def _listing(self, request: Request, folder: Path) -> Response:
        """The folder's entries as HTML or JSON, with an ETag of its bytes."""
        entries = []
        try:
            with os.scandir(folder) as scan:
                for item in scan:
                    entry = self._entry(item)
                    if entry is not None:
                        entries.append(entry)
        except OSError:
            raise NotFound() from None
        url_path = "/" + request.path.lstrip("/")
        if wants_json(request.query, request.headers.get("accept")):
            body = render_json(url_path, entries).encode("utf-8")
            content_type = "application/json"
        else:
            html = render_html(
                url_path, entries, parent=folder != self.root, upload_form=self.upload_form
            )
            body = html.encode("utf-8")
            content_type = "text/html; charset=utf-8"
        etag = listing_etag(body)
        headers = [("ETag", etag), ("Vary", "Accept"), NOSNIFF]
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return Response(304, headers)
        return Response(200, [("Content-Type", content_type), *headers], body)

    def _entry(self, item: os.DirEntry[str]) -> ListingEntry | None:
        """What the listing shows of one name: nothing for what GET would not serve."""
        name = item.name
        if name.startswith(TEMP_PREFIX) or (is_hidden(name) and not self.show_hidden):
            return None
        try:
            if item.is_symlink():
                target = os.path.realpath(item.path)
                if os.path.commonpath((self.root, target)) != str(self.root):
                    return None
            st = item.stat()
        except (OSError, ValueError):
            return None  # a dangling link, or vanished meanwhile
        if stat.S_ISDIR(st.st_mode):
            return ListingEntry(name, True, 0, st.st_mtime)
        if stat.S_ISREG(st.st_mode):
            return ListingEntry(name, False, st.st_size, st.st_mtime)
        return None


def _multipart_body(
    file: BinaryIO, spans: list[tuple[int, int]], heads: list[bytes], tail: bytes
) -> Iterator[bytes]:
    """The parts of a multipart/byteranges body, read a bounded chunk at a time."""
    fd = file.fileno()
    try:
        for head, (start, stop) in zip(heads, spans, strict=True):
            yield head
            while start < stop:
                chunk = os.pread(fd, min(_PART_CHUNK, stop - start), start)
                if not chunk:
                    raise OSError("file shrank while it was being sent")
                yield chunk
                start += len(chunk)
        yield tail
    finally:
        file.close()
