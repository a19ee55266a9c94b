"""Where a run's report goes: lines on stderr (clear of the progress line), bodies and heads on
stdout, or one JSON object per command on stdout.

Rules: reports come in command-file order (the caller hands them in that order); a failed
command's line starts with ``error:`` and is shown even when quiet; binary bodies are not written
to a terminal (a one-line note instead); when the reader of stdout or stderr goes away
(``| head``), ``stop`` is set and nothing more is written to it.
"""

from __future__ import annotations

import re
import threading
from typing import BinaryIO, TextIO

from ._reporting import (
    SNIFF_SIZE,
    CommandOutcome,
    Progress,
    head_text,
    is_binary,
    json_line,
    outcome_record,
)
from .config import human_size

#: C0 and C1 control characters but the newline, and DEL: a report line carries text from the
#: server (a reason phrase, a Location), and on a terminal these would move the cursor, clear
#: the screen or set the window's title.
_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class Terminal:
    """A run's stdout and stderr, with what it was asked to show on them."""

    def __init__(
        self,
        stdout: BinaryIO,
        stderr: TextIO,
        progress: Progress,
        stop: threading.Event,
        *,
        quiet: bool,
        print_bodies: bool,
        stdout_is_tty: bool,
        json_lines: bool,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.progress = progress
        #: Set when a reader went away: the run stops.
        self.stop = stop
        self.quiet = quiet
        self.print_bodies = print_bodies
        self.stdout_is_tty = stdout_is_tty
        self.json_lines = json_lines
        self.stdout_closed = False
        self.stderr_closed = False

    def print(self, outcome: CommandOutcome) -> None:
        """Report one outcome: its line on stderr (or its JSON line on stdout), then the body or
        head it shows on stdout; a spooled body is let go of either way."""
        try:
            if self.json_lines:
                if not outcome.ok:
                    self.write_stderr(f"error: {outcome.message}\n")
                self.write_stdout(json_line(outcome_record(outcome)))
                return
            if not outcome.ok or not self.quiet:
                self.write_stderr(("" if outcome.ok else "error: ") + outcome.message + "\n")
            if not outcome.ok or not self.print_bodies or self.stop.is_set():
                return
            if outcome.command.method == "HEAD" and outcome.response is not None:
                self.write_stdout(head_text(outcome.response))
            elif outcome.spool is not None:
                self._show(outcome, outcome.spool.file, "the body")
            elif outcome.saved is not None:
                self._print_body(outcome)
        finally:
            if outcome.spool is not None:
                outcome.spool.abort()

    def write_stdout(self, text: str) -> None:
        if self.stdout_closed:
            return
        try:
            self.stdout.write(text.encode())
            self.stdout.flush()
        except BrokenPipeError:
            self._stdout_gone()

    def warn(self, message: str) -> None:
        """A ``warning:`` line on stderr (clear of the progress line)."""
        self.write_stderr(f"warning: {message}\n")

    def write_stderr(self, text: str) -> None:
        if self.stderr_closed:
            return
        if _CONTROLS.search(text):
            text = _CONTROLS.sub(_escaped, text)
        try:
            if self.progress.enabled:
                self.progress.write(text)
            else:
                self.stderr.write(text)
                self.stderr.flush()
        except BrokenPipeError:
            self.stderr_closed = True
            self.stop.set()

    def _stdout_gone(self) -> None:
        """The reader of stdout went away (``| head``): stop quietly, sending nothing more."""
        self.stdout_closed = True
        self.stop.set()

    def _print_body(self, outcome: CommandOutcome) -> None:
        assert outcome.saved is not None
        try:
            file = open(outcome.saved, "rb")  # noqa: SIM115 - closed just below
        except OSError as exc:
            self.write_stderr(f"warning: cannot show {outcome.saved}: {exc.strerror}\n")
            return
        with file:
            self._show(outcome, file, str(outcome.saved))

    def _show(self, outcome: CommandOutcome, file: BinaryIO, what: str) -> None:
        """Copy a body to stdout (a note instead of binary content on a terminal)."""
        assert outcome.response is not None
        try:
            file.seek(0)
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
            self.write_stderr(f"warning: cannot show {what}: {exc.strerror}\n")
