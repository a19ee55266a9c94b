"""Storing POST bodies as new files under the root.

Rules: the body streams into a temporary file beside its final name and is published only once it
arrived whole, with a hard link that fails rather than replace anything -- so a client that
disconnects leaves nothing, and an existing file is never overwritten (the upload takes a fresh
numbered name ``name-1.txt``, ``name-2.txt``, ...; ``Location`` says which). Folders named in the
path are created inside the root; a path escaping the root through a symlinked folder is refused.
A ``multipart/form-data`` body is a form upload instead: its file parts are stored (``_forms.py``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import Self
from urllib.parse import quote

from .config import ServerConfig
from .errors import HTTPError, PayloadTooLarge
from .handler import Handler
from .multipart import is_form_data
from .paths import MAX_NAME_BYTES, TEMP_PREFIX, numbered_name, resolve_inside, upload_segments
from .request import Request
from .response import Response

_log = logging.getLogger("webserver.error")

#: Permissions of a stored upload: readable by all, like a file copied into the folder.
UPLOAD_MODE = 0o644
#: Requested names whose next number is remembered; the memory is dropped past this many.
MAX_REMEMBERED_NAMES = 4096
#: Give up finding a free numbered name after this many tries (a folder of 10,000 copies is a bug).
MAX_NUMBERED_NAMES = 10_000


class Uploads(Handler):
    """POST stores the body at the request path under ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], *, max_size: int) -> None:
        self.root = Path(os.path.realpath(root))
        self.max_size = max_size
        #: Next number to try per requested path, so the thousandth upload of one name does not
        #: try a thousand links first. Only a hint: os.link still refuses any taken name.
        self._next_number: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: ServerConfig) -> Self:
        return cls(config.root, max_size=config.max_upload)

    def post(self, request: Request) -> Response:
        if is_form_data(request.headers.get("content-type")):
            # A form upload (curl -F, a browser form): each file part is stored; see _forms.py,
            # imported here because it builds on this module.
            from ._forms import store_form

            return store_form(self, request)
        segments = upload_segments(request.route_path)
        declared = request.body.length
        if declared is not None and declared > self.max_size:
            raise PayloadTooLarge(f"upload limit is {self.max_size} bytes", close=True)
        folder, created = self._make_folder(segments[:-1])
        try:
            stored = self._store(request, folder, segments[-1])
        except BaseException:
            _remove_folders(created)
            raise
        relative = stored.relative_to(self.root).as_posix()
        location = quote("/" + relative, safe="/")
        return Response.text(
            f"stored {relative} ({request.body.received} bytes)\n",
            200,
            headers=[("Location", location)],
        )

    def _make_folder(self, names: list[str]) -> tuple[Path, list[str]]:
        """Create the folders ``names`` under the root one level at a time -- no recursion, so no
        depth exhausts the stack; returns the innermost and those created, outermost first.

        Each level is resolved and checked to lie inside the root once it exists, so a symlink
        made meanwhile cannot lead the next ``mkdir`` out of it.
        """
        resolve_inside(self.root, names)  # a path out of the root is 404 before anything is made
        created: list[str] = []
        folder = self.root
        try:
            for depth, name in enumerate(names, 1):
                path = os.path.join(folder, name)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
                    created.append(path)
                folder = resolve_inside(self.root, names[:depth])
                if not folder.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
        except BaseException as exc:
            _remove_folders(created)
            if isinstance(exc, NotADirectoryError):
                raise HTTPError(
                    "a parent of the upload path is a file", status=409, close=True
                ) from None
            if isinstance(exc, OSError):
                raise _storage_error(exc) from exc
            raise
        return folder, created

    def _store(self, request: Request, folder: Path, name: str) -> Path:
        try:
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
        except OSError as exc:
            raise _storage_error(exc) from exc
        try:
            # mkstemp makes the file private (0600); a published upload is an ordinary file.
            os.fchmod(fd, UPLOAD_MODE)
            with os.fdopen(fd, "wb") as out:
                for chunk in request.body:
                    if request.body.received > self.max_size:
                        raise PayloadTooLarge(f"upload limit is {self.max_size} bytes", close=True)
                    out.write(chunk)
            key = str(folder / name)
            target, number = _publish(temp, folder, name, self._next_number.get(key, 1))
            if len(self._next_number) >= MAX_REMEMBERED_NAMES:
                self._next_number.clear()
            self._next_number[key] = number + 1
            return target
        except OSError as exc:
            raise _storage_error(exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _remove_folders(created: list[str]) -> None:
    """Remove the folders a failed upload created, innermost first; one that another upload
    filled meanwhile is not empty and stays."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _publish(temp: str, folder: Path, name: str, start: int) -> tuple[Path, int]:
    """Link ``temp`` at ``name``, or else at a free numbered variant from ``start`` on.

    Never replaces a file: ``os.link`` fails rather than overwrite. Returns the path and its
    number (0 for the name itself).
    """
    limit = _name_limit(folder)
    for n in (0, *range(max(start, 1), max(start, 1) + MAX_NUMBERED_NAMES)):
        target = folder / numbered_name(name, n, limit)
        try:
            os.link(temp, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise HTTPError("upload name too long", status=400) from None
            raise
        return target, n
    raise HTTPError("too many files with this name", status=409)


def _name_limit(folder: Path) -> int:
    """The longest file name ``folder``'s file system takes, in bytes (NAME_MAX)."""
    try:
        return min(os.pathconf(folder, "PC_NAME_MAX"), MAX_NAME_BYTES)
    except (OSError, ValueError):
        return MAX_NAME_BYTES


def _storage_error(exc: OSError) -> HTTPError:
    """Map a file-system failure to a status, logging what the client is not told."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        _log.error("upload failed, disk full: %s", exc)
        return HTTPError("no space left to store the upload", status=507, close=True)
    if exc.errno == errno.ENAMETOOLONG:
        return HTTPError("upload name too long", status=400, close=True)
    if isinstance(exc, NotADirectoryError):
        return HTTPError("a parent of the upload path is a file", status=409, close=True)
    _log.error("upload failed: %s", exc)
    return HTTPError("the upload could not be stored", status=500, close=True)
