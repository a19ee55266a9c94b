"""A chunked request body's framing, checked as its bytes arrive and before h11 reads them.

h11 reads a chunk line as a size, then anything up to CR LF (a bare CR inside an extension
included), so a body such as ``41;a=b\\r\\r…`` ends where nginx, gunicorn and llhttp-based servers
see no end: two servers in a chain would read different request boundaries (smuggling). Every
byte of the framing is judged here first, and refused at the first that breaks a rule:

* a chunk line is ``size *( ";" ext-name [ "=" ext-value ] )`` (RFC 9112 §7.1.1: hex digits,
  token names, token or quoted-string values, whitespace only around ``;`` and ``=`` and at the
  end, as h11 allows it there), at most ``MAX_CHUNK_LINE`` bytes, ended by CR LF; no bare CR, bare
  LF, NUL or other control byte;
* chunk data is followed by exactly CR LF;
* trailer fields (RFC 9112 §7.1.2) follow the head's rules: ``name: value`` lines ended by CR LF,
  no bare LF, no obsolete line folding; together at most the head's size and field count.

A failure is :class:`BodyFramingError`: 400 (431 for trailers over the limits) and close. The
check is a pure object fed bytes in any pieces; it costs nothing per byte of chunk data.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from .errors import HTTPError
from .framing import HeadLimits

#: Longest chunk line accepted (size and extensions). Extensions carry nothing we use; nginx and
#: llhttp bound them too.
MAX_CHUNK_LINE = 4096

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?[ \t]*)*[ \t]*"
)
_TRAILER_LINE = re.compile(_TOKEN + rb":[^\x00\n\r\x0b\x0c]*")
#: The bytes a line may hold as they arrive (a CR only as its last byte, before the LF).
_CHUNK_LINE_BYTES = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\r?")
_TRAILER_BYTES = re.compile(rb"[^\x00\n\r\x0b\x0c]*\r?")


class BodyFramingError(HTTPError):
    """A chunked body whose framing breaks a rule in :mod:`webserver._chunked`."""

    status = 400

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail, status=status, close=True)


class _State(enum.Enum):
    SIZE_LINE = "size line"
    DATA = "data"
    DATA_END = "CR LF after data"
    TRAILER = "trailer"
    DONE = "done"


class ChunkedBodyCheck:
    """Follows one chunked body; :meth:`feed` it every byte after the head, in order."""

    __slots__ = ("_limits", "_line", "_remaining", "_state", "_trailer_count", "_trailer_size")

    def __init__(self, limits: HeadLimits) -> None:
        self._limits = limits
        self._state = _State.SIZE_LINE
        self._line = bytearray()
        self._remaining = 0
        self._trailer_size = 0
        self._trailer_count = 0

    @property
    def done(self) -> bool:
        """The body's last byte (the blank line after the trailers) has been checked."""
        return self._state is _State.DONE

    def feed(self, data: bytes | bytearray) -> int:
        """Check the next bytes; returns how many belong to the body (all of them until it ends).

        Raises :class:`BodyFramingError` at the first byte that breaks a rule.
        """
        pos, end = 0, len(data)
        while pos < end and self._state is not _State.DONE:
            if self._state is _State.DATA:
                take = min(self._remaining, end - pos)
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._state = _State.DATA_END
            elif self._state is _State.DATA_END:
                if data[pos] != b"\r\n"[len(self._line)]:
                    raise BodyFramingError("chunk data not followed by CR LF")
                self._line.append(data[pos])
                pos += 1
                if len(self._line) == 2:
                    self._line.clear()
                    self._state = _State.SIZE_LINE
            else:
                pos = self._read_line(data, pos)
        return pos

    def _read_line(self, data: bytes | bytearray, pos: int) -> int:
        trailer = self._state is _State.TRAILER
        lf = data.find(b"\n", pos)
        stop = len(data) if lf < 0 else lf
        piece = data[pos:stop]
        if piece and self._line.endswith(b"\r"):
            raise BodyFramingError("bare CR in a chunk line")
        allowed = _TRAILER_BYTES if trailer else _CHUNK_LINE_BYTES
        if allowed.fullmatch(piece) is None:
            raise BodyFramingError("control byte or bare CR in a chunk line")
        if trailer and not self._line and piece[:1] in (b" ", b"\t"):
            raise BodyFramingError("obsolete line folding in the trailer section")
        self._line += piece
        if trailer:
            if self._trailer_size + len(self._line) > self._limits.max_head_size:
                raise BodyFramingError("trailer section too large", 431)
        elif len(self._line) > MAX_CHUNK_LINE:
            raise BodyFramingError("chunk line too long")
        if lf < 0:
            return stop
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r"):
            raise BodyFramingError("bare LF in a chunked body")
        if trailer:
            self._trailer_line(line[:-1])
        else:
            self._size_line(line[:-1])
        return lf + 1

    def _size_line(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise BodyFramingError("malformed chunk line")
        self._remaining = int(match.group(1), 16)
        self._state = _State.DATA if self._remaining else _State.TRAILER

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._state = _State.DONE
            return
        if _TRAILER_LINE.fullmatch(line) is None:
            raise BodyFramingError("malformed trailer field")
        self._trailer_size += len(line) + 2
        self._trailer_count += 1
        if self._trailer_count > self._limits.max_header_count:
            raise BodyFramingError("too many trailer fields", 431)


def start_body_check(
    headers: Iterable[tuple[bytes, bytes]], buffered: bytes, limits: HeadLimits
) -> ChunkedBodyCheck | None:
    """The check for a request's chunked body (``None`` for any other), already fed the bytes
    received with the head; raises :class:`BodyFramingError` if those are bad, so a bad body
    that is already here is answered 400 before any handler runs."""
    if not any(name == b"transfer-encoding" for name, _ in headers):
        return None  # the head checks allow no coding but chunked
    return feed_body_check(ChunkedBodyCheck(limits), buffered)


def feed_body_check(check: ChunkedBodyCheck, data: bytes) -> ChunkedBodyCheck | None:
    """Feed ``check`` the next bytes received; ``None`` once the body has ended."""
    check.feed(data)
    return None if check.done else check
