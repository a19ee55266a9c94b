"""Command files: one request per line, all validated before anything is sent.

Grammar (one command per line; fields separated by spaces or tabs, and by nothing else: other
Unicode spaces belong to the field; a UTF-8 byte order mark at the start of a file is ignored)::

    line      = method SP file-name SP host [SP port] | method SP url | "#" comment | blank
    method    = "GET" | "POST"                  (any letter case)
    url       = ("http" | "https") "://" host [":" 1*5DIGIT] [file-name]
                (no user:password@, the #fragment dropped; default port 80 or 443)
    file-name = path with or without a leading "/", optionally "?query"
    host      = DNS name | IPv4 address | "[" IPv6 address "]"
                (not all digits; IPv4 only as a dotted quad, e.g. not "127.1" or "0x7f.0.0.1")
    port      = 1*5DIGIT | "(" 1*5DIGIT ")"     (1..65535, default 80)

Rules: every invalid line is reported with its line number, not just the first (the first
:data:`MAX_LISTED_ERRORS` listed, the others counted), and a file with any invalid line runs
nothing; the file is read a line at a time, so only its commands take memory; a parsed command
prints back (:meth:`Command.to_line`) to a line that parses to an equal command.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from .errors import CommandFileError, LineError

METHODS = ("GET", "POST")
#: Commands kept from one file: each costs a few hundred bytes for the whole run, so a
#: gigabyte of commands would need gigabytes of memory; a million is far beyond a batch.
MAX_COMMANDS = 1_000_000
#: Longest line read: a request target longer than this is refused by every server anyway
#: (nginx's default limit for a whole request line is 8 KiB).
MAX_LINE_LENGTH = 64 * 1024
#: Invalid lines listed one by one; the rest are counted, so a file of garbage costs no memory.
MAX_LISTED_ERRORS = 100
DEFAULT_PORT = 80
#: The port of each scheme a URL may name, when it names none.
SCHEME_PORTS = {"http": 80, "https": 443}
#: The name a file-name ending in "/" is saved under, as a browser would show that page.
INDEX_NAME = "index.html"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
#: A last label that makes resolvers read the host as a number (decimal, octal or hex).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_PORT = re.compile(r"^\(?([0-9]+)\)?$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
#: A URL's start (RFC 3986 §3.1 scheme, then "://"): a file name such as "/a://b" is not one.
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: Characters a request target may carry as they are (RFC 3986 pchar, "/" and "?"); the rest are
#: percent-encoded from UTF-8.
_TARGET_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?"
)
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
#: A path that needs no change: only safe characters and complete escapes.
_ENCODED = re.compile(
    "(?:[" + re.escape("".join(sorted(_TARGET_SAFE - {"%"}))) + "]|%[0-9A-Fa-f]{2})*"
)
#: Fields are separated by spaces and tabs only: other Unicode spaces (NBSP, EM SPACE) are part of
#: a field, so a file name may contain them.
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
#: Stripped from both ends of a line: spaces, tabs, and the CR of CRLF endings (and FF/VT, so a
#: line holding only those is blank, as in an editor).
_LINE_ENDS = " \t\r\f\v"


class _InvalidLine(ValueError):
    """One line is not a command; the message says why (the caller adds the line number)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One request of a batch: ``path`` always starts with "/", ``host`` has no brackets."""

    method: str
    path: str
    host: str
    port: int = DEFAULT_PORT
    line: int = field(default=0, compare=False)
    #: ``http``, or ``https`` for a command written as an https:// URL.
    scheme: str = "http"

    @property
    def host_for_url(self) -> str:
        """The host as it appears in URLs and Host headers (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def origin(self) -> tuple[str, int]:
        """Commands with the same origin share one connection."""
        return self.host, self.port

    @property
    def target(self) -> str:
        """The request target sent on the wire: the file-name, percent-encoded where needed."""
        return encode_target(self.path)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_for_url}:{self.port}{self.target}"

    @property
    def local_name(self) -> str:
        """The relative file name the body is saved under (query dropped, escapes decoded)."""
        path = unquote(self.path.partition("?")[0]).lstrip("/")
        if not path or path.endswith("/"):
            path += INDEX_NAME
        return path

    def to_line(self) -> str:
        """The command as a command-file line; parsing it gives an equal command."""
        if self.scheme != "http":
            return f"{self.method} {self.scheme}://{self.host_for_url}:{self.port}{self.path}"
        return f"{self.method} {self.path} {self.host_for_url} {self.port}"


def encode_target(path: str) -> str:
    """Percent-encode what may not appear raw in a request target; keep existing escapes."""
    if _ENCODED.fullmatch(path):
        return path  # the common case, without the loop of _encode_each
    return _encode_each(path)


