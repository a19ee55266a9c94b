"""Storing POST bodies as new files under the root, and PUT bodies at exactly their path.

Rules: an upload in progress is a private file (0600) in the one private folder of the root
(``IN_PROGRESS_FOLDER``, 0700: never served, listed, nor a valid upload name), locked with
``flock`` while its process writes it; a large body is spooled there by the server itself
(:meth:`Uploads.spool_folder`), so it is published without a copy. Only once the body arrived
whole is it published, with a hard link that fails rather than replace anything -- so a client
that disconnects leaves nothing, and an existing file is never overwritten (the upload takes a fresh
numbered name ``name-1.txt``, ``name-2.txt``, ...; ``Location`` says which). Folders named in the
path are created inside the root; a path escaping the root through a symlinked folder is refused.
A ``multipart/form-data`` body is a form upload instead: its file parts are stored (``_forms.py``).
At start the temporaries no live process holds (a killed process's) are removed
(:func:`remove_abandoned_uploads`); a sibling's (``--workers``) are locked and kept. A failed
upload removes the folders it created.

PUT (RFC 9110 §9.3.4) stores the body at exactly the request path: linked there when the name is
free (201 Created), else renamed over the file there (204 No Content) -- either way a reader
sees the old file or the new one whole, never a mix. Its preconditions (``If-Match`` with the
ETag GET sends, ``If-Unmodified-Since``, ``If-None-Match: *``) are evaluated against the file as
it is at that moment, and the check and the replacement are one step for the requests of this
process (``If-None-Match: *`` is exact across processes too: a link never replaces). A folder
or a symlink at that name is not replaced (409). POST answers 201 Created with ``Location``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self
from urllib.parse import quote

from ._spool import locked_temp_file, remove_unheld
from .conditional import make_etag
from .config import ServerConfig
from .errors import HTTPError, PayloadTooLarge
from .handler import Handler
from .headers import Headers
from .httpdate import parse_http_date
from .multipart import is_form_data
from .paths import MAX_NAME_BYTES, TEMP_PREFIX, numbered_name, resolve_inside, upload_segments
from .request import Request
from .response import Response

_log = logging.getLogger("webserver.error")

#: Permissions of a stored upload: readable by all, like a file copied into the folder.
UPLOAD_MODE = 0o644
#: The folder of the root holding uploads in progress: on the root's file system, so publishing
#: is a link; its name starts with the temporary prefix, so it is never served nor uploaded to.
IN_PROGRESS_FOLDER = TEMP_PREFIX + "in-progress"
#: Its permissions: only the server's user sees uploads before they are published.
IN_PROGRESS_MODE = 0o700
#: Requested names whose next number is remembered; the memory is dropped past this many.
MAX_REMEMBERED_NAMES = 4096
#: Give up finding a free numbered name after this many tries (a folder of 10,000 copies is a bug).
MAX_NUMBERED_NAMES = 10_000


class Uploads(Handler):
    """POST stores the body as a new file at the request path under ``root`` (or a numbered
    sibling), PUT at exactly that path; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], *, max_size: int) -> None:
        self.root = Path(os.path.realpath(root))
        self.max_size = max_size
        #: Next number to try per requested path, so the thousandth upload of one name does not
        #: try a thousand links first. Only a hint: os.link still refuses any taken name.
        self._next_number: dict[str, int] = {}
        #: Makes a PUT's precondition check and its replacement one step for this process.
        self._put_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ServerConfig) -> Self:
        """The handler for ``config``'s root, after removing what killed processes left there."""
        uploads = cls(config.root, max_size=config.max_upload)
        # Made now, so a listing or a scan of the tree sees it from the start.
        with contextlib.suppress(OSError):
            in_progress_folder(uploads.root)
        remove_abandoned_uploads(uploads.root)
        return uploads

    def spool_folder(self) -> str | None:
        """The in-progress folder: a large body spooled there is published by a link."""
        try:
            return str(in_progress_folder(self.root))
        except OSError:
            return None  # a read-only root: the body goes to the system's temporary folder

    def post(self, request: Request) -> Response:
        if is_form_data(request.headers.get("content-type")):
            # A form upload (curl -F, a browser form): each file part is stored; see _forms.py,
            # imported here because it builds on this module.
            from ._forms import store_form

            return store_form(self, request)
        segments = upload_segments(request.route_path)
        self._check_declared_length(request)
        folder, created = self._make_folder(segments[:-1])
        try:
            with self._body_file(request) as (temp, size):
                stored = self._link(temp, folder, segments[-1])
        except BaseException:
            _remove_folders(created)
            raise
        return self._created(stored, size)

    def put(self, request: Request) -> Response:
        """Store the body at exactly the request path; see the module docstring."""
        segments = upload_segments(request.route_path)
        self._check_declared_length(request)
        folder, created = self._make_folder(segments[:-1])
        target = folder / segments[-1]
        try:
            with self._body_file(request) as (temp, size):
                replaced, etag = self._put_in_place(temp, target, request.headers)
        except BaseException:
            _remove_folders(created)
            raise
        if replaced:
            return Response(204, [("ETag", etag)])
        response = self._created(target, size)
        response.headers.append(("ETag", etag))
        return response

    def _created(self, stored: Path, size: int) -> Response:
        """201 Created, with the stored file's URL path in ``Location``."""
        relative = stored.relative_to(self.root).as_posix()
        location = quote("/" + relative, safe="/")
        return Response.text(
            f"stored {relative} ({size} bytes)\n", 201, headers=[("Location", location)]
        )

    def _put_in_place(self, temp: str, target: Path, headers: Headers) -> tuple[bool, str]:
        """Publish ``temp`` at ``target`` if the request's preconditions hold there; whether a
        file was replaced, and the new file's ETag."""
        with self._put_lock:
            try:
                try:
                    current: os.stat_result | None = os.lstat(target)
                except FileNotFoundError:
                    current = None
                if current is not None and not stat.S_ISREG(current.st_mode):
                    raise HTTPError("a folder or a symlink has this name", status=409)
                if put_precondition_failed(headers, current):
                    raise HTTPError("precondition failed", status=412)
                try:
                    os.link(temp, target)
                    replaced = False
                except FileExistsError:
                    if (headers.get("if-none-match") or "").strip() == "*":
                        raise HTTPError("precondition failed", status=412) from None
                    os.rename(temp, target)
                    replaced = True
                return replaced, make_etag(os.lstat(target))
            except OSError as exc:
                raise _storage_error(exc) from exc

    def _check_declared_length(self, request: Request) -> None:
        declared = request.body.length
        if declared is not None and declared > self.max_size:
            raise PayloadTooLarge(f"upload limit is {self.max_size} bytes", close=True)

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

    @contextmanager
    def _body_file(self, request: Request) -> Iterator[tuple[str, int]]:
        """The whole body as a private file in the in-progress folder, and its size.

        A body the server spooled there is that very file, so publishing it is a link and never
        a copy; any other is written there now. A file this made is removed on exit (a link to
        it stays); a spooled one is removed by the server.
        """
        spooled = request.body.spooled_path
        if spooled is not None and os.path.dirname(spooled) == str(self.root / IN_PROGRESS_FOLDER):
            try:
                size = os.stat(spooled).st_size
                if size > self.max_size:
                    raise PayloadTooLarge(f"upload limit is {self.max_size} bytes", close=True)
                # Private until now; a published upload is an ordinary file.
                os.chmod(spooled, UPLOAD_MODE)
                yield spooled, size
            except OSError as exc:
                raise _storage_error(exc) from exc
            return
        with self._written_file(request.body) as written:
            yield written

    @contextmanager
    def _written_file(self, chunks: Iterable[bytes]) -> Iterator[tuple[str, int]]:
        """``chunks`` written to a new private file in the in-progress folder, locked while this
        process holds it; the file and its size, removed on exit."""
        try:
            fd, temp = locked_temp_file(str(in_progress_folder(self.root)), TEMP_PREFIX)
        except OSError as exc:
            raise _storage_error(exc) from exc
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise PayloadTooLarge(f"upload limit is {self.max_size} bytes", close=True)
                    out.write(chunk)
                out.flush()
                os.fchmod(out.fileno(), UPLOAD_MODE)
                yield temp, size
        except OSError as exc:
            raise _storage_error(exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _link(self, temp: str, folder: Path, name: str) -> Path:
        """Publish ``temp`` as ``name`` in ``folder`` or a free numbered variant of it."""
        key = str(folder / name)
        try:
            target, number = _publish(temp, folder, name, self._next_number.get(key, 1))
        except OSError as exc:
            raise _storage_error(exc) from exc
        if len(self._next_number) >= MAX_REMEMBERED_NAMES:
            self._next_number.clear()
        self._next_number[key] = number + 1
        return target


def in_progress_folder(root: Path) -> Path:
    """The private folder of ``root`` for uploads in progress, created (0700) if missing;
    ``OSError`` when it cannot be, or when something other than a folder has its name."""
    folder = root / IN_PROGRESS_FOLDER
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, IN_PROGRESS_MODE)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):  # a symlink planted there is refused, never followed
        raise FileExistsError(errno.EEXIST, "not a folder", str(folder))
    if stat.S_IMODE(st.st_mode) != IN_PROGRESS_MODE:
        os.chmod(folder, IN_PROGRESS_MODE)  # made by hand, or by another umask: private again
    return folder


