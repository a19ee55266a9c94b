"""Running a parsed command file: requests through the client, bodies to files, a report.

Rules: GET bodies are saved under the output folder at the command's file name, through a temporary
file renamed into place once complete, and only for 2xx answers; a failed download leaves neither
its temporary file nor the folders created for it (when empty); a name that resolves outside the
output folder is refused before anything is sent; POST bodies are read from the file-name relative
to the current directory and streamed, and only from inside the upload root (the command file's
folder unless ``--upload-root`` names another), symlinks resolved; a local name the system refuses
is one error line; one failed command never stops the others; reports go to stderr in command-file
order whatever order the work finished in, bodies to stdout (binary bodies are not written to a
terminal). Commands saving to one file behave as if run one after the other in command-file order:
their complete bodies wait in their temporary files and are renamed into place in that order, so
each prints its own body and the last successful one is the file left. When stdout or stderr is
closed by its reader, the run stops quietly (nothing more is sent or reported).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import unquote

from ._status import CacheStatus
from .client import Client, Request, Response, Result
from .commands import Command
from .config import human_size
from .errors import LocalFileError, UnsafePathError, WebClientError

#: Transfers at least this large get a progress bar on a terminal.
PROGRESS_THRESHOLD = 1024 * 1024
#: Bytes looked at to tell text from binary when the Content-Type does not say.
SNIFF_SIZE = 8192
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "image/svg+xml")


def destination(out_dir: Path, name: str) -> Path:
    """Where a body named ``name`` is saved; UnsafePathError when that is outside ``out_dir``."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in name) or not name:
        raise UnsafePathError(f"refusing to write {name!r}: not a usable file name")
    try:
        root = out_dir.resolve()
        target = (root / name).resolve()
    except RuntimeError as exc:  # Python 3.11 reports a loop of symlinks this way
        raise UnsafePathError(f"refusing to write {name!r}: {exc}") from exc
    if target == root or not target.is_relative_to(root):
        raise UnsafePathError(f"refusing to write {name!r}: it is outside {out_dir}")
    return target


class Destinations:
    """:func:`destination` for many names of one run, resolving each folder once.

    A name made of plain components (no empty, ``.`` or ``..`` part) whose last component is not
    a symlink lands at its resolved folder joined with that component, which is what resolving
    the whole path gives; any other name takes :func:`destination` itself.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._root: str | None = None
        #: Resolved folders (relative name -> real path), only those inside the root.
        self._folders: dict[str, str] = {}

    @property
    def root(self) -> str | None:
        """The output folder, resolved (once); None when it cannot be (a loop of symlinks)."""
        if self._root is None:
            try:
                self._root = os.fspath(self.out_dir.resolve())
            except RuntimeError:  # Python 3.11 reports a loop of symlinks this way
                return None
        return self._root

    def __call__(self, name: str) -> Path:
        if not name or any(ord(c) < 0x20 or c == "\x7f" for c in name):
            return destination(self.out_dir, name)
        folder_name, _, last = name.rpartition("/")
        if last in ("", ".", "..") or (
            folder_name and any(p in ("", ".", "..") for p in folder_name.split("/"))
        ):
            return destination(self.out_dir, name)
        root = self.root
        if root is None:
            return destination(self.out_dir, name)  # (which says why)
        folder = self._folders.get(folder_name)
        if folder is None:
            if not folder_name:
                folder = root
            else:
                folder = os.path.realpath(os.path.join(root, folder_name))
                if not folder.startswith(root.rstrip("/") + "/") or os.path.islink(folder):
                    # (still a link once resolved: a loop, which destination() reports)
                    return destination(self.out_dir, name)
            self._folders[folder_name] = folder
        target = os.path.join(folder, last)
        if os.path.islink(target):
            return destination(self.out_dir, name)
        return Path(target)


#: Distinguishes the temporary files of this process from those of others.
_TEMP_TAG = f"{os.getpid():x}{os.urandom(3).hex()}"
_temp_numbers = itertools.count()
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


#: Opens one folder of a path, never through a symbolic link.
_O_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: The names :func:`create_temp` gives (``.<name>.<tag><number>.part``).
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{7,}\.part")
#: A temporary file older than this, and not locked, was left by a run that was killed: a live
#: run holds the lock of each file it writes, and writes it within its read timeout.
STALE_TEMP_AGE = 10 * 60


def file_mode() -> int:
    """The mode a new file gets here, ``0o666 & ~umask``, as ``curl -o`` and ``wget`` leave it.

    The umask is read from ``/proc/self/status`` where there is one: ``os.umask`` can only read
    it by setting it, which races with other threads creating files.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o666 & ~mask


