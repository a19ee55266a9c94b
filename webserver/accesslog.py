"""Access log lines in Common Log Format.

``host - - [day/month/year:hh:mm:ss zone] "request line" status bytes`` -- the format every log
analyser reads. Anything the client controls is escaped so a request cannot forge log lines or
send terminal control sequences to whoever tails the log.
"""

from __future__ import annotations

import time


def _escape_char(char: str) -> str:
    if char == '"':
        return '\\"'
    if char == "\\":
        return "\\\\"
    return f"\\x{ord(char):02x}"


_ESCAPES = {i: _escape_char(chr(i)) for i in [*range(0x20), 0x7F, ord('"'), ord("\\")]}


def escape(text: str) -> str:
    """Control characters as ``\\xNN``, quotes and backslashes backslashed."""
    return text.translate(_ESCAPES)


def format_access_line(host: str, request_line: str, status: int, size: int, when: float) -> str:
    """One CLF line; ``size`` 0 is written ``-`` as the format asks."""
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(when or time.time()))
    return f'{escape(host)} - - [{stamp}] "{escape(request_line)}" {status} {size or "-"}'
