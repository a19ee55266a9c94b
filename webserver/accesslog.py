"""Access log lines: Common Log Format, Combined Log Format, or one JSON object per line.

``common``: ``host - - [day/month/year:hh:mm:ss zone] "request line" status bytes`` -- the format
every log analyser reads; ``combined`` adds ``"referer" "user-agent"`` (Apache's and nginx's
default); ``json`` is one object per line for log pipelines. Anything the client controls is
escaped so a request cannot forge log lines or send terminal control sequences to whoever tails
the log: control characters as ``\\xNN`` and quotes backslashed in the text formats, JSON string
escapes (all non-ASCII as ``\\uNNNN``) in ``json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

#: The values of ``--access-log-format``.
ACCESS_LOG_FORMATS = ("common", "combined", "json")


def _escape_char(char: str) -> str:
    if char == '"':
        return '\\"'
    if char == "\\":
        return "\\\\"
    return f"\\x{ord(char):02x}"


#: C0 and C1 controls (0x9b is a one-byte CSI to some terminals), DEL, quote and backslash.
_ESCAPES = {
    i: _escape_char(chr(i)) for i in [*range(0x20), *range(0x7F, 0xA0), ord('"'), ord("\\")]
}


def escape(text: str) -> str:
    """Control characters (C0, DEL and C1) as ``\\xNN``, quotes and backslashes backslashed."""
    return text.translate(_ESCAPES)


def _field(fields: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of a request field; names arrive lower-case."""
    return next((value for field, value in fields if field == name), None)


def format_access_line(
    host: str,
    request_line: str,
    status: int,
    size: int,
    when: float,
    *,
    fmt: str = "common",
    fields: Iterable[tuple[str, str]] = (),
) -> str:
    """One log line in ``fmt``; ``fields`` are the request's (lower-case names), for the
    Referer and User-Agent of ``combined`` and ``json``. In the text formats ``size`` 0 and a
    missing field are written ``-`` as the formats ask."""
    when = when or time.time()
    if fmt == "json":
        return json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when)),
                "host": host,
                "request": request_line,
                "status": status,
                "size": size,
                "referer": _field(fields, "referer"),
                "user_agent": _field(fields, "user-agent"),
            }
        )
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(when))
    line = f'{escape(host)} - - [{stamp}] "{escape(request_line)}" {status} {size or "-"}'
    if fmt == "combined":
        referer = escape(_field(fields, "referer") or "-")
        agent = escape(_field(fields, "user-agent") or "-")
        line += f' "{referer}" "{agent}"'
    return line
