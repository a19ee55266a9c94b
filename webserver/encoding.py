"""Content codings (RFC 9110 §8.4, §12.5.3): which one a request accepts, and gzip as a stream.

Rules: Accept-Encoding is read as a pure function of its value; a coding is acceptable when it is
listed with q > 0, or when it is not listed and ``*`` is, with q > 0; ``identity`` is acceptable
unless ``identity;q=0`` (or ``*;q=0`` without an ``identity`` entry) says otherwise; ``x-gzip``
means ``gzip``; among acceptable codings the highest q wins and ties go to the server's order
(smallest output first). A malformed element is ignored rather than failing the request, as the
field is advisory. Only types that are text at heart are compressed: already compressed types
(images, archives, media) gain nothing and cost CPU.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator, Sequence
from typing import BinaryIO

#: The codings the server can send, best first: a ``.br`` sibling, then a ``.gz`` one (or gzip
#: made on the fly). Brotli is only ever sent precompressed (no brotli module is required).
SIBLING_CODINGS = ("br", "gzip")
#: File suffix of the precompressed sibling of each coding.
SIBLING_SUFFIX = {"br": ".br", "gzip": ".gz"}
#: Aliases a client may send for a coding (RFC 9110 §8.4.1.3).
_ALIASES = {"x-gzip": "gzip"}
#: Media types (besides text/*) worth compressing; ``+json`` and ``+xml`` suffixes are too.
_COMPRESSIBLE = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/manifest+json",
        "application/wasm",
        "image/svg+xml",
        "image/x-icon",
        "image/bmp",
        "font/ttf",
        "font/otf",
    }
)
#: zlib level for gzip made on the fly: level 6 is zlib's (and nginx's common) balance.
GZIP_LEVEL = 6


def _quality(params: list[str]) -> float | None:
    """The q of an element's parameters: 1 without one, ``None`` when it is malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            q = float(value.strip())
        except ValueError:
            return None
        if not 0.0 <= q <= 1.0 or q != q:
            return None
        return q
    return 1.0


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Coding (lower case, aliases resolved) → q, from an Accept-Encoding field value.

    A coding listed twice keeps its first q; an element with a malformed q is skipped.
    """
    result: dict[str, float] = {}
    for element in value.split(","):
        name, *params = element.split(";")
        coding = name.strip().lower()
        if not coding:
            continue
        coding = _ALIASES.get(coding, coding)
        q = _quality(params)
        if q is not None and coding not in result:
            result[coding] = q
    return result


def coding_quality(accepted: dict[str, float], coding: str) -> float:
    """How much the client wants ``coding``: its own q, else ``*``'s, else 0 (identity: 1)."""
    if coding in accepted:
        return accepted[coding]
    if "*" in accepted:
        return accepted["*"]
    return 1.0 if coding == "identity" else 0.0


def choose_coding(value: str, available: Sequence[str]) -> str | None:
    """The best of ``available`` (in server order) for an Accept-Encoding value; ``None`` when
    identity is to be sent.

    Identity is sent when nothing available is acceptable, even if the client refused identity:
    the server may ignore the field rather than answer 406 (RFC 9110 §12.5.3).
    """
    accepted = parse_accept_encoding(value)
    best: str | None = None
    best_q = 0.0
    for coding in available:
        q = coding_quality(accepted, coding)
        if q > best_q:
            best, best_q = coding, q
    if best is not None and coding_quality(accepted, "identity") > best_q:
        return None
    return best


def is_compressible(content_type: str) -> bool:
    """Whether a body of this Content-Type is worth compressing (text, JSON, XML, SVG, JS)."""
    media = content_type.partition(";")[0].strip().lower()
    return media.startswith("text/") or media in _COMPRESSIBLE or media.endswith(("+json", "+xml"))


def gzip_bytes(data: bytes) -> bytes:
    """``data`` as a gzip member with no name and mtime 0: the same input, the same bytes."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def gzip_file(file: BinaryIO, length: int, chunk: int = 64 * 1024) -> Generator[bytes, None, None]:
    """``length`` bytes of ``file`` from its position, gzipped a ``chunk`` at a time; the file is
    closed at the end or when the iterator is closed, so memory stays at one chunk."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    try:
        left = length
        while left > 0:
            data = file.read(min(chunk, left))
            if not data:
                raise OSError("file shrank while it was being compressed")
            left -= len(data)
            out = compressor.compress(data)
            if out:
                yield out
        yield compressor.flush()
    finally:
        file.close()
