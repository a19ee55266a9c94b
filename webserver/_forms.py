"""Storing the files of a ``multipart/form-data`` POST (``curl -F``, a browser's upload form).

Rules: the target names a folder -- a folder URL (``/docs/``), an existing folder without its
slash (``/docs``), or else a file URL, whose folder is used (``/docs/x.txt`` stores into
``/docs/``; each file keeps the name its part gives). The folder path obeys the plain POST's
rules (:func:`~webserver.paths.upload_segments`: 400 for ``..`` and the like, 403 for dot-names,
414 past the bounds; missing folders are created). Each part with a file name is stored under
that name made safe (:func:`safe_filename`), never overwriting: a taken name gets the plain
POST's numbered sibling (``name-1.txt``). Parts without a file name (plain fields) are not
stored; their names are listed in the answer. Every file goes first to a private temporary
file in the root's in-progress folder, as a plain upload's body does (``uploads.py``: never
served nor listed, and locked until the request ends -- one descriptor per file part, at most
``MAX_PARTS`` -- so a sibling's clean-up at start leaves it alone), and is published only once
the whole body has parsed, by the plain POST's own never-overwriting link; so a malformed body
(400) publishes nothing, and a failure while publishing removes what this request published.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from ._spool import locked_temp_file
from .errors import HTTPError, PayloadTooLarge
from .listing import wants_json
from .multipart import MultipartParser, PartData, PartEnd, PartStart, form_boundary
from .paths import MAX_NAME_BYTES, TEMP_PREFIX, resolve_inside, upload_segments
from .request import Request
from .response import Response
from .uploads import UPLOAD_MODE, Uploads, _remove_folders, _storage_error, in_progress_folder

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
    name = _bare(_SEPARATOR.split(_DRIVE.sub("", raw))[-1])
    stem, dot, suffix = name.partition(".")
    while len(f"{stem}{dot}{suffix}".encode()) > MAX_NAME_BYTES:
        if len(stem) > 1:
            stem = stem[:-1]
        else:
            suffix = suffix[:-1]
    name = _bare(f"{stem}{dot}{suffix}".rstrip("."))
    return name if name and not name.startswith(TEMP_PREFIX) else FALLBACK_NAME


def _bare(name: str) -> str:
    """``name`` without control characters, surrounding spaces, leading dots or a leading drive
    letter, removed until none is left: removing one can expose another (``" A:"`` is a drive
    once stripped, ``". .x"`` hidden once its first dot goes)."""
    while True:
        bare = _DRIVE.sub("", _CONTROL.sub("", name).strip().lstrip("."))
        if bare == name:
            return name
        name = bare


@dataclass(slots=True)
class _File:
    """A file part being received: its temporary file and the name it will be published at."""

    temp: str
    name: str
    #: The temporary's descriptor, open (so locked) until the form is published or discarded:
    #: the lock keeps a starting sibling's clean-up (``remove_abandoned_uploads``) away from it.
    fd: int
    #: Writes the part, through a second descriptor of the same open file, closed at the part's
    #: end: a finished part holds its lock, not a write buffer.
    out: BinaryIO | None = None
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
        _receive(handler, request, boundary, received)
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
    """Remove and close the temporary files (published files are hard links of their own),
    each removed while still locked."""
    for file in received.files:
        if file.out is not None:
            file.out.close()
            file.out = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file.temp)
        if file.fd >= 0:
            os.close(file.fd)
            file.fd = -1


def _folder_path(handler: Uploads, path: str) -> str:
    """The decoded URL path (no trailing slash) of the folder the files go to."""
    if path.endswith("/"):
        return path.rstrip("/")
    segments = upload_segments(path)
    if resolve_inside(handler.root, segments).is_dir():
        return path
    return path.rpartition("/")[0]


def _receive(handler: Uploads, request: Request, boundary: bytes, received: _Received) -> None:
    """Parse the whole body, each file part into its own temporary file in the in-progress
    folder."""
    parser = MultipartParser(boundary)
    current: _File | None = None
    try:
        temporaries = str(in_progress_folder(handler.root))
        for chunk in request.body:
            if request.body.received > handler.max_size:
                raise PayloadTooLarge(f"upload limit is {handler.max_size} bytes", close=True)
            for event in parser.feed(chunk):
                if isinstance(event, PartData):
                    if current is not None and current.out is not None:
                        current.out.write(event.data)
                        current.size += len(event.data)
                elif isinstance(event, PartStart):
                    current = _start(event, temporaries, received)
                elif isinstance(event, PartEnd) and current is not None and current.out:
                    current.out.close()
                    current.out = None
        parser.close()
    except OSError as exc:
        raise _storage_error(exc) from exc


def _start(event: PartStart, temporaries: str, received: _Received) -> _File | None:
    """Begin a part: a temporary file for a file part, a listed name for a field (a file input
    left empty, ``filename=""``, counts as a field)."""
    if not event.filename:
        received.fields.append(event.name)
        return None
    fd, temp = locked_temp_file(temporaries, TEMP_PREFIX)
    # Listed before anything can fail, so the temporary is removed whatever happens next.
    file = _File(temp, safe_filename(event.filename), fd)
    received.files.append(file)
    os.fchmod(fd, UPLOAD_MODE)  # private until now; a published upload is ordinary
    file.out = os.fdopen(os.dup(fd), "wb")
    return file


def _publish_all(handler: Uploads, folder: Path, files: list[_File]) -> list[tuple[Path, int]]:
    """Link each temporary at its name or a free numbered one (the plain POST's
    :meth:`~webserver.uploads.Uploads._link`); on a failure, remove what was published, so the
    request stores all of its files or none."""
    stored: list[tuple[Path, int]] = []
    try:
        for file in files:
            stored.append((handler._link(file.temp, folder, file.name), file.size))
    except BaseException:
        for target, _ in stored:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
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
