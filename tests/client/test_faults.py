"""Tests of webclient/_faults.py: which failures are a full disk, a read-only folder, a busy
index or real damage (only the last rebuilds the index)."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from webclient._faults import Fault, classify, disk_full, sqlite_code


def _sqlite_error(code: int, text: str = "error") -> sqlite3.Error:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (OSError(errno.ENOSPC, "full"), Fault.FULL),
        (OSError(errno.EDQUOT, "quota"), Fault.FULL),
        (OSError(errno.EROFS, "read-only"), Fault.READ_ONLY),
        (OSError(errno.EACCES, "denied"), Fault.READ_ONLY),
        (OSError(errno.EPERM, "not permitted"), Fault.READ_ONLY),
        (OSError(errno.EIO, "i/o"), Fault.OTHER),
        (_sqlite_error(13), Fault.FULL),
        (_sqlite_error(8), Fault.READ_ONLY),
        (_sqlite_error(5), Fault.BUSY),
        (_sqlite_error(6), Fault.BUSY),
        (_sqlite_error(11), Fault.DAMAGED),
        (_sqlite_error(26), Fault.DAMAGED),
        (_sqlite_error(8 | (1 << 8)), Fault.READ_ONLY),  # an extended code: its low byte counts
        (_sqlite_error(1), Fault.OTHER),
        (sqlite3.OperationalError("database is locked"), Fault.BUSY),
        (sqlite3.DatabaseError("file is not a database"), Fault.DAMAGED),
        (sqlite3.DatabaseError("database disk image is malformed"), Fault.DAMAGED),
        (sqlite3.OperationalError("something else"), Fault.OTHER),
    ],
)
def test_each_failure_is_classified(exc: BaseException, fault: Fault) -> None:
    """Errno values and SQLite result codes (or, without a code, the message) give the fault."""
    assert classify(exc) is fault


def test_a_real_damaged_index_is_classified_as_damage(tmp_path: Path) -> None:
    """SQLite's own error for a file that is not a database is DAMAGED, not anything milder."""
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"not a database at all, just text" * 64)
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError) as caught:
            db.execute("SELECT * FROM sqlite_master").fetchall()
    finally:
        db.close()
    assert classify(caught.value) is Fault.DAMAGED
    assert sqlite_code(caught.value) in (26, None)


def test_disk_full_reads_the_file_system(tmp_path: Path) -> None:
    """A folder on a file system with room is not full; a missing folder is not either."""
    assert disk_full(tmp_path) is (os.statvfs(tmp_path).f_bavail == 0)
    assert disk_full(tmp_path / "missing") is False
