"""What a run tells its user: one outcome per command, the summary, the ``--json`` records,
progress on stderr, and whether a body may be shown on a terminal.

Rules: an outcome is a value (command, success, message, saved path, response), printed by the
run in command-file order; the summary counts outcomes and cache results; the ``--json`` records
always carry all their keys; progress is one status line on stderr (a count of finished commands
when there are several, and the bytes, rate and ETA of one transfer of at least
:data:`PROGRESS_THRESHOLD` bytes at a time), redrawn in place on a terminal and cleared before any
other line; a body is binary by its Content-Type, else by its first bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ._outputs import SpoolSink
from .client import BodySink, ClientResponse
from .commands import Command
from .config import human_size

#: Transfers at least this large get a progress bar on a terminal.
PROGRESS_THRESHOLD = 1024 * 1024
#: Seconds between redraws of the status line on a terminal: smooth, at little cost.
REDRAW_TTY = 0.1
#: Seconds between ``progress:`` lines when stderr is a file or a pipe: a log stays readable.
REDRAW_LINES = 1.0
#: Bytes looked at to tell text from binary when the Content-Type does not say.
SNIFF_SIZE = 8192
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "image/svg+xml")


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


class CommandOutcome:
    """What happened to one command."""

    __slots__ = ("command", "message", "ok", "response", "resumed", "saved", "spool")

    def __init__(
        self,
        command: Command,
        ok: bool,
        message: str,
        saved: Path | None = None,
        response: ClientResponse | None = None,
        spool: SpoolSink | None = None,
    ) -> None:
        self.command = command
        self.ok = ok
        self.message = message
        self.saved = saved
        self.response = response
        #: The body to show on stdout, when it is not saved (``webclient get URL``).
        self.spool = spool
        #: Bytes an earlier run had saved in ``<name>.part`` before this one resumed it.
        self.resumed = 0

    def __repr__(self) -> str:
        return f"CommandOutcome({self.command!r}, ok={self.ok!r}, message={self.message!r})"


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
        self.outcomes: list[CommandOutcome] = []

    def line(self) -> str:
        return (
            f"{self.ok} ok, {self.failed} failed; {human_size(self.bytes_received)} received, "
            f"{human_size(self.bytes_sent)} sent; cache: {self.hits} hit, "
            f"{self.revalidated} revalidated, {self.misses} miss"
            + (f", {self.stale} stale" if self.stale else "")
            + f"; {self.elapsed:.2f} s"
        )


def outcome_record(outcome: CommandOutcome) -> dict[str, Any]:
    """One command's result for ``--json``: the keys are documented in docs/client.md and
    always all present (``null`` when they do not apply), so scripts can rely on them."""
    command, response = outcome.command, outcome.response
    return {
        "type": "command",
        "line": command.line or None,
        "method": command.method,
        "url": command.url,
        "ok": outcome.ok,
        "status": None if response is None else response.status,
        "reason": None if response is None else response.reason,
        "cache": None if response is None else response.cache_status.value,
        "saved": None if outcome.saved is None else str(outcome.saved),
        "size": None if response is None else response.body_size,
        "received": 0 if response is None else response.bytes_received,
        "sent": 0 if response is None or not outcome.ok else response.bytes_sent,
        "resumed": outcome.resumed,
        "message": outcome.message,
    }


def summary_record(summary: Summary) -> dict[str, Any]:
    """The last ``--json`` object: the counts of the run (docs/client.md lists the keys)."""
    return {
        "type": "summary",
        "ok": summary.ok,
        "failed": summary.failed,
        "received": summary.bytes_received,
        "sent": summary.bytes_sent,
        "hits": summary.hits,
        "revalidated": summary.revalidated,
        "misses": summary.misses,
        "stale": summary.stale,
        "elapsed": round(summary.elapsed, 3),
    }


def json_line(record: dict[str, Any]) -> str:
    """A record as one line of JSON (no spaces to split on, non-ASCII escaped)."""
    import json  # (only --json needs it)

    return json.dumps(record, separators=(",", ":")) + "\n"


def head_text(response: ClientResponse) -> str:
    """A response's status and reason, then its header fields one a line, then a blank line
    (``webclient head``; like ``curl -I`` without the protocol version)."""
    lines = [f"{response.status} {response.reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return "\r\n".join(lines) + "\r\n\r\n"


class Progress:
    """One status line on stderr: ``[done/total]`` for a run of several commands, and the
    bytes, rate and ETA of one large transfer at a time (others run without a bar).

    On a terminal the line is redrawn in place (at most every :data:`REDRAW_TTY` seconds) and
    cleared before any other line is written; elsewhere (``--progress`` into a file or pipe)
    it is written as ``progress: ...`` lines, at most one every :data:`REDRAW_LINES` seconds,
    and once more at the end. ``clock`` is for tests.
    """

    def __init__(
        self,
        stream: TextIO,
        enabled: bool,
        *,
        total: int = 0,
        tty: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.enabled = enabled
        self.total = total
        self.tty = tty
        self.clock = clock
        self.done = 0
        self._lock = threading.RLock()
        self._bar: ProgressBar | None = None
        self._drawn = ""
        self._last_draw = -1e9
        self._shown = False

    def bar(self, label: str, length: int | None) -> ProgressBar | None:
        """A bar for a transfer of ``length`` bytes, if it is large and no other has one."""
        if not self.enabled or length is None or length < PROGRESS_THRESHOLD:
            return None
        with self._lock:
            if self._bar is not None:
                return None
            self._bar = ProgressBar(self, label, length)
            self._draw(force=True)
            return self._bar

    def command_done(self) -> None:
        with self._lock:
            self.done += 1
            self._draw(force=self.tty and self.done == self.total)

    def write(self, text: str) -> None:
        """Write ``text`` (whole lines) to the stream without mixing it into the status line."""
        with self._lock:
            if self.tty and self._drawn:
                self._drawn = self.status(self.clock())
                self.stream.write("\r\x1b[K" + text + self._drawn)
            else:
                self.stream.write(text)
            self.stream.flush()

    def close(self) -> None:
        """Clear the line on a terminal; elsewhere write the final state once."""
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                if self._drawn:
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
                self._drawn = ""
            elif self._shown or self.total > 1:
                self._draw(force=True)  # (unless that line is the last one written)

    def _finished(self, bar: ProgressBar) -> None:
        with self._lock:
            if self._bar is bar:
                self._bar = None
                self._draw(force=True)

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        interval = REDRAW_TTY if self.tty else REDRAW_LINES
        if not force and now - self._last_draw < interval:
            return
        line = self.status(now)
        if not line or (not self.tty and line == self._drawn):
            return
        self._last_draw = now
        self._shown = True
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self._drawn = line
        else:
            self.stream.write(f"progress: {line}\n")
            self._drawn = line
        self.stream.flush()

    def status(self, now: float) -> str:
        """The status line as it reads at ``now``."""
        parts = [f"[{self.done}/{self.total}]"] if self.total > 1 else []
        bar = self._bar
        if bar is not None:
            parts.append(bar.status(now))
        return " ".join(parts)


class ProgressBar:
    """The bytes of one large transfer, for :class:`Progress` to show."""

    def __init__(self, owner: Progress, label: str, length: int) -> None:
        self._owner = owner
        self.label = label
        self.length = length
        self.count = 0
        self.started = owner.clock()
        self._open = True

    def update(self, count: int) -> None:
        if self._open:
            self.count += count
            with self._owner._lock:
                self._owner._draw()

    def finish(self) -> None:
        if self._open:
            self._open = False
            self._owner._finished(self)

    def status(self, now: float) -> str:
        """``GET /big.bin 12.0 MiB / 100.0 MiB, 4.0 MiB/s, ETA 0:22``."""
        elapsed = now - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        text = f"{self.label} {human_size(self.count)} / {human_size(self.length)}"
        if rate <= 0:
            return text
        remaining = max(0, self.length - self.count) / rate
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        eta = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
        return f"{text}, {human_size(rate)}/s, ETA {eta}"


class ProgressSink:
    """A body sink (a file, or a body waiting to be shown) that also moves a progress bar."""

    def __init__(self, file: BodySink, bar: ProgressBar | None) -> None:
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
