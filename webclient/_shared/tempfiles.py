"""A new private file under a name no other process or thread holds, in a folder given by its
path (:func:`create_private`) or by an open descriptor (:func:`create_private_at`).

Rules: the file is created with ``O_CREAT | O_EXCL`` (never an existing file, never through a
symbolic link someone planted), mode 0600, close-on-exec; its name is the prefix, a tag of this
process (its pid and random bytes) and a counter, so names of live processes never collide and
a name taken by a leftover file is skipped; after :data:`ATTEMPTS` names taken, it gives up with
:class:`FileExistsError`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

#: Distinguishes the temporary files of this process from those of others.
PROCESS_TAG = f"{os.getpid():x}{os.urandom(3).hex()}"
#: Names tried before giving up: only leftovers of earlier runs can hold one.
ATTEMPTS = 100
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_numbers = itertools.count()


def create_private(folder: str, prefix: str) -> tuple[int, str]:
    """A new file in ``folder`` named ``prefix`` + a unique tail: its descriptor and path."""
    fd, name = _first_unused(prefix, "", lambda name: os.open(f"{folder}/{name}", _FLAGS, 0o600))
    return fd, f"{folder}/{name}"


def create_private_at(folder_fd: int, prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new file named ``prefix`` + a unique tail + ``suffix`` in the folder open as
    ``folder_fd``, so a folder swapped for a symbolic link meanwhile cannot redirect it: its
    descriptor and name."""
    return _first_unused(
        prefix, suffix, lambda name: os.open(name, _FLAGS, 0o600, dir_fd=folder_fd)
    )


def _first_unused(prefix: str, suffix: str, create: Callable[[str], int]) -> tuple[int, str]:
    for _ in range(ATTEMPTS):
        name = f"{prefix}{PROCESS_TAG}{next(_numbers):x}{suffix}"
        try:
            return create(name), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name for {prefix}...{suffix}")
