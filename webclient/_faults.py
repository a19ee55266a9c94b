"""What a failed disk or SQLite operation means for the cache, so that only real damage rebuilds.

Rules: a full disk or quota (ENOSPC, EDQUOT, ``SQLITE_FULL``) is :attr:`Fault.FULL`; a folder or
index that cannot be written (EROFS, EACCES, EPERM, ``SQLITE_READONLY``) is
:attr:`Fault.READ_ONLY`; a lock held by another process is :attr:`Fault.BUSY`; only a file that
is not a database or is malformed (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) is
:attr:`Fault.DAMAGED`. A write the disk refused is raised as :class:`Unwritable`, already
reported, which the writers turn into "not stored".
"""

from __future__ import annotations

import enum
import errno
import os
from pathlib import Path

from .errors import CacheError


class Fault(enum.Enum):
    """What a failed disk or SQLite operation means for the cache."""

    FULL = "full"
    READ_ONLY = "read-only"
    BUSY = "busy"
    DAMAGED = "damaged"
    OTHER = "other"


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: SQLite primary result codes (the low byte of the extended code).
_SQLITE_FAULTS = {
    5: Fault.BUSY,  # SQLITE_BUSY
    6: Fault.BUSY,  # SQLITE_LOCKED
    8: Fault.READ_ONLY,  # SQLITE_READONLY
    11: Fault.DAMAGED,  # SQLITE_CORRUPT
    13: Fault.FULL,  # SQLITE_FULL
    26: Fault.DAMAGED,  # SQLITE_NOTADB
}


#: SQLITE_IOERR, SQLITE_CANTOPEN.
SQLITE_TRY_READING = frozenset({10, 14})


def sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def classify(exc: BaseException) -> Fault:
    """Classify an error, so that only real damage leads to a rebuild."""
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return Fault.FULL
        return Fault.READ_ONLY if exc.errno in _READ_ONLY_ERRNOS else Fault.OTHER
    code = sqlite_code(exc)
    if code is not None:
        return _SQLITE_FAULTS.get(code, Fault.OTHER)
    text = str(exc)
    if "locked" in text or "busy" in text:
        return Fault.BUSY
    return Fault.DAMAGED if "not a database" in text or "malformed" in text else Fault.OTHER


class Unwritable(CacheError):
    """A write that the disk refused (full, or read-only); already reported with a warning."""


def disk_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has no block left (for a clearer warning)."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False
