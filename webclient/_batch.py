"""Running a parsed command file: requests through the client, bodies to files, a report.

Rules: GET bodies are saved under the output folder at the command's file name (or the name given
by ``get -o``), through a temporary file renamed into place once complete, and only for 2xx
answers; a failed download leaves neither its temporary file nor the folders created for it (when
empty), except a body cut short that can be resumed: its ``<name>.part`` stays, and the next run
asks for the rest (see :mod:`webclient._outputs`; a 416 to that range sends the request again
without it, in the same run); a name that resolves outside the output folder is refused before
anything is sent; POST bodies are read from the file-name relative to the current directory (or
the file ``post`` names) and streamed, and only from inside the upload root (the command file's
folder unless ``--upload-root`` names another), symlinks resolved; a local name the system refuses
is one error line; one failed command never stops the others; reports go to stderr in command-file
order whatever order the work finished in, bodies to stdout (binary bodies are not written to a
terminal). Commands saving to one file behave as if run one after the other in command-file order:
their complete bodies wait in their temporary files and are renamed into place in that order, so
each prints its own body and the last successful one is the file left. When stdout or stderr is
closed by its reader, the run stops quietly (nothing more is sent or reported). Bodies that are
shown but not saved (``webclient get URL``) wait in anonymous temporary files for their turn. With
``json_lines``, stdout carries one JSON object per command and the summary, nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import unquote

from ._folders import CreatedFolders, remove_stale_temps
from ._outputs import Destinations, OutputFile, SpoolSink
from ._partials import (
    RESUME_MIN_SIZE,
    Partial,
    Resume,
    content_range_start,
    find_partial,
    forget_partial,
    has_partials,
    if_range_validator,
    remove_stale_parts,
)
from ._reporting import (
    CommandOutcome,
    Progress,
    ProgressSink,
    Summary,
    json_line,
    summary_record,
)
from ._status import CacheStatus
from ._terminal import Terminal
from .client import BodySink, Client, ClientRequest, ClientResponse, Result
from .commands import Command
from .config import human_size
from .errors import LocalFileError, ResponseTooLarge, UnsafePathError, WebClientError


class _Refused(Exception):
    """A 2xx response whose body is not saved (said in the message)."""


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
        json_lines: bool = False,
        progress_tty: bool = True,
        spool: bool = False,
        save_names: Mapping[int, str] | None = None,
        uploads: Mapping[int, Path] | None = None,
    ) -> None:
        self.client = client
        #: One JSON object per command, then the summary, on stdout (no bodies, no report lines
        #: but errors on stderr).
        self.json_lines = json_lines
        #: GET bodies go to stdout only, not saved (``webclient get URL``): each waits in an
        #: anonymous temporary file for its turn.
        self.spool = spool
        #: Names to save GET bodies under (by command index) instead of their file names.
        self._save_names = dict(save_names or {})
        #: Local files to upload (by command index) instead of their file names.
        self._uploads = dict(uploads or {})
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
        self.progress = Progress(
            stderr, progress and not json_lines, total=len(self.commands), tty=progress_tty
        )
        self.summary = Summary()
        self._pending: dict[int, CommandOutcome] = {}
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
        #: Bodies to show, not save, waiting for their turn (by command index).
        self._spools: dict[int, SpoolSink] = {}
        #: Interrupted downloads this run resumes (by command index), found beside their files.
        self._partials: dict[int, Partial] = {}
        #: Where each resumed body started (a 206 appended to the .part).
        self._resumed: dict[int, int] = {}
        #: Why a response was not saved although its status was 2xx (a 206 not asked for).
        self._refused: dict[int, str] = {}
        #: Whether each destination folder holds any .part record (listed once per folder).
        self._resumable_folders: dict[str, bool] = {}
        #: Commands answered 416 to their range: they are sent again without it.
        self._restart: set[int] = set()
        self._now = 0.0
        self._cwd = ""
        #: Set when stdout or stderr was closed by the reader (``| head``): the run stops.
        self.stop = threading.Event()
        self.terminal = Terminal(
            stdout,
            stderr,
            self.progress,
            self.stop,
            quiet=quiet,
            print_bodies=print_bodies,
            stdout_is_tty=stdout_is_tty,
            json_lines=json_lines,
        )

    def run(self) -> Summary:
        started = time.monotonic()
        cwd = os.getcwd()
        self._cwd = cwd if cwd.endswith("/") else cwd + "/"
        self._now = time.time()
        requests: list[ClientRequest] = []
        positions: list[int] = []
        failed: list[tuple[int, CommandOutcome]] = []
        for index, command in enumerate(self.commands):
            try:
                request = self._request(index, command)
            except WebClientError as exc:
                failed.append((index, CommandOutcome(command, False, f"{_where(command)}: {exc}")))
                continue
            except OSError as exc:  # a name the OS refuses (too long, a loop of symlinks)
                message = f"{_where(command)}: {exc.strerror or exc}"
                failed.append((index, CommandOutcome(command, False, message)))
                continue
            requests.append(request)
            positions.append(index)
        counts = Counter(self._destinations.values())
        self._shared = {path for path, count in counts.items() if count > 1}
        self._resume_alone(requests, positions)
        self._folders = CreatedFolders(self._destination.root)
        if self._destinations:
            self._folders.hold()
        self._remove_stale_temps({os.path.dirname(path) for path in counts})
        for index, outcome in failed:
            self._complete(index, outcome)
        try:
            self._send(requests, positions)
            if self._restart and not self.stop.is_set():
                # 416: the .part no longer fits the file; each of these starts afresh.
                again = sorted(self._restart)
                for index in again:
                    self._partials.pop(index)
                    forget_partial(self._destinations[index])
                self._send([self._request(i, self.commands[i]) for i in again], again)
        finally:
            # Bodies still waiting for their turn (the run was interrupted) leave nothing behind.
            with self._files_lock:
                waiting, self._deferred = list(self._deferred.values()), {}
            for file in waiting:
                file.abort()
            self._folders.close()
        self.summary.elapsed = time.monotonic() - started
        self.progress.close()
        if self.stop.is_set():
            return self.summary
        if self.json_lines:
            self.terminal.write_stdout(json_line(summary_record(self.summary)))
        elif not self.quiet:
            self.terminal.write_stderr(f"summary: {self.summary.line()}\n")
        return self.summary

    def _send(self, requests: list[ClientRequest], positions: list[int]) -> None:
        self._restart = set()

        def on_result(position: int, result: Result) -> None:
            index = positions[position]
            if (
                index in self._partials
                and isinstance(result, ClientResponse)
                and result.status == 416
            ):
                self._restart.add(index)  # (completed by the second round)
                return
            self._complete(index, self._outcome(index, self.commands[index], result))

        self.client.request_all(
            requests, parallel=self.parallel, on_result=on_result, stop=self.stop
        )

    def _resume_alone(self, requests: list[ClientRequest], positions: list[int]) -> None:
        """Commands sharing a destination take turns through temporary files: none of them
        resumes (their requests lose the Range)."""
        for position, index in enumerate(positions):
            if index in self._partials and self._destinations[index] in self._shared:
                del self._partials[index]
                requests[position] = dataclasses.replace(requests[position], headers=())

    def _remove_stale_temps(self, folders: set[str]) -> None:
        """Clean the temporary files killed runs left where this one writes, and the
        interrupted downloads too old to resume, and say so."""
        for folder in sorted(folders):
            removed = remove_stale_temps(folder)
            parts = remove_stale_parts(folder, now=self._now)
            if self.quiet or not (removed or parts):
                continue
            inside = (folder + "/").startswith(self._cwd)
            shown = (folder + "/")[len(self._cwd) :].rstrip("/") or "." if inside else folder
            if removed:
                plural = "s" if removed > 1 else ""
                self.terminal.write_stderr(
                    f"removed {removed} unfinished download{plural} (.part) of an interrupted"
                    f" run from {shown}\n"
                )
            if parts:
                plural = "s" if parts > 1 else ""
                self.terminal.write_stderr(
                    f"removed {parts} interrupted download{plural} (.part) older than a day"
                    f" from {shown}\n"
                )

    # -- building requests -----------------------------------------------------------------------

    def _request(self, index: int, command: Command) -> ClientRequest:
        if command.method == "HEAD":
            return ClientRequest("HEAD", command.url)
        if command.method == "POST":
            local = self._uploads.get(index) or Path(
                unquote(command.path.partition("?")[0]).lstrip("/")
            )
            try:
                usable = local.is_file()
            except OSError as exc:  # a name the OS refuses: too long, a loop of symlinks
                raise LocalFileError(f"cannot read {local}: {exc.strerror or exc}") from exc
            if not usable:
                raise LocalFileError(_not_uploadable(local))
            body = self._uploadable(local)
            return ClientRequest(
                "POST", command.url, body=body, on_sent=self._upload_progress(command, local)
            )
        if self.spool:
            return ClientRequest("GET", command.url, sink=self._spool_factory(index, command))
        name = self._save_names.get(index, command.local_name)
        target = self._destinations[index] = self._destination(name)
        folder = os.path.dirname(target)
        resumable = self._resumable_folders.get(folder)
        if resumable is None:
            resumable = self._resumable_folders[folder] = has_partials(folder)
        partial = find_partial(target, command.url, now=self._now) if resumable else None
        if partial is None:
            return ClientRequest("GET", command.url, sink=self._sink_factory(index, command))
        self._partials[index] = partial
        return ClientRequest(
            "GET",
            command.url,
            headers=partial.request_headers(),
            sink=self._sink_factory(index, command),
        )

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
    ) -> Callable[[ClientResponse], BodySink | None]:
        def make(response: ClientResponse) -> BodySink | None:
            if not response.ok:
                return None
            target = self._destinations[index]
            deferred = target in self._shared
            try:
                resume = None if deferred else self._resume_for(index, command, response)
            except _Refused as exc:
                with self._files_lock:
                    self._refused[index] = str(exc)
                forget_partial(target)  # whatever it holds, the next run starts afresh
                return None
            file = OutputFile(target, folders=self._folders, deferred=deferred, resume=resume)
            if deferred:
                with self._files_lock:
                    self._deferred[index] = file
            return self._with_progress(file, command, response)

        return make

    def _resume_for(self, index: int, command: Command, response: ClientResponse) -> Resume | None:
        """How the body of ``response`` uses ``<name>.part``: appended after what an earlier
        run left (a 206 that starts where that ends), or written afresh where a later run can
        resume it (from the network, large, with a validator); None for a plain temporary
        file."""
        partial = self._partials.get(index)
        if response.status == 206:
            start = content_range_start(response.header("content-range"))
            if partial is None or start != partial.size:
                asked = "no range" if partial is None else f"bytes {partial.size}-"
                raise _Refused(
                    f"206 Partial Content for bytes {start}- ({response.header('content-range')})"
                    f" to a request for {asked}: not saved"
                )
            with self._files_lock:
                self._resumed[index] = start
            return Resume(command.url, partial.validator, start)
        if response.cache_status not in (CacheStatus.MISS, CacheStatus.BYPASS):
            return None  # from the cache: nothing to resume later
        length = response.header("content-length")
        if length is None or not length.isdigit() or int(length) < RESUME_MIN_SIZE:
            return None  # small (or of unknown size): fetched again whole if cut
        validator = if_range_validator(response.headers)
        if validator is None:
            return None
        return Resume(command.url, validator)

    def _with_progress(
        self, sink: BodySink, command: Command, response: ClientResponse
    ) -> BodySink:
        """``sink``, moving a progress bar when the body is large and comes from the network."""
        if not self.progress.enabled or response.cache_status is CacheStatus.HIT:
            return sink
        length_text = response.header("content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        bar = self.progress.bar(f"GET {command.path}", length)
        return sink if bar is None else ProgressSink(sink, bar)

    def _spool_factory(
        self, index: int, command: Command
    ) -> Callable[[ClientResponse], BodySink | None]:
        """A sink to an anonymous temporary file, for bodies shown but not saved; with
        ``--json`` (nothing shown) the body is read and dropped."""

        def make(response: ClientResponse) -> BodySink | None:
            if not response.ok or self.json_lines or not self.print_bodies:
                return None
            sink = SpoolSink()
            with self._files_lock:
                self._spools[index] = sink
            return self._with_progress(sink, command, response)

        return make

    # -- results ---------------------------------------------------------------------------------

    def _outcome(self, index: int, command: Command, result: Result) -> CommandOutcome:
        where = _where(command)
        with self._files_lock:
            spool = self._spools.pop(index, None) if self.spool else None
            refused = self._refused.pop(index, None) if self._refused else None
            resumed = self._resumed.pop(index, None) if self._resumed else None
        if spool is not None and (isinstance(result, WebClientError) or not result.ok):
            spool.abort()
        if refused is not None:
            return CommandOutcome(command, False, f"{where}: {refused}", response=None)
        if isinstance(result, WebClientError):
            if isinstance(result, ResponseTooLarge) and index in self._destinations:
                forget_partial(self._destinations[index])  # its rest would be too large too
            return CommandOutcome(command, False, f"{where}: {result}")
        status = f"{result.status} {result.reason}".strip()
        if not result.ok:
            return CommandOutcome(command, False, f"{where}: {status}", response=result)
        if command.method == "HEAD":
            return CommandOutcome(command, True, f"{where}: {status}", response=result)
        offline = ", offline" if self.client.config.offline else ""
        if self.spool:
            message = f"{where}: {status}, {human_size(result.body_size)}"
            message += f" (cache {result.cache_status.value}{offline})"
            return CommandOutcome(command, True, message, response=result, spool=spool)
        if command.method == "POST":
            location = result.header("location")
            stored = f", stored at {location}" if location else ""
            message = f"{where}: {status}, sent {human_size(result.bytes_sent)}{stored}"
            return CommandOutcome(command, True, message, response=result)
        saved = self._destinations[index]
        if resumed is None and index in self._partials:
            forget_partial(saved)  # restarted from the start without a .part of its own
        text = str(saved)
        shown = text[len(self._cwd) :] if text.startswith(self._cwd) else text
        size = result.body_size + (resumed or 0)
        how = "" if resumed is None else f"resumed after {human_size(resumed)}, "
        message = (
            f"{where}: {status}, {human_size(size)} saved to {shown}"
            f" ({how}cache {result.cache_status.value}{offline})"
        )
        outcome = CommandOutcome(command, True, message, saved=saved, response=result)
        outcome.resumed = resumed or 0
        return outcome

    def _complete(self, index: int, outcome: CommandOutcome) -> None:
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
                self.summary.count(ready)
                if self.progress.enabled:
                    self.progress.command_done()
                if not self.stop.is_set():
                    self.terminal.print(ready)
                elif ready.spool is not None:
                    ready.spool.abort()  # never to be shown

    def _publish(self, index: int, outcome: CommandOutcome) -> CommandOutcome:
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
            return CommandOutcome(outcome.command, False, message, response=outcome.response)
        return outcome

    def warn(self, message: str) -> None:
        """A ``warning:`` line on stderr (clear of the progress line)."""
        self.terminal.warn(message)

    @property
    def stdout_closed(self) -> bool:
        """Whether the reader of stdout went away (``| head``)."""
        return self.terminal.stdout_closed

    @property
    def stderr_closed(self) -> bool:
        return self.terminal.stderr_closed


def _not_uploadable(local: Path) -> str:
    """Why ``local`` (not a regular file) cannot be uploaded: it is missing, or it is a folder,
    a device or a pipe, whose length is unknown (a POST here is sent with a Content-Length)."""
    if os.path.exists(local):
        return f"cannot upload {local}: not a regular file (a folder, a device or a pipe)"
    return f"no such file to upload: {local}"