def create_temp(folder_fd: int, prefix: str) -> tuple[int, str]:
    """A new file ``prefix<unique>.part`` in the folder open as ``folder_fd``, open for writing
    (mode 0600, O_EXCL) and locked until closed, so no other run takes it for a leftover."""
    for _ in range(100):
        name = f"{prefix}{_TEMP_TAG}{next(_temp_numbers):x}.part"
        try:
            fd = os.open(name, _O_CREATE, 0o600, dir_fd=folder_fd)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # a file system without locks: the age still protects
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, name
    raise FileExistsError("no unused temporary name")


def remove_stale_temps(folder: str, *, now: float | None = None) -> int:
    """Remove the temporary files of killed runs from ``folder`` (see :data:`STALE_TEMP_AGE`);
    how many were removed. Files another process holds locked are left alone."""
    limit = (time.time() if now is None else now) - STALE_TEMP_AGE
    try:
        folder_fd = os.open(folder, _O_FOLDER)
    except OSError:
        return 0  # not there (yet), or not a folder: nothing to clean
    removed = 0
    try:
        with os.scandir(folder_fd) as entries:
            names = [
                e.name
                for e in entries
                if _TEMP_NAME.fullmatch(e.name)
                and e.is_file(follow_symlinks=False)
                and e.stat(follow_symlinks=False).st_mtime < limit
            ]
        for name in names:
            removed += _remove_unlocked(folder_fd, name)
    except OSError:
        pass  # an unreadable folder: the downloads into it report their own errors
    finally:
        os.close(folder_fd)
    return removed


def _remove_unlocked(folder_fd: int, name: str) -> int:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=folder_fd
        )
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # a live run is writing it
        os.unlink(name, dir_fd=folder_fd)
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