def _encode_each(path: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char == "%" and _PERCENT_ESCAPE.match(path, i):
            out.append(path[i : i + 3])
            i += 3
            continue
        if char in _TARGET_SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _parse_host(text: str) -> str:
    # Remembered: a command file names the same few hosts on every line, and checking an
    # address with ipaddress costs more than the rest of the line.
    if text.startswith("["):
        if not text.endswith("]"):
            raise _InvalidLine(f"unclosed '[' in host {text!r}")
        inner = text[1:-1]
        if "%" in inner:
            raise _InvalidLine(f"IPv6 zone identifiers are not supported: {text!r}")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise _InvalidLine(f"not an IPv6 address: {text!r}") from None
        return inner.lower()
    if ":" in text:
        if "://" in text:
            raise _InvalidLine(f"a URL is not a host name: {text!r} (write: GET file host port)")
        host, _, port = text.rpartition(":")
        if ":" not in host and port.isdigit():
            raise _InvalidLine(
                f"the port goes after the host, separated by a space: {host} {port}, not {text!r}"
            )
        raise _InvalidLine(f"IPv6 addresses go in brackets, like [::1]: {text!r}")
    if len(text) > 253 or not _HOSTNAME.match(text):
        raise _InvalidLine(f"not a host name: {text!r}")
    if _NUMERIC_LABEL.fullmatch(text.rstrip(".").rpartition(".")[2]):
        # Resolvers read "2130706433", "0x7f.1" or "127.1" as IPv4 addresses (inet_aton): only
        # the dotted quad, which means the same to every program, is taken as one.
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise _InvalidLine(
                f"not an IPv4 address: {text!r} (write four numbers 0-255, like 127.0.0.1)"
            ) from None
    return text.lower()


def _parse_port(text: str) -> int:
    match = _PORT.match(text)
    if not match or (text.startswith("(") != text.endswith(")")):
        raise _InvalidLine(f"not a port number: {text!r}")
    digits = match.group(1)
    port = int(digits) if len(digits) <= 6 else 0
    if not 1 <= port <= 65535:
        raise _InvalidLine(f"port not in 1..65535: {text!r}")
    return port


def _parse_path(text: str) -> str:
    if _CONTROL.search(text):
        if not _CONTROL.search(text.replace(" ", "")):  # only from a URL given as an argument
            raise _InvalidLine("a space in the file name (write it %20)")
        raise _InvalidLine("control characters in the file name")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise _InvalidLine("the file name is not valid text")
    path = text if text.startswith("/") else "/" + text
    if path.startswith("//"):
        # "//host/x" would read as an authority in a URL; the server sees a different path.
        raise _InvalidLine(f"file name starts with '//': {text!r}")
    return path


def _parse_line(text: str, line: int = 0) -> Command | None:
    """The command on a line; None for blank and comment lines; raises :class:`_InvalidLine`."""
    stripped = text.strip(_LINE_ENDS)
    fields = _FIELD_SEPARATOR.split(stripped) if stripped else []
    if not fields or fields[0].startswith("#"):
        return None
    method = fields[0].upper() if fields[0].isascii() else fields[0]
    if method not in METHODS:
        raise _InvalidLine(f"unknown method {fields[0]!r} (expected GET or POST)")
    if len(fields) < 2:
        raise _InvalidLine(f"missing file name after {method}")
    if _URL_START.match(fields[1]):
        if len(fields) > 2:
            raise _InvalidLine(f"unexpected text after the URL: {' '.join(fields[2:])!r}")
        return _parse_url(method, fields[1], line)
    if len(fields) < 3:
        raise _InvalidLine("missing host name")
    if len(fields) > 4:
        raise _InvalidLine(f"unexpected text after the port: {' '.join(fields[4:])!r}")
    path = _parse_path(fields[1])
    if fields[2].isdigit():
        raise _InvalidLine(
            f"{fields[2]!r} is a number, not a host: is the host missing?"
            f" (write: {method} {fields[1]} HOST {fields[2]})"
        )
    host = _parse_host(fields[2])
    port = _parse_port(fields[3]) if len(fields) == 4 else DEFAULT_PORT
    return Command(method, path, host, port, line)


def _parse_url(method: str, text: str, line: int = 0) -> Command:
    """The command for ``METHOD URL``; raises :class:`_InvalidLine`."""
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEME_PORTS:
        raise _InvalidLine(f"not an http:// or https:// URL: {text!r}")
    rest = rest.partition("#")[0]
    split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:split], rest[split:]
    if "@" in authority:
        raise _InvalidLine(f"user names and passwords in URLs are not supported: {text!r}")
    if authority.startswith("["):
        host_text, bracket, port_text = authority.partition("]")
        host_text += bracket
        if port_text and not port_text.startswith(":"):
            raise _InvalidLine(f"not a host and port: {authority!r}")
        port_text = port_text[1:]
    else:
        host_text, colon, port_text = authority.partition(":")
        if colon and not port_text:
            raise _InvalidLine(f"missing port number after ':' in {text!r}")
    if not host_text:
        raise _InvalidLine(f"no host in URL {text!r}")
    host = _parse_host(host_text)
    if port_text and not port_text.isdigit():
        raise _InvalidLine(f"not a port number: {port_text!r}")
    port = _parse_port(port_text) if port_text else SCHEME_PORTS[scheme]
    path = _parse_path(target or "/")
    return Command(method, path, host, port, line, scheme)


