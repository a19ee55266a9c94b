"""Resuming interrupted downloads: ``<name>.part`` beside the destination and its record.

Rules: a download from the network of :data:`RESUME_MIN_SIZE` bytes or more (by its
Content-Length) whose response carries a validator ``If-Range`` may use (a strong ETag, else a
Last-Modified at least a second older than its Date) is written to
``<name>.part`` beside its destination (mode 0600, locked while written) with the URL and the
validator in ``<name>.part.meta``, written first; when the body does not arrive whole both stay,
and the next run asks for the rest (``Range`` + ``If-Range``). A ``.part`` is only ever touched
when its ``.meta`` names the same URL (a user's own ``notes.part`` is not ours), and one older than
:data:`PART_MAX_AGE` is removed instead of resumed. :class:`~webclient._outputs.OutputFile` writes
them.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ._folders import O_FOLDER, remove_unlocked
from ._freshness import HeaderList, header_value
from ._shared.grammar import FIELD_VALUE
from ._shared.httpdate import parse_http_date

#: An interrupted download older than this is removed rather than resumed: a day is enough to
#: come back to a failed batch, and short enough not to hoard disk space for one never rerun.
PART_MAX_AGE = 24 * 60 * 60
#: Smallest body written where a later run can resume it: a smaller one costs about as much to
#: fetch again as to resume, and each resumable body costs its record (create, write, unlink),
#: measurable in a batch of many small files.
RESUME_MIN_SIZE = 1024 * 1024
#: ``<name>.part`` holds the body so far; ``<name>.part.meta`` its URL and validator.
PART_SUFFIX = ".part"
META_SUFFIX = ".part.meta"
#: Largest metadata record read: a URL and a validator, never near this.
_META_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Partial:
    """An interrupted download found beside its destination: ``size`` bytes, and the
    validator of the response they came from (for ``If-Range``)."""

    size: int
    validator: str

    def request_headers(self) -> tuple[tuple[str, str], ...]:
        """What asks for the rest, only if the resource is still the same (RFC 9110 §14.2,
        §13.1.5): otherwise the server sends all of it with a 200."""
        return (("Range", f"bytes={self.size}-"), ("If-Range", self.validator))


@dataclass(frozen=True)
class Resume:
    """How an :class:`OutputFile` uses ``<name>.part``: ``offset`` bytes of it are kept (0: it
    starts afresh); ``validator`` (None: the response has none) lets a later run resume it."""

    url: str
    validator: str | None
    offset: int = 0


def if_range_validator(headers: HeaderList) -> str | None:
    """The validator ``If-Range`` may carry for a response: a strong ETag, else a
    Last-Modified that is strong because it is a second or more older than the Date
    (RFC 9110 §13.1.5, §8.8.2.2); None when there is neither."""
    etag = header_value(headers, "etag")
    if etag is not None and etag.strip().startswith('"'):
        return etag.strip()
    modified = header_value(headers, "last-modified")
    date = header_value(headers, "date")
    now = time.time()
    modified_at = parse_http_date(modified, now)
    date_at = parse_http_date(date, now)
    if modified is None or modified_at is None or date_at is None or date_at - modified_at < 1:
        return None
    return modified.strip()


def content_range_start(value: str | None) -> int | None:
    """The first byte position of ``Content-Range: bytes FIRST-LAST/LENGTH``; None otherwise."""
    match = re.fullmatch(r"\s*bytes\s+([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)\s*", value or "")
    if match is None or int(match.group(2)) < int(match.group(1)):
        return None
    return int(match.group(1))


def has_partials(folder: str) -> bool:
    """Whether ``folder`` holds any ``.part.meta`` record: one listing spares a batch of many
    files a lookup per file when there is nothing to resume (the usual case)."""
    try:
        with os.scandir(folder) as entries:
            return any(e.name.endswith(META_SUFFIX) for e in entries)
    except OSError:
        return False  # not there (yet), or unreadable: nothing to resume from it


def find_partial(destination: Path, url: str, *, now: float | None = None) -> Partial | None:
    """The interrupted download of ``url`` beside ``destination``, if there is a usable one."""
    folder, name = os.path.dirname(destination), destination.name
    meta = read_meta(os.path.join(folder, name + META_SUFFIX))
    validator = None if meta is None else meta.get("validator")
    if meta is None or meta.get("url") != url or not isinstance(validator, str):
        return None
    if not validator or not re.fullmatch(FIELD_VALUE, validator):
        return None  # a damaged record: what it names could not even be sent as If-Range
    try:
        st = os.stat(os.path.join(folder, name + PART_SUFFIX), follow_symlinks=False)
    except OSError:
        return None
    limit = (time.time() if now is None else now) - PART_MAX_AGE
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_mtime < limit:
        return None
    return Partial(st.st_size, validator)


def read_meta(path: str, folder_fd: int | None = None) -> dict[str, object] | None:
    import json

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a pipe: no waiting
    try:
        fd = os.open(path, flags, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = json.loads(file.read(_META_LIMIT))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def forget_partial(destination: Path) -> None:
    """Remove the ``.part`` of ``destination`` and its record (a download that restarted)."""
    folder, name = os.path.dirname(destination), destination.name
    for suffix in (PART_SUFFIX, META_SUFFIX):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name + suffix))


def remove_stale_parts(folder: str, *, now: float | None = None) -> int:
    """Remove the interrupted downloads in ``folder`` older than :data:`PART_MAX_AGE` (those
    with a ``.part.meta`` record, and not locked by a live run); how many were removed."""
    limit = (time.time() if now is None else now) - PART_MAX_AGE
    try:
        folder_fd = os.open(folder, O_FOLDER)
    except OSError:
        return 0
    removed = 0
    try:
        with os.scandir(folder_fd) as entries:
            metas = [e.name for e in entries if e.name.endswith(META_SUFFIX) and e.is_file()]
        for meta in metas:
            removed += _remove_stale_part(folder_fd, meta, limit)
    except OSError:
        pass  # an unreadable folder: the downloads into it report their own errors
    finally:
        os.close(folder_fd)
    return removed


def _remove_stale_part(folder_fd: int, meta: str, limit: float) -> int:
    part = meta[: -len(META_SUFFIX)] + PART_SUFFIX
    try:
        times = [os.stat(meta, dir_fd=folder_fd, follow_symlinks=False).st_mtime]
        with contextlib.suppress(FileNotFoundError):
            times.append(os.stat(part, dir_fd=folder_fd, follow_symlinks=False).st_mtime)
    except OSError:
        return 0
    if max(times) >= limit:
        return 0
    removed = remove_unlocked(folder_fd, part)
    with contextlib.suppress(OSError):
        os.unlink(meta, dir_fd=folder_fd)
    return removed or 1