class CreatedFolders:
    """The folders a run created under its output folder, so that a download that fails can
    remove those it leaves empty (shared by the run's threads); and the one way folders under
    ``root`` are opened for writing: component by component, never through a symbolic link.

    ``root`` is the resolved output folder (``None``: the file system root). Names were checked
    against it before the request was sent; ``root`` is opened once and held until
    :meth:`close`, and each folder under it is opened with ``O_NOFOLLOW`` relative to its
    parent, so a folder swapped for a symlink since then is refused rather than followed out of
    ``root``. ``root`` itself is not removed while held: when this run created it, :meth:`close`
    removes it if it is still empty.
    """

    def __init__(self, root: str | None = None) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self.root = (root or "/").rstrip("/") or "/"
        self._root_fd: int | None = None

    def close(self) -> None:
        """Let go of ``root``; remove it (and its parents) if this run created them and they
        are empty."""
        with self._lock:
            fd, self._root_fd = self._root_fd, None
        if fd is not None:
            os.close(fd)
        self._remove_created(self.root, stop=None)

    def hold(self) -> None:
        """Open ``root`` now if it exists, so that what later happens to its path (renamed,
        replaced by a symlink) does not change where bodies go."""
        with self._lock:
            if self._root_fd is None:
                with contextlib.suppress(OSError):
                    self._root_fd = os.open(self.root, _O_FOLDER)

    def _root(self) -> int:
        with self._lock:
            if self._root_fd is None:
                try:
                    self._root_fd = os.open(self.root, _O_FOLDER)
                except FileNotFoundError:
                    self._make(self.root)
                    self._root_fd = os.open(self.root, _O_FOLDER)
            return self._root_fd

    def open(self, folder: str) -> int:
        """A descriptor of ``folder`` (absolute, under :attr:`root`), creating missing folders.

        Raises :class:`UnsafePathError` when a folder on the way is now a symlink or not a
        folder, and ``OSError`` for what the system refuses.
        """
        root = self.root
        if folder == root:
            parts: list[str] = []
        elif folder.startswith(root if root == "/" else root + "/"):
            parts = folder[len(root) :].strip("/").split("/")
        else:
            raise UnsafePathError(f"refusing to write in {folder}: it is outside {root}")
        fd = os.dup(self._root())  # (closed by the caller, like the folders below)
        current = root.rstrip("/")
        try:
            for part in parts:
                current = f"{current}/{part}"
                child = self._open_child(fd, part, current)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_child(self, parent_fd: int, name: str, path: str) -> int:
        for _ in range(_TEMP_ATTEMPTS):
            try:
                return os.open(name, _O_FOLDER, dir_fd=parent_fd)
            except FileNotFoundError:
                with self._lock:
                    try:
                        os.mkdir(name, dir_fd=parent_fd)
                        self._names.add(path)
                    except FileExistsError:
                        pass  # made meanwhile by another download of the run
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        f"refusing to write under {path}: it is no longer a folder"
                        " (a symbolic link or a file took its place)"
                    ) from exc
                raise
        raise FileNotFoundError(errno.ENOENT, "removed while being created", path)

    def _make(self, folder: str) -> None:
        """Create ``folder`` and its missing parents, remembering each one created here (the
        caller holds the lock)."""
        missing: list[str] = []
        current = folder
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for name in reversed(missing):
            try:
                os.mkdir(name)
            except FileExistsError:
                continue  # made meanwhile by another process
            self._names.add(name)

    def remove_empty(self, folder: str) -> None:
        """Remove the folders this run created among ``folder`` and its parents below ``root``,
        deepest first, as long as they are empty."""
        self._remove_created(folder, stop=self.root)

    def _remove_created(self, folder: str, *, stop: str | None) -> None:
        with self._lock:
            if not self._names:
                return
            current = folder
            while current != stop:
                if current in self._names:
                    try:
                        os.rmdir(current)
                    except OSError:
                        return  # not empty: another download uses it
                    self._names.discard(current)
                parent = os.path.dirname(current)
                if parent == current:
                    return
                current = parent


#: Attempts at creating a temporary file whose folder another failed download may remove.
_TEMP_ATTEMPTS = 5


