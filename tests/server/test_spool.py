"""The request-body spool: small bodies in memory, large ones in a private file, a full disk 507."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from webserver import HTTPError
from webserver._spool import MEMORY_LIMIT, Spool, locked_temp_file, remove_unheld


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


def test_a_large_body_moves_to_a_private_unnamed_file() -> None:
    """Past the memory limit the body is in a file only this process can read, with no name,
    and it is gone once the spool closes."""
    spool = Spool()
    data = os.urandom(MEMORY_LIMIT + 12345)
    for start in range(0, len(data), 1000):
        spool.write(data[start : start + 1000])
    assert spool.fd >= 0
    assert stat.S_IMODE(os.fstat(spool.fd).st_mode) == 0o600
    assert spool.path is None
    assert spool.size == len(data)
    assert _read_all(spool) == data
    spool.close()
    assert spool.fd == -1


def test_in_a_handlers_folder_the_file_is_named_locked_and_removed(tmp_path: Path) -> None:
    """In a folder a handler named, the spooled file has a name there (so it can be linked),
    is private and locked while in use, and its name is gone once the spool closes."""
    spool = Spool(str(tmp_path))
    spool.write(b"b" * (MEMORY_LIMIT + 1))
    assert spool.path is not None and Path(spool.path).parent == tmp_path
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o600
    with open(spool.path, "rb") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_507(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that cannot be written because the disk is full is refused with 507."""
    spool = Spool()
    monkeypatch.setattr(
        "webserver._spool._private_file", lambda folder: (os.open("/dev/full", os.O_WRONLY), None)
    )
    with pytest.raises(HTTPError) as caught:
        spool.write(b"x" * (MEMORY_LIMIT + 1))
    assert caught.value.status == 507
    spool.close()


def test_remove_unheld_keeps_locked_files(tmp_path: Path) -> None:
    """Files no process holds are removed; a locked one (a live process's) and a folder stay;
    a missing folder holds nothing."""
    (tmp_path / "abandoned").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    fd, held = locked_temp_file(str(tmp_path), "held-")
    try:
        assert remove_unheld(str(tmp_path)) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([Path(held).name, "sub"])
    finally:
        os.close(fd)
    assert remove_unheld(str(tmp_path)) == 1  # unlocked once its holder closed it
    assert remove_unheld(str(tmp_path / "missing")) == 0


def test_a_temp_file_removed_before_its_lock_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean-up that removes a new file between its creation and its lock (it was not yet
    held) does not leave the writer with a nameless file: a new one is made."""
    real_flock = fcntl.flock
    calls: list[str] = []

    def flock_after_a_cleanup(fd: int, operation: int) -> None:
        if not calls:
            calls.append(os.readlink(f"/proc/self/fd/{fd}"))
            remove_unheld(str(tmp_path))
        real_flock(fd, operation)

    monkeypatch.setattr("webserver._spool.fcntl.flock", flock_after_a_cleanup)
    fd, path = locked_temp_file(str(tmp_path), "t-")
    try:
        assert calls and calls[0] != path
        assert os.path.samestat(os.fstat(fd), os.stat(path))
    finally:
        os.close(fd)
