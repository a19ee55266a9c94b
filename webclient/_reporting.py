"""What a run tells its user: one outcome per command, the summary, progress bars, and whether a
body may be shown on a terminal.

Rules: an outcome is a value (command, success, message, saved path, response), printed by the
run in command-file order; the summary counts outcomes and cache results; at most one progress
bar is shown at a time, on the stream given (stderr), and only for transfers of at least
:data:`PROGRESS_THRESHOLD` bytes; a body is binary by its Content-Type, else by its first bytes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, TextIO

from ._outputs import OutputFile, SpoolSink
from .client import Response
from .commands import Command
from .config import human_size

#: Transfers at least this large get a progress bar on a terminal.
PROGRESS_THRESHOLD = 1024 * 1024
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


class Outcome:
    """What happened to one command."""

    __slots__ = ("command", "message", "ok", "response", "resumed", "saved", "spool")

    def __init__(
        self,
        command: Command,
        ok: bool,
        message: str,
        saved: Path | None = None,
        response: Response | None = None,
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


def outcome_record(outcome: Outcome) -> dict[str, Any]:
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
    return json.dumps(record, separators=(",", ":")) + "\n"


def head_text(response: Response) -> str:
    """A response's status and reason, then its header fields one a line, then a blank line
    (``webclient head``; like ``curl -I`` without the protocol version)."""
    lines = [f"{response.status} {response.reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return "\r\n".join(lines) + "\r\n\r\n"


class Progress:
    """At most one progress bar at a time on a terminal; other transfers run without one."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._slot = threading.Lock()

    def bar(self, label: str, length: int | None) -> ProgressBar | None:
        if not self.enabled or length is None or length < PROGRESS_THRESHOLD:
            return None
        if not self._slot.acquire(blocking=False):
            return None
        return ProgressBar(self, label, length)


class ProgressBar:
    def __init__(self, owner: Progress, label: str, length: int) -> None:
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


class ProgressSink:
    """An :class:`OutputFile` that also moves a progress bar."""

    def __init__(self, file: OutputFile, bar: ProgressBar | None) -> None:
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