class OutputFile:
    """A body sink writing beside ``path`` and renaming into place only when complete.

    Missing folders on the way to ``path`` are created (and recorded in ``folders``, shared by a
    run); the folder is opened once, component by component without following symlinks (see
    :class:`CreatedFolders`), and the temporary file is created and renamed relative to that
    descriptor, so a folder swapped for a symlink meanwhile cannot redirect the body. A body
    that does not arrive whole leaves nothing behind: its temporary file is removed, and so are
    the folders created for it, when empty, deepest first. With ``deferred``, :meth:`close`
    keeps the complete body in its temporary file and :meth:`publish` renames it into place
    later (a batch does that in command-file order).
    """

    def __init__(
        self,
        path: Path,
        on_write: Callable[[int], None] | None = None,
        *,
        folders: CreatedFolders | None = None,
        deferred: bool = False,
    ) -> None:
        self.path = path
        self._on_write = on_write
        #: Folders of this file alone (none given): let go of when the file is done.
        self._own_folders = folders is None
        self._folders = folders if folders is not None else CreatedFolders()
        self._deferred = deferred
        self._folder = os.path.dirname(path)
        self._folder_fd = -1
        prefix = f".{path.name[:50]}."
        try:
            for attempt in range(_TEMP_ATTEMPTS):
                self._folder_fd = self._folders.open(self._folder)
                try:
                    self._fd, self._temp = create_temp(self._folder_fd, prefix)
                    break
                except FileNotFoundError:
                    # Another failed download of the run removed the folder it had created.
                    os.close(self._folder_fd)
                    self._folder_fd = -1
                    if attempt == _TEMP_ATTEMPTS - 1:
                        raise
        except (OSError, UnsafePathError) as exc:
            if self._folder_fd >= 0:
                os.close(self._folder_fd)
            self._folders.remove_empty(self._folder)
            if self._own_folders:
                self._folders.close()
            if isinstance(exc, UnsafePathError):
                raise UnsafePathError(f"cannot write {path}: {exc}") from exc
            raise LocalFileError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._open = True
        #: The body is complete in the temporary file, not yet renamed into place.
        self._pending = False
        self._published = False

    def write(self, data: bytes) -> None:
        assert self._open
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if self._on_write is not None:
            self._on_write(len(data))

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            # Created 0600 so that nobody reads a half-written body; complete, it gets the mode
            # any new file gets (whether the body came from the network or the cache).
            os.fchmod(self._fd, file_mode())
            os.close(self._fd)
        except OSError as exc:
            self._discard()
            raise LocalFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._pending = True
        if not self._deferred:
            self.publish()

    def publish(self) -> None:
        """Rename the complete body into place (once; :meth:`close` does it unless deferred)."""
        if not self._pending:
            return
        self._pending = False
        fd = self._folder_fd
        try:
            os.replace(self._temp, self.path.name, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            self._discard()
            raise LocalFileError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._published = True
        self._release_folder()

    def abort(self) -> None:
        """Forget the body (unless already renamed into place): nothing is left behind."""
        if self._published:
            return
        if self._open:
            self._open = False
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._pending = False
        self._discard()

    def _discard(self) -> None:
        if self._folder_fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._temp, dir_fd=self._folder_fd)
        self._folders.remove_empty(self._folder)
        self._release_folder()

    def _release_folder(self) -> None:
        fd, self._folder_fd = self._folder_fd, -1
        if fd >= 0:
            os.close(fd)
        if self._own_folders:
            self._folders.close()


def is_binary(content_type: str | None, sample: bytes) -> bool:
    """Whether a body would be garbage on a terminal: by its type, else by its bytes."""
    if content_type:
        mime = content_type.split(";")[0].strip().lower()
        if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml")):
            return b"\0" in sample
        if mime != "application/octet-stream":
            return True
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        return exc.start < len(sample) - 3
    return False


class Outcome:
    """What happened to one command."""

    __slots__ = ("command", "message", "ok", "response", "saved")

    def __init__(
        self,
        command: Command,
        ok: bool,
        message: str,
        saved: Path | None = None,
        response: Response | None = None,
    ) -> None:
        self.command = command
        self.ok = ok
        self.message = message
        self.saved = saved
        self.response = response

    def __repr__(self) -> str:
        return f"Outcome({self.command!r}, ok={self.ok!r}, message={self.message!r})"


class Summary:
    """The counts of a run, and every outcome in command-file order."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.hits = 0
        self.revalidated = 0
        self.misses = 0
        #: Served past their freshness (``--max-stale``, ``--offline``, an unreachable server).
        self.stale = 0
        self.elapsed = 0.0
        self.outcomes: list[Outcome] = []

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.failed} failed; {human_size(self.bytes_received)} received, "
            f"{human_size(self.bytes_sent)} sent; cache: {self.hits} hit, "
            f"{self.revalidated} revalidated, {self.misses} miss"
            + (f", {self.stale} stale" if self.stale else "")
            + f"; {self.elapsed:.2f} s"
        )


class _Progress:
    """At most one progress bar at a time on a terminal; other transfers run without one."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._slot = threading.Lock()

    def bar(self, label: str, length: int | None) -> _Bar | None:
        if not self.enabled or length is None or length < PROGRESS_THRESHOLD:
            return None
        if not self._slot.acquire(blocking=False):
            return None
        return _Bar(self, label, length)


class _Bar:
    def __init__(self, owner: _Progress, label: str, length: int) -> None:
        import click

        self._owner = owner
        self._bar = click.progressbar(length=length, label=label, file=owner.stream)
        self._bar.__enter__()
        self._open = True

    def update(self, count: int) -> None:
        if self._open:
            self._bar.update(count)

    def finish(self) -> None:
        if self._open:
            self._open = False
            self._bar.__exit__(None, None, None)
            self._owner._slot.release()


