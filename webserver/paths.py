"""Turning request targets into file-system paths, and refusing the ones that must not be.

Rules: the path is percent-decoded exactly once (``%252e`` stays ``%2e``, a literal file name); it
must be UTF-8 without NUL. For files, backslashes and drive letters are refused (400) because they
mean something else on some file systems; anything that resolves outside the root -- ``..``,
absolute paths, symlinks pointing out -- is reported as not found, so a client learns nothing
about what exists outside. Containment compares resolved real paths, never string prefixes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from .errors import BadRequest, HTTPError, NotFound

#: File and folder names longer than this are refused; it is the limit of common file systems.
MAX_NAME_BYTES = 255
#: Most segments in an upload's path (folders and the name). Each is a folder to create and a
#: step of every path resolution; real trees (even ``node_modules``) stay well below, and a
#: 2,000-segment path once exhausted ``Path.mkdir``'s recursion.
MAX_UPLOAD_DEPTH = 64
#: Longest upload path, in bytes of UTF-8 after decoding. Joined to the root it stays well under
#: Linux's PATH_MAX (4,096 bytes), so every system call on the stored file accepts its path.
MAX_UPLOAD_PATH_BYTES = 1024
#: Status for an upload path over either bound: the target is longer than the server is willing
#: to interpret (RFC 9110 §15.5.15), and the fix for the client is the same -- a shorter path.
UPLOAD_PATH_TOO_LONG = 414
#: Upload temporaries carry this prefix; the static handler never serves them.
TEMP_PREFIX = ".webserver-upload-"
#: The one hidden folder served even without ``--show-hidden`` (RFC 8615: ACME challenges,
#: security.txt and the like live there and must be reachable).
WELL_KNOWN = ".well-known"

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_target(target: str) -> tuple[str, str]:
    """The raw path and query of an origin-form or absolute-form target (RFC 9112 §3.2)."""
    if target == "*":
        return "*", ""
    if not target.startswith("/"):
        parts = urlsplit(target)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise BadRequest(f"request target is not a path: {target[:80]!r}")
        return parts.path or "/", parts.query
    path, _, query = target.partition("?")
    return path, query


def decode_path(raw: str) -> str:
    """Percent-decode once; the result must be UTF-8 text without NUL."""
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("path is not UTF-8") from None
    if "\x00" in decoded:
        raise BadRequest("path contains NUL")
    return decoded


def file_segments(path: str) -> list[str]:
    """The non-empty segments of a decoded path, refusing what cannot name a portable file."""
    if "\\" in path:
        raise BadRequest("backslash in path")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    for segment in segments:
        if _DRIVE.match(segment):
            raise BadRequest("drive letter in path")
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            raise BadRequest("path segment too long")
    return segments


def is_hidden(name: str) -> bool:
    """A dot-name (``.git``, ``.env``): hidden unless the server is told to show them."""
    return name.startswith(".") and name != ".."


def hidden_refused(segments: list[str] | tuple[str, ...], *, show_hidden: bool) -> bool:
    """Whether a path through ``segments`` must be answered as if nothing were there.

    Upload temporaries are always refused; other dot-names unless ``show_hidden``; a path whose
    first segment is ``.well-known`` is served when nothing after it is hidden.
    """
    if any(s.startswith(TEMP_PREFIX) for s in segments):
        return True
    if show_hidden:
        return False
    start = 1 if segments and segments[0] == WELL_KNOWN else 0
    return any(is_hidden(s) for s in segments[start:])


def resolve_inside(root: Path, segments: list[str]) -> Path:
    """The real path that ``segments`` name under ``root``; ``NotFound`` if it lies outside.

    ``root`` must already be a resolved real path. Symlinks are followed, then checked: a link to
    a file inside the root is served, a link that points out is not.
    """
    candidate = os.path.realpath(os.path.join(root, *segments))
    if os.path.commonpath((root, candidate)) != str(root):
        raise NotFound()
    return Path(candidate)


def upload_segments(path: str) -> list[str]:
    """Check an upload's target name strictly: 400 for anything ambiguous or hostile.

    Unlike reads, an upload name may not contain ``.``/``..`` or empty segments, control
    characters, or start with the temporary-file prefix: the stored name must be exactly the one
    asked for, or a numbered sibling of it. A path deeper than ``MAX_UPLOAD_DEPTH`` segments or
    longer than ``MAX_UPLOAD_PATH_BYTES`` is 414, checked first so no work scales with it.
    """
    if len(path.encode("utf-8")) > MAX_UPLOAD_PATH_BYTES:
        raise HTTPError(
            f"upload path longer than {MAX_UPLOAD_PATH_BYTES} bytes", status=UPLOAD_PATH_TOO_LONG
        )
    if path.count("/") > MAX_UPLOAD_DEPTH:
        raise HTTPError(
            f"upload path deeper than {MAX_UPLOAD_DEPTH} segments", status=UPLOAD_PATH_TOO_LONG
        )
    if path.endswith("/"):
        raise BadRequest("upload target names a folder")
    segments = path.split("/")[1:]
    if not segments:
        raise BadRequest("upload target is empty")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise BadRequest("empty, '.' or '..' segment in upload name")
        if _CONTROL.search(segment):
            raise BadRequest("control character in upload name")
        if "\\" in segment or _DRIVE.match(segment):
            raise BadRequest("backslash or drive letter in upload name")
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            raise BadRequest("upload name segment longer than 255 bytes")
        if segment.startswith(TEMP_PREFIX):
            raise BadRequest("reserved upload name")
        if segment.startswith("."):
            # Hidden names are not served by default, so an upload there could never be read
            # back -- and .htaccess, .git/hooks or .env are what an attacker would write.
            raise HTTPError("names starting with '.' are hidden and cannot be uploaded", status=403)
    return segments


def numbered_name(name: str, n: int, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``report.txt`` → ``report-1.txt``, ``a.tar.gz`` → ``a-1.tar.gz``, ``.env`` → ``.env-1``.

    The result fits in ``max_bytes`` of UTF-8 (the file system's name limit), so a name that was
    accepted is never refused once numbered: the stem loses whole characters from its end to make
    room for the number, down to one character; only then does the suffix lose characters.
    """
    if n == 0:
        return name
    stem, dot, suffix = name.lstrip(".").partition(".")
    lead = name[: len(name) - len(name.lstrip("."))]
    number = f"-{n}"
    while _utf8_len(lead, stem, number, dot, suffix) > max_bytes and len(stem) > 1:
        stem = stem[:-1]
    while _utf8_len(lead, stem, number, dot, suffix) > max_bytes and suffix:
        suffix = suffix[:-1]
    return f"{lead}{stem}{number}{dot}{suffix}"


def _utf8_len(*parts: str) -> int:
    return sum(len(part.encode("utf-8")) for part in parts)
