"""Sizes as people write them on a command line, and as a program reports them.

Rules: a size is digits with an optional binary unit ``K``, ``M``, ``G`` or ``T`` (any case,
optionally followed by ``B`` or ``iB``; ``K`` is 1024 bytes), spaces allowed around; anything else
is a :class:`ValueError` whose message is one sentence for a user, which each package raises as
its own ``ConfigError``.
"""

from __future__ import annotations

import re

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": 1024 * GIB}


def parse_size(text: str) -> int:
    """Read ``512``, ``64K``, ``10MiB`` or ``1G`` as a byte count (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use a number with an optional K, M, G or T)")
    number, unit, _ = match.groups()
    return int(number) * _UNITS[unit.lower()]


def human_size(size: float) -> str:
    """A byte count as people read it: ``512 bytes``, ``1.5 KiB``, ``2.0 GiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
