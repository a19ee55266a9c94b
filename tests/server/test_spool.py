"""The request-body spool: small bodies in memory, large ones in a private file, a full disk 507."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from webserver import HTTPError
from webserver._spool import MEMORY_LIMIT, Spool


def _read_all(spool: Spool) -> bytes:
    chunks = []
    while chunk := spool.read_chunk():
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_small_body_stays_in_memory(tmp_path: Path) -> None:
    """A body within the memory limit creates no file and reads back whole."""
    spool = Spool(str(tmp_path))
    spool.write(b"a" * MEMORY_LIMIT)
    assert spool.fd == -1
    assert _read_all(spool) == b"a" * MEMORY_LIMIT
    assert list(tmp_path.iterdir()) == []


def test_a_large_body_moves_to_a_private_unnamed_file(tmp_path: Path) -> None:
    """Past the memory limit the body is in a file only this process can read, with no name
    in the folder, and it is gone once the spool closes."""
    spool = Spool(str(tmp_path))
    data = os.urandom(MEMORY_LIMIT + 12345)
    for start in range(0, len(data), 1000):
        spool.write(data[start : start + 1000])
    assert spool.fd >= 0
    assert stat.S_IMODE(os.fstat(spool.fd).st_mode) == 0o600
    assert list(tmp_path.iterdir()) == []
    assert spool.size == len(data)
    assert _read_all(spool) == data
    spool.close()
    assert spool.fd == -1


def test_a_full_disk_is_507(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that cannot be written because the disk is full is refused with 507."""
    spool = Spool()
    monkeypatch.setattr(
        "webserver._spool._private_file", lambda folder: os.open("/dev/full", os.O_WRONLY)
    )
    with pytest.raises(HTTPError) as caught:
        spool.write(b"x" * (MEMORY_LIMIT + 1))
    assert caught.value.status == 507
    spool.close()