class _ProgressSink:
    """An :class:`OutputFile` that also moves a progress bar."""

    def __init__(self, file: OutputFile, bar: _Bar | None) -> None:
        self.file = file
        self.bar = bar

    def write(self, data: bytes) -> None:
        self.file.write(data)
        if self.bar is not None:
            self.bar.update(len(data))

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            if self.bar is not None:
                self.bar.finish()

    def abort(self) -> None:
        self.file.abort()
        if self.bar is not None:
            self.bar.finish()


def _where(command: Command) -> str:
    return f"{command.method} {command.path} {command.host_for_url}:{command.port}"


class BatchRun:
    """One run of a command file; see the module docstring for its rules."""

    def __init__(
        self,
        client: Client,
        commands: Sequence[Command],
        *,
        out_dir: Path,
        stdout: BinaryIO,
        stderr: TextIO,
        print_bodies: bool = True,
        quiet: bool = False,
        parallel: int = 1,
        progress: bool = False,
        stdout_is_tty: bool = False,
        upload_root: Path | None = None,
    ) -> None:
        self.client = client
        #: POST reads only files inside this folder (symlinks resolved); None: anywhere.
        self.upload_root = upload_root
        self._upload_real: Path | None = None
        self.commands = list(commands)
        self.out_dir = out_dir
        self.stdout = stdout
        self.stderr = stderr
        self.print_bodies = print_bodies
        self.quiet = quiet
        self.parallel = parallel
        self.stdout_is_tty = stdout_is_tty
        self.progress = _Progress(stderr, progress and not quiet)
        self.summary = Summary()
        self._pending: dict[int, Outcome] = {}
        self._next = 0
        self._print_lock = threading.Lock()
        self._destinations: dict[int, Path] = {}
        self._destination = Destinations(out_dir)
        self._folders = CreatedFolders()
        #: Destinations of more than one command: renamed into place in command-file order.
        self._shared: set[Path] = set()
        #: The complete bodies of those, waiting for their turn (by command index).
        self._deferred: dict[int, OutputFile] = {}
        self._files_lock = threading.Lock()
        self._cwd = ""
        #: Set when stdout or stderr was closed by the reader (``| head``): the run stops.
        self.stop = threading.Event()
        self.stdout_closed = False
        self.stderr_closed = False

    def run(self) -> Summary:
        started = time.monotonic()
        cwd = os.getcwd()
        self._cwd = cwd if cwd.endswith("/") else cwd + "/"
        requests: list[Request] = []
        positions: list[int] = []
        failed: list[tuple[int, Outcome]] = []
        for index, command in enumerate(self.commands):
            try:
                request = self._request(index, command)
            except WebClientError as exc:
                failed.append((index, Outcome(command, False, f"{_where(command)}: {exc}")))
                continue
            except OSError as exc:  # a name the OS refuses (too long, a loop of symlinks)
                message = f"{_where(command)}: {exc.strerror or exc}"
                failed.append((index, Outcome(command, False, message)))
                continue
            requests.append(request)
            positions.append(index)
        counts = Counter(self._destinations.values())
        self._shared = {path for path, count in counts.items() if count > 1}
        self._folders = CreatedFolders(self._destination.root)
        if self._destinations:
            self._folders.hold()
        self._remove_stale_temps({os.path.dirname(path) for path in counts})
        for index, outcome in failed:
            self._complete(index, outcome)

        def on_result(position: int, result: Result) -> None:
            index = positions[position]
            self._complete(index, self._outcome(index, self.commands[index], result))

        try:
            self.client.request_all(
                requests, parallel=self.parallel, on_result=on_result, stop=self.stop
            )
        finally:
            # Bodies still waiting for their turn (the run was interrupted) leave nothing behind.
            with self._files_lock:
                waiting, self._deferred = list(self._deferred.values()), {}
            for file in waiting:
                file.abort()
            self._folders.close()
        self.summary.elapsed = time.monotonic() - started
        if not self.quiet and not self.stop.is_set():
            self._write_stderr(f"summary: {self.summary.line()}\n")
        return self.summary

    def _remove_stale_temps(self, folders: set[str]) -> None:
        """Clean the temporary files killed runs left where this one writes, and say so."""
        for folder in sorted(folders):
            removed = remove_stale_temps(folder)
            if removed and not self.quiet:
                inside = (folder + "/").startswith(self._cwd)
                shown = (folder + "/")[len(self._cwd) :].rstrip("/") if inside else folder
                plural = "s" if removed > 1 else ""
                self._write_stderr(
                    f"removed {removed} unfinished download{plural} (.part) of an interrupted"
                    f" run from {shown or '.'}\n"
                )

    # -- building requests -----------------------------------------------------------------------

    def _request(self, index: int, command: Command) -> Request:
        if command.method == "POST":
            local = Path(unquote(command.path.partition("?")[0]).lstrip("/"))
            try:
                usable = local.is_file()
            except OSError as exc:  # a name the OS refuses: too long, a loop of symlinks
                raise LocalFileError(f"cannot read {local}: {exc.strerror or exc}") from exc
            if not usable:
                raise LocalFileError(f"no such file to upload: {local}")
            body = self._uploadable(local)
            return Request(
                "POST", command.url, body=body, on_sent=self._upload_progress(command, local)
            )
        self._destinations[index] = self._destination(command.local_name)
        return Request("GET", command.url, sink=self._sink_factory(index, command))

    def _uploadable(self, local: Path) -> Path:
        """The real path of a file to upload; UnsafePathError when it is outside the upload
        root. The real path is what is read, so a symlink changed later is not followed."""
        if self.upload_root is None:
            return local
        try:
            if self._upload_real is None:
                self._upload_real = self.upload_root.resolve()
            real = local.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symlinks (3.11)
            raise LocalFileError(f"cannot read {local}: {exc}") from exc
        if not real.is_relative_to(self._upload_real):
            raise UnsafePathError(
                f"refusing to upload {local}: it is outside {self.upload_root}"
                " (allow its folder with --upload-root)"
            )
        return real

    def _upload_progress(self, command: Command, local: Path) -> Callable[[int], None] | None:
        try:
            size = local.stat().st_size
        except OSError:
            return None
        bar = self.progress.bar(f"POST {command.path}", size)
        if bar is None:
            return None
        sent = 0

        def on_sent(count: int) -> None:
            nonlocal sent
            sent += count
            bar.update(count)
            if sent >= size:
                bar.finish()

        return on_sent

    def _sink_factory(
        self, index: int, command: Command
    ) -> Callable[[Response], OutputFile | _ProgressSink | None]:
        def make(response: Response) -> OutputFile | _ProgressSink | None:
            if not response.ok:
                return None
            target = self._destinations[index]
            deferred = target in self._shared
            file = OutputFile(target, folders=self._folders, deferred=deferred)
            if deferred:
                with self._files_lock:
                    self._deferred[index] = file
            if not self.progress.enabled or response.cache_status is CacheStatus.HIT:
                return file
            length_text = response.header("content-length")
            length = int(length_text) if length_text and length_text.isdigit() else None
            bar = self.progress.bar(f"GET {command.path}", length)
            return file if bar is None else _ProgressSink(file, bar)

        return make

    # -- results ---------------------------------------------------------------------------------

    def _outcome(self, index: int, command: Command, result: Result) -> Outcome:
        where = _where(command)
        if isinstance(result, WebClientError):
            return Outcome(command, False, f"{where}: {result}")
        status = f"{result.status} {result.reason}".strip()
        if not result.ok:
            return Outcome(command, False, f"{where}: {status}", response=result)
        if command.method == "POST":
            location = result.header("location")
            stored = f", stored at {location}" if location else ""
            message = f"{where}: {status}, sent {human_size(result.bytes_sent)}{stored}"
            return Outcome(command, True, message, response=result)
        saved = self._destinations[index]
        text = str(saved)
        shown = text[len(self._cwd) :] if text.startswith(self._cwd) else text
        offline = ", offline" if self.client.config.offline else ""
        message = (
            f"{where}: {status}, {human_size(result.body_size)} saved to {shown}"
            f" (cache {result.cache_status.value}{offline})"
        )
        return Outcome(command, True, message, saved=saved, response=result)

    def _complete(self, index: int, outcome: Outcome) -> None:
        """Record an outcome; print every outcome that is now next in command-file order.

        A body whose file name other commands share is renamed into place here, in command-file
        order, so the file left is the last command's, and what is printed is each command's own.
        """
        with self._print_lock:
            self._pending[index] = outcome
            while self._next in self._pending:
                position = self._next
                ready = self._publish(position, self._pending.pop(position))
                self._next += 1
                self._count(ready)
                if not self.stop.is_set():
                    self._print(ready)

    def _publish(self, index: int, outcome: Outcome) -> Outcome:
        with self._files_lock:
            file = self._deferred.pop(index, None)
        if file is None:
            return outcome
        if not outcome.ok:
            file.abort()
            return outcome
        try:
            file.publish()
        except LocalFileError as exc:
            message = f"{_where(outcome.command)}: {exc}"
            return Outcome(outcome.command, False, message, response=outcome.response)
        return outcome

    def _count(self, outcome: Outcome) -> None:
        summary = self.summary
        summary.outcomes.append(outcome)
        if outcome.ok:
            summary.ok += 1
        else:
            summary.failed += 1
        response = outcome.response
        if response is None:
            return
        summary.bytes_received += response.bytes_received
        if outcome.ok:
            # A refused upload sent nothing the server kept, whatever reached its socket.
            summary.bytes_sent += response.bytes_sent
        if response.method == "GET":
            if response.cache_status is CacheStatus.HIT:
                summary.hits += 1
            elif response.cache_status is CacheStatus.REVALIDATED:
                summary.revalidated += 1
            elif response.cache_status is CacheStatus.MISS:
                summary.misses += 1
            elif response.cache_status is CacheStatus.STALE:
                summary.stale += 1

    def _print(self, outcome: Outcome) -> None:
        if not outcome.ok or not self.quiet:
            self._write_stderr(("" if outcome.ok else "error: ") + outcome.message + "\n")
        if (
            outcome.ok
            and outcome.saved is not None
            and self.print_bodies
            and not self.stop.is_set()
        ):
            self._print_body(outcome)

    def _write_stderr(self, text: str) -> None:
        if self.stderr_closed:
            return
        try:
            self.stderr.write(text)
            self.stderr.flush()
        except BrokenPipeError:
            self.stderr_closed = True
            self.stop.set()

    def _stdout_gone(self) -> None:
        """The reader of stdout went away (``| head``): stop quietly, sending nothing more."""
        self.stdout_closed = True
        self.stop.set()

    def _print_body(self, outcome: Outcome) -> None:
        assert outcome.saved is not None
        assert outcome.response is not None
        try:
            with open(outcome.saved, "rb") as file:
                sample = file.read(SNIFF_SIZE)
                content_type = outcome.response.header("content-type")
                if self.stdout_is_tty and is_binary(content_type, sample):
                    note = (
                        f"[{outcome.command.path}: binary content "
                        f"({content_type or 'unknown type'}, "
                        f"{human_size(outcome.response.body_size)}) not shown]\n"
                    )
                    self.stdout.write(note.encode())
                    self.stdout.flush()
                    return
                last = sample[-1:]
                self.stdout.write(sample)
                while chunk := file.read(64 * 1024):
                    self.stdout.write(chunk)
                    last = chunk[-1:]
                if self.stdout_is_tty and last not in (b"", b"\n"):
                    self.stdout.write(b"\n")
                self.stdout.flush()
        except BrokenPipeError:
            self._stdout_gone()
        except OSError as exc:
            self._write_stderr(f"warning: cannot show {outcome.saved}: {exc.strerror}\n")