def remove_abandoned_uploads(root: Path) -> int:
    """Remove the uploads in progress (and spooled bodies) of ``root`` that no live process
    holds; how many. Run at start: a process killed mid-upload leaves its files behind, and
    nothing else would ever remove them; a live sibling's (``--workers``) are locked and kept.
    Never raises: a failure is a warning in the error log.
    """
    folder = root / IN_PROGRESS_FOLDER
    try:
        removed = remove_unheld(str(folder))
    except OSError as exc:
        _log.warning("cannot look for abandoned uploads in %s: %s", folder, exc.strerror)
        return 0
    if removed:
        _log.warning("removed %d abandoned uploads from %s", removed, folder)
    return removed


def put_precondition_failed(headers: Headers, current: os.stat_result | None) -> bool:
    """Whether a PUT's preconditions fail against the file now at its path (``current``, None
    when there is none), in the order of RFC 9110 §13.2.2: ``If-Match`` (strong comparison
    with the ETag GET sends; ``*``: any file), else ``If-Unmodified-Since``; then
    ``If-None-Match`` (``*`` or a listed ETag: the file must not exist or differ)."""
    etag = make_etag(current) if current is not None else None
    if_match = headers.get("if-match")
    if if_match is not None:
        if etag is None:
            return True
        if if_match.strip() != "*" and etag not in _strong_tags(if_match):
            return True
    else:
        since = headers.get("if-unmodified-since")
        since_time = parse_http_date(since) if since is not None else None
        if current is not None and since_time is not None and int(current.st_mtime) > since_time:
            return True
    if_none_match = headers.get("if-none-match")
    if if_none_match is None or etag is None:
        return False
    listed = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return if_none_match.strip() == "*" or etag in listed


def _strong_tags(field: str) -> set[str]:
    """The entity-tags of an ``If-Match`` value that can match strongly (weak ones never do)."""
    return {tag.strip() for tag in field.split(",") if not tag.strip().startswith("W/")}


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
    if isinstance(exc, IsADirectoryError):
        return HTTPError("a folder has this name", status=409, close=True)
    _log.error("upload failed: %s", exc)
    return HTTPError("the upload could not be stored", status=500, close=True)