def command_for_url(method: str, url: str) -> Command:
    """The command for one URL given on the command line (``webclient get URL``): the same
    rules as a command-file line ``METHOD URL``; :class:`CommandFileError` when it is not one."""
    try:
        return _parse_url(method.upper(), url.strip(_LINE_ENDS))
    except _InvalidLine as exc:
        # Several URLs may be given: the sentence names this one, unless it already does.
        message = str(exc) if repr(url) in str(exc) else f"{exc} in {url!r}"
        raise CommandFileError(url, message=message) from None


def parse_commands(lines: Iterable[str], filename: str = "commands.txt") -> list[Command]:
    """Every command of a file, or :class:`CommandFileError` listing every invalid line."""
    return _parse_all(lines, filename)


def _parse_all(lines: Iterable[str | _InvalidLine], filename: str) -> list[Command]:
    """The commands of ``lines`` (an item may already be a line's error); see the limits."""
    commands: list[Command] = []
    errors: list[LineError] = []
    unlisted = 0
    for number, text in enumerate(lines, start=1):
        try:
            if isinstance(text, _InvalidLine):
                raise text
            command = _parse_line(text, number)
        except _InvalidLine as exc:
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append(LineError(number, str(exc)))
            else:
                unlisted += 1
            commands.clear()  # nothing will run: only the errors are kept
            continue
        if command is None or errors:
            continue
        if len(commands) == MAX_COMMANDS:
            raise CommandFileError(
                filename,
                message=f"{filename}: more than {MAX_COMMANDS:,} commands (split it into"
                " several files)",
            )
        commands.append(command)
    if errors:
        listed = CommandFileError(filename, errors)
        if not unlisted:
            raise listed
        raise CommandFileError(
            filename, errors, message=f"{listed}\n{filename}: {unlisted:,} more invalid lines"
        )
    return commands


def read_commands(file: BinaryIO, name: str = "<stdin>") -> list[Command]:
    """Parse a command file from an open binary stream (``webclient batch -`` reads stdin)
    with the rules of :func:`read_command_file`; ``name`` is what error lines start with."""
    try:
        return _parse_all(_file_lines(file, name), name)
    except OSError as exc:
        raise CommandFileError(name, message=f"{name}: cannot read: {exc.strerror}") from exc


def read_command_file(path: str | Path) -> list[Command]:
    """Read and parse a command file (UTF-8, with or without a BOM); unreadable files are a
    :class:`CommandFileError`.

    The file is read a line at a time, so its size costs no memory: only its commands are kept
    (at most :data:`MAX_COMMANDS`), a line longer than :data:`MAX_LINE_LENGTH` is an invalid
    line, and past :data:`MAX_LISTED_ERRORS` invalid lines are only counted.
    """
    name = str(path)
    try:
        with open(path, "rb") as file:
            return _parse_all(_file_lines(file, name), name)
    except OSError as exc:
        raise CommandFileError(name, message=f"{name}: cannot read: {exc.strerror}") from exc


def _file_lines(file: BinaryIO, name: str) -> Iterator[str | _InvalidLine]:
    """The lines of ``file`` as text, split on "\n" only (so line numbers are the ones an
    editor shows); an over-long line is skipped to its end and given as its error."""
    number = 0
    while raw := file.readline(MAX_LINE_LENGTH + 1):
        number += 1
        if number == 1:
            # A byte order mark at the start, as Windows editors write one, is not text.
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if len(raw) > MAX_LINE_LENGTH and not raw.endswith(b"\n"):
            while (rest := file.readline(MAX_LINE_LENGTH)) and not rest.endswith(b"\n"):
                pass
            yield _InvalidLine(f"line longer than {MAX_LINE_LENGTH:,} bytes")
            continue
        try:
            yield raw.decode("utf-8").removesuffix("\n")
        except UnicodeDecodeError as exc:
            raise CommandFileError(
                name, message=f"{name}:{number}: not UTF-8 text ({exc.reason})"
            ) from exc
