"""A streaming ``multipart/form-data`` parser (RFC 7578 over RFC 2046 §5.1), with no I/O.

Rules: the boundary comes from the ``Content-Type`` (token or quoted string, 1-70 characters of
RFC 2046's ``bchars``, not ending in a space). The body is fed in pieces of any size; each piece
gives back events (:class:`PartStart`, :class:`PartData`, :class:`PartEnd`) in order. A part's
data is handed on as soon as it cannot be the start of a delimiter: at most one delimiter's
length (``CRLF--boundary``) is held back, so a 1 GiB part never sits in memory. The preamble
and the epilogue are ignored. Anything else is strict, and every failure is one
:class:`MultipartError` (400) saying what was wrong: a delimiter followed by other than ``--``
or optional spaces and CRLF, a part's header block over ``MAX_PART_HEAD`` bytes or not
``Name: value`` lines of UTF-8, more than ``MAX_PARTS`` parts, a part without
``Content-Disposition: form-data; name=...``, or a body that ends before the close delimiter.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import BadRequest

#: Most parts in one body: each costs a little work and, for a file, a temporary file until the
#: body has been checked whole. Werkzeug's default limit is the same.
MAX_PARTS = 1000
#: Largest header block of one part, in bytes: a name, a file name (255 bytes, up to three times
#: that percent-encoded) and a type fit many times over; a block that never ends is cut here.
MAX_PART_HEAD = 8 * 1024
#: Longest boundary RFC 2046 §5.1.1 allows.
MAX_BOUNDARY = 70

_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: One ``; name=value`` parameter: a token, or a quoted string whose ``\"`` and ``\\`` are
#: quoted pairs (a lone backslash stays, as browsers send Windows-style names unescaped).
_PARAM = re.compile(
    r";\s*(?P<name>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*"
    r'(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^;\s"]+))\s*',
    re.DOTALL,
)
_PADDING = re.compile(rb"[ \t]*")
_QUOTED_PAIR = re.compile(r'\\(["\\])')
#: RFC 8187 ``charset'language'value`` (the ``filename*=`` form).
_EXT_VALUE = re.compile(r"(?P<charset>[!#$%&+\-^_`{}~0-9A-Za-z]+)'[0-9A-Za-z\-]*'(?P<value>.*)")
#: What the HTML form-data encoding percent-encodes in a quoted name: ``"``, CR and LF.
_HTML_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n", "%0d": "\r", "%0a": "\n"}
_HTML_ESCAPE = re.compile("|".join(_HTML_ESCAPES))


class MultipartError(BadRequest):
    """The ``multipart/form-data`` body is malformed or over a limit (400, nothing stored)."""


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins: its form field name, its file name (None for a plain field) and type."""

    name: str
    filename: str | None
    content_type: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PartData:
    """A piece of the current part's content (never empty)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete."""


MultipartEvent = PartStart | PartData | PartEnd


