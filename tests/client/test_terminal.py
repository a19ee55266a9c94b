"""Tests of webclient/_terminal.py: what a run shows on stdout and stderr, and how it stops when
a reader goes away. (Whole runs are tested through the CLI in test_cli.py and test_batch.py.)"""

from __future__ import annotations

import io
import json
import threading

from webclient._models import ClientResponse
from webclient._outputs import SpoolSink
from webclient._reporting import CommandOutcome, Progress
from webclient._status import CacheStatus
from webclient._terminal import Terminal
from webclient.commands import parse_commands

URL = "http://127.0.0.1:8080/a.bin"


class _Gone(io.BytesIO):
    """A stdout whose reader went away (``| head``)."""

    def write(self, data: object) -> int:
        raise BrokenPipeError


def _terminal(
    stdout: io.BytesIO | None = None, *, tty: bool = False, quiet: bool = False, json: bool = False
) -> tuple[Terminal, io.BytesIO, io.StringIO]:
    out = stdout if stdout is not None else io.BytesIO()
    err = io.StringIO()
    progress = Progress(err, False, total=1, tty=False)
    terminal = Terminal(
        out,
        err,
        progress,
        threading.Event(),
        quiet=quiet,
        print_bodies=True,
        stdout_is_tty=tty,
        json_lines=json,
    )
    return terminal, out, err


def _shown(body: bytes, content_type: str, *, ok: bool = True) -> CommandOutcome:
    (command,) = parse_commands([f"GET {URL}"])
    response = ClientResponse(
        "GET", URL, 200, "OK", (("Content-Type", content_type),), CacheStatus.MISS,
        body_size=len(body),
    )  # fmt: skip
    spool = SpoolSink()
    spool.write(body)
    spool.close()
    return CommandOutcome(command, ok, f"GET /a.bin: {URL}", response=response, spool=spool)


def test_a_text_body_is_copied_to_stdout_after_its_line_on_stderr() -> None:
    """The report line goes to stderr, the body to stdout, byte for byte."""
    terminal, out, err = _terminal()
    terminal.print(_shown(b"hello\n", "text/plain"))
    assert out.getvalue() == b"hello\n"
    assert err.getvalue() == f"GET /a.bin: {URL}\n"


def test_a_binary_body_on_a_terminal_is_a_note() -> None:
    """On a terminal, binary content is replaced by a one-line note naming it."""
    terminal, out, _ = _terminal(tty=True)
    terminal.print(_shown(b"\x00\x01\x02" * 100, "application/octet-stream"))
    assert out.getvalue().startswith(b"[/a.bin: binary content (application/octet-stream")
    assert b"\x00" not in out.getvalue()


def test_quiet_shows_only_failures() -> None:
    """Quiet: a success prints no line on stderr; a failure still does, with error:."""
    terminal, _, err = _terminal(quiet=True)
    terminal.print(_shown(b"x", "text/plain"))
    assert err.getvalue() == ""
    terminal.print(_shown(b"x", "text/plain", ok=False))
    assert err.getvalue() == f"error: GET /a.bin: {URL}\n"


def test_json_lines_put_one_object_per_command_on_stdout() -> None:
    """With json_lines, stdout holds one JSON object and no body; errors also go to stderr."""
    terminal, out, err = _terminal(json=True)
    terminal.print(_shown(b"body", "text/plain", ok=False))
    record = json.loads(out.getvalue())
    assert record["ok"] is False and b"body" not in out.getvalue()
    assert err.getvalue().startswith("error: ")


def test_control_characters_from_a_server_are_escaped_on_stderr() -> None:
    """A report line carrying a server's text (a reason phrase, a Location) shows its control
    characters escaped, so a server cannot move the cursor or retitle the terminal."""
    terminal, _, err = _terminal()
    outcome = _shown(b"x", "text/plain", ok=False)
    outcome.message = "GET /a.bin: 200 OK\x1b]0;owned\x07\x1b[2J\r\x9b1m"
    terminal.print(outcome)
    terminal.warn("served \x1b[31mred")
    assert err.getvalue() == (
        "error: GET /a.bin: 200 OK\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x9b1m\n"
        "warning: served \\x1b[31mred\n"
    )


def test_a_reader_gone_from_stdout_stops_the_run_quietly() -> None:
    """A broken pipe on stdout sets stop and stdout_closed; nothing more is written there."""
    terminal, _, err = _terminal(_Gone())
    terminal.write_stdout("first\n")
    assert terminal.stop.is_set() and terminal.stdout_closed
    terminal.write_stdout("second\n")  # no error, nothing written
    assert err.getvalue() == ""
