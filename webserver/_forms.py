"""Storing the files of a ``multipart/form-data`` POST (``curl -F``, a browser's upload form).

Rules: the target names a folder -- a folder URL (``/docs/``), an existing folder without its
slash (``/docs``), or else a file URL, whose folder is used (``/docs/x.txt`` stores into
``/docs/``; each file keeps the name its part gives). The folder path obeys the plain POST's
rules (:func:`~webserver.paths.upload_segments`: 400 for ``..`` and the like, 403 for dot-names,
414 past the bounds; missing folders are created). Each part with a file name is stored under
that name made safe (:func:`safe_filename`), never overwriting: a taken name gets the plain
POST's numbered sibling (``name-1.txt``). Parts without a file name (plain fields) are not
stored; their names are listed in the answer. Every file goes to a temporary file in the
folder first and is published only once the whole body has parsed, so a malformed body (400)
publishes nothing; a failure while publishing removes what this request published.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .errors import HTTPError, PayloadTooLarge
from .listing import wants_json
from .multipart import MultipartParser, PartData, PartEnd, PartStart, form_boundary
from .paths import MAX_NAME_BYTES, TEMP_PREFIX, resolve_inside, upload_segments
from .request import Request
from .response import Response
from .uploads import (
    MAX_REMEMBERED_NAMES,
    UPLOAD_MODE,
    Uploads,
    _publish,
    _remove_folders,
    _storage_error,
)

#: The name a file part gets when nothing of its own name is left once made safe (``..``).
FALLBACK_NAME = "upload"

_SEPARATOR = re.compile(r"[/\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_filename(raw: str) -> str:
    """The name a file part is stored under: its last path segment (``../../etc/passwd`` →
    ``passwd``, ``C:\\Users\\me\\a.txt`` → ``a.txt``), without control characters, leading dots
    (a stored file is never hidden: ``.htaccess`` → ``htaccess``) or surrounding spaces, cut
    to 255 bytes of UTF-8 keeping its suffix; ``upload`` when nothing is left."""
    name = _SEPARATOR.split(_DRIVE.sub("", raw))[-1]
    name = _CONTROL.sub("", name).strip().lstrip(".").strip()
    stem, dot, suffix = name.partition(".")
    while len(f"{stem}{dot}{suffix}".encode()) > MAX_NAME_BYTES:
        if len(stem) > 1:
            stem = stem[:-1]
        else:
            suffix = suffix[:-1]
    name = f"{stem}{dot}{suffix}".rstrip(".")
    return name if name and not name.startswith(TEMP_PREFIX) else FALLBACK_NAME


@dataclass(slots=True)
class _File:
    """A file part being received: its temporary file and the name it will be published at."""

    temp: str
    name: str
    out: BinaryIO | None
    size: int = 0


@dataclass(slots=True)
class _Received:
    """What a form carried: its files (as temporaries) and the names of its other fields."""

    files: list[_File] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)


def store_form(handler: Uploads, request: Request) -> Response:
    """Store the file parts of a ``multipart/form-data`` POST; see the module docstring."""
    boundary = form_boundary(request.headers.get("content-type") or "")
    prefix = _folder_path(handler, request.route_path)
    folder, created = handler._make_folder(upload_segments(prefix + "/x")[:-1])
    received = _Received()
    try:
        _receive(handler, request, boundary, folder, received)
        if not received.files:
            raise HTTPError("the form carries no file", status=400)
        for file in received.files:
            upload_segments(f"{prefix}/{file.name}")  # the path bounds hold for each file
        stored = _publish_all(handler, folder, received.files)
    except BaseException:
        _discard(received)
        _remove_folders(created)
        raise
    _discard(received)
    return _answer(request, handler.root, stored, received)


def _discard(received: _Received) -> None:
    """Close and remove the temporary files (published files are hard links of their own)."""
    for file in received.files:
        if file.out is not None:
            file.out.close()
            file.out = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file.temp)


def _folder_path(handler: Uploads, path: str) -> str:
    """The decoded URL path (no trailing slash) of the folder the files go to."""
    if path.endswith("/"):
        return path.rstrip("/")
    segments = upload_segments(path)
    if resolve_inside(handler.root, segments).is_dir():
        return path
    return path.rpartition("/")[0]


def _receive(
    handler: Uploads, request: Request, boundary: bytes, folder: Path, received: _Received
) -> None:
    """Parse the whole body, each file part into its own temporary file in ``folder``."""
    parser = MultipartParser(boundary)
    current: _File | None = None
    try:
        for chunk in request.body:
            if request.body.received > handler.max_size:
                raise PayloadTooLarge(f"upload limit is {handler.max_size} bytes", close=True)
            for event in parser.feed(chunk):
                if isinstance(event, PartData):
                    if current is not None and current.out is not None:
                        current.out.write(event.data)
                        current.size += len(event.data)
                elif isinstance(event, PartStart):
                    current = _start(event, folder, received)
                elif isinstance(event, PartEnd) and current is not None and current.out:
                    current.out.close()
                    current.out = None
        parser.close()
    except OSError as exc:
        raise _storage_error(exc) from exc


def _start(event: PartStart, folder: Path, received: _Received) -> _File | None:
    """Begin a part: a temporary file for a file part, a listed name for a field (a file input
    left empty, ``filename=""``, counts as a field)."""
    if not event.filename:
        received.fields.append(event.name)
        return None
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
    # Listed before anything can fail, so the temporary is removed whatever happens next.
    file = _File(temp, safe_filename(event.filename), None)
    received.files.append(file)
    try:
        os.fchmod(fd, UPLOAD_MODE)  # mkstemp makes it 0600; a published upload is ordinary
    finally:
        file.out = os.fdopen(fd, "wb")
    return file


def _publish_all(handler: Uploads, folder: Path, files: list[_File]) -> list[tuple[Path, int]]:
    """Link each temporary at its name or a free numbered one; on a failure, remove what was
    published, so the request stores all of its files or none."""
    stored: list[tuple[Path, int]] = []
    try:
        for file in files:
            key = str(folder / file.name)
            target, number = _publish(
                file.temp, folder, file.name, handler._next_number.get(key, 1)
            )
            stored.append((target, file.size))
            if len(handler._next_number) >= MAX_REMEMBERED_NAMES:
                handler._next_number.clear()
            handler._next_number[key] = number + 1
    except BaseException as exc:
        for target, _ in stored:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
        if isinstance(exc, OSError):
            raise _storage_error(exc) from exc
        raise
    return stored


def _answer(
    request: Request, root: Path, stored: list[tuple[Path, int]], received: _Received
) -> Response:
    """201 Created, ``Location`` of the first file, and a list of what was stored: JSON when
    the client asks for it, else one line per file."""
    files = [
        {
            "name": path.name,
            "location": quote("/" + path.relative_to(root).as_posix(), safe="/"),
            "size": size,
        }
        for path, size in stored
    ]
    headers = [("Location", str(files[0]["location"]))]
    if wants_json(request.query, request.headers.get("accept")):
        text = json.dumps({"stored": files, "ignored_fields": received.fields}) + "\n"
        return Response.text(text, 201, content_type="application/json", headers=headers)
    lines = [f"stored {f['location']} ({f['size']} bytes)" for f in files]
    lines += [f"ignored field {name!r}" for name in received.fields]
    return Response.text("\n".join(lines) + "\n", 201, headers=headers)