def split_header_value(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="a"; filename*=UTF-8''b`` → ``("form-data", {"name": "a", ...})``.

    Parameter names are lower-cased; a parameter given twice, or text that is not
    ``; name=value``, is an error (two readings of one header are how smuggling starts).
    """
    main, _, rest = value.partition(";")
    rest = ";" + rest if _ else ""
    params: dict[str, str] = {}
    at = 0
    while at < len(rest.rstrip("; \t")):
        match = _PARAM.match(rest, at)
        if match is None:
            raise MultipartError(f"malformed parameters: {rest[at : at + 40]!r}")
        name = match["name"].lower()
        if name in params:
            raise MultipartError(f"parameter {name!r} given twice")
        quoted = match["quoted"]
        params[name] = match["token"] if quoted is None else _QUOTED_PAIR.sub(r"\1", quoted)
        at = match.end()
    return main.strip().lower(), params


def is_form_data(content_type: str | None) -> bool:
    """Whether a request's ``Content-Type`` says ``multipart/form-data``."""
    if not content_type:
        return False
    return content_type.partition(";")[0].strip().lower() == "multipart/form-data"


def form_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` ``Content-Type``; MultipartError if it has
    none, or one RFC 2046 does not allow."""
    try:
        media, params = split_header_value(content_type)
    except MultipartError as exc:
        raise MultipartError(f"Content-Type: {exc.detail}") from None
    if media != "multipart/form-data":
        raise MultipartError("Content-Type is not multipart/form-data")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("multipart/form-data without a boundary")
    if not _BCHARS.fullmatch(boundary):
        raise MultipartError(
            f"boundary must be 1-{MAX_BOUNDARY} letters, digits or '()+_,-./:=? (not ending"
            " in a space)"
        )
    return boundary.encode("ascii")


def _ext_value(value: str) -> str | None:
    """An RFC 8187 ``filename*`` value decoded, or None when its charset is not UTF-8 or
    ISO-8859-1 (the plain ``filename`` is used then)."""
    match = _EXT_VALUE.fullmatch(value)
    if match is None:
        raise MultipartError("filename* is not charset'language'value")
    charset = match["charset"].lower()
    if charset not in ("utf-8", "iso-8859-1"):
        return None
    try:
        return unquote(match["value"], encoding=charset, errors="strict")
    except UnicodeDecodeError:
        raise MultipartError(f"filename* is not {charset}") from None


def _html_unescape(value: str) -> str:
    """Undo the HTML form-data encoding of a quoted name (``%22``, ``%0D``, ``%0A``)."""
    return _HTML_ESCAPE.sub(lambda m: _HTML_ESCAPES[m[0]], value)


def _part_start(block: bytes) -> PartStart:
    """The headers of one part (the block without its final CRLF CRLF) as a PartStart."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError("part headers are not UTF-8") from None
    headers = []
    for line in text.split("\r\n") if text else ():
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise MultipartError(f"malformed part header line: {line[:60]!r}")
        if any(c in value for c in "\r\n\x00"):
            raise MultipartError("control character in a part header")
        headers.append((name.lower(), value.strip(" \t")))
    found = dict(headers)
    if len(found) != len(headers):
        raise MultipartError("a part header given twice")
    disposition = found.get("content-disposition")
    if disposition is None:
        raise MultipartError("part without Content-Disposition")
    kind, params = split_header_value(disposition)
    if kind != "form-data" or "name" not in params:
        raise MultipartError("Content-Disposition of a part must be form-data with a name")
    filename = params.get("filename")
    if filename is not None:
        filename = _html_unescape(filename)
    if "filename*" in params:
        filename = _ext_value(params["filename*"]) or filename
    content_type = found.get("content-type") or "text/plain"
    return PartStart(_html_unescape(params["name"]), filename, content_type, tuple(headers))


class _State(enum.Enum):
    """Where the parser is in the body; each value says so in an error message."""

    PREAMBLE = "before its first boundary"
    AFTER_DELIMITER = "right after a boundary"
    HEAD = "in a part's headers"
    DATA = "in a part's content"
    EPILOGUE = "after its final boundary"


class MultipartParser:
    """Turns a ``multipart/form-data`` body, fed in pieces, into events; see the module
    docstring for the rules. Call :meth:`feed` for each piece, then :meth:`close`."""

    __slots__ = ("_buffer", "_delimiter", "_max_head", "_max_parts", "_parts", "_state")

    def __init__(
        self, boundary: bytes, *, max_parts: int = MAX_PARTS, max_head: int = MAX_PART_HEAD
    ) -> None:
        #: The body is read as if it began with CRLF, so the first delimiter needs no special
        #: case: ``--boundary`` at the very start is a delimiter too.
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")
        self._state = _State.PREAMBLE
        self._max_parts = max_parts
        self._max_head = max_head
        self._parts = 0

    @property
    def complete(self) -> bool:
        """True once the close delimiter has been read."""
        return self._state is _State.EPILOGUE

    def feed(self, data: bytes | bytearray | memoryview) -> list[MultipartEvent]:
        """The events that ``data`` (the next piece of the body) completes."""
        if self._state is _State.EPILOGUE:
            return []
        self._buffer += data
        events: list[MultipartEvent] = []
        while _STEPS[self._state](self, events):
            pass
        return events

    def close(self) -> None:
        """The body has ended: MultipartError unless it ended with the close delimiter."""
        if self._state is not _State.EPILOGUE:
            raise MultipartError(
                f"multipart body ended {self._state.value}, without its final boundary"
            )

    # Each state consumes what it can from the buffer, appends events, and says whether another
    # step may make progress (False: wait for more data).

    def _preamble(self, events: list[MultipartEvent]) -> bool:
        found = self._buffer.find(self._delimiter)
        if found < 0:
            del self._buffer[: max(0, len(self._buffer) - len(self._delimiter) + 1)]
            return False
        del self._buffer[: found + len(self._delimiter)]
        self._state = _State.AFTER_DELIMITER
        return True

    def _after_delimiter(self, events: list[MultipartEvent]) -> bool:
        """After ``CRLF--boundary``: ``--`` ends the body; optional spaces then CRLF start a
        part; anything else means the boundary appeared inside content."""
        buffer = self._buffer
        if buffer[:2] == b"--":
            self._state = _State.EPILOGUE
            self._buffer = bytearray()
            return False
        spaces = _PADDING.match(buffer, 0, self._max_head + 1)
        padding = spaces.end() if spaces else 0
        if padding > self._max_head:
            raise MultipartError("too much white space after a boundary")
        rest = bytes(buffer[padding : padding + 2])
        if rest == b"\r\n":
            del buffer[: padding + 2]
            self._parts += 1
            if self._parts > self._max_parts:
                raise MultipartError(f"more than {self._max_parts} parts")
            self._state = _State.HEAD
            return True
        if rest in (b"", b"\r") or (padding == 0 and rest == b"-"):
            return False  # not decided yet
        raise MultipartError("a boundary followed by other than CRLF or '--'")

    def _head(self, events: list[MultipartEvent]) -> bool:
        buffer = self._buffer
        if buffer[:2] == b"\r\n":  # a part without header lines (then refused: no name)
            end, skip = 0, 2
        else:
            end, skip = buffer.find(b"\r\n\r\n", 0, self._max_head + 4), 4
        if end < 0:
            if len(buffer) >= self._max_head + 4:
                raise MultipartError(f"a part's header block is over {self._max_head} bytes")
            return False
        events.append(_part_start(bytes(buffer[:end])))
        del buffer[: end + skip]
        self._state = _State.DATA
        return True

    def _data(self, events: list[MultipartEvent]) -> bool:
        buffer = self._buffer
        found = buffer.find(self._delimiter)
        if found < 0:
            keep = len(self._delimiter) - 1
            if len(buffer) > keep:
                events.append(PartData(bytes(buffer[:-keep])))
                del buffer[:-keep]
            return False
        if found:
            events.append(PartData(bytes(buffer[:found])))
        events.append(PartEnd())
        del buffer[: found + len(self._delimiter)]
        self._state = _State.AFTER_DELIMITER
        return True


#: What each state does with the buffer; the epilogue is never stepped (``feed`` drops it).
_STEPS: dict[_State, Callable[[MultipartParser, list[MultipartEvent]], bool]] = {
    _State.PREAMBLE: MultipartParser._preamble,
    _State.AFTER_DELIMITER: MultipartParser._after_delimiter,
    _State.HEAD: MultipartParser._head,
    _State.DATA: MultipartParser._data,
}
