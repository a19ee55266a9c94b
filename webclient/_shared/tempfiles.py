"""A new private file under a name no other process or thread holds.

Rules: the file is created with ``O_CREAT | O_EXCL`` (never an existing file, never through a
symbolic link someone planted), mode 0600, close-on-exec; its name is the prefix, a tag of this
process (its pid and random bytes) and a counter, so names of live processes never collide and
a name taken by a leftover file is skipped; after :data:`ATTEMPTS` names taken, it gives up with
:class:`FileExistsError`.
"""

from __future__ import annotations

import itertools
import os

#: Distinguishes the temporary files of this process from those of others.
PROCESS_TAG = f"{os.getpid():x}{os.urandom(3).hex()}"
#: Names tried before giving up: only leftovers of earlier runs can hold one.
ATTEMPTS = 100
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_numbers = itertools.count()


def create_private(folder: str, prefix: str) -> tuple[int, str]:
    """A new file in ``folder`` named ``prefix`` + a unique tail: its descriptor and path."""
    for _ in range(ATTEMPTS):
        path = f"{folder}/{prefix}{PROCESS_TAG}{next(_numbers):x}"
        try:
            return os.open(path, _FLAGS, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name in {folder}")
