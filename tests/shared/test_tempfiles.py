"""Tests of webclient/_shared/tempfiles.py: a new private file under an unused name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from webclient._shared import tempfiles


def test_a_new_private_file(tmp_path: Path) -> None:
    """The file is new, empty, mode 0600, named by the prefix and this process's tag."""
    fd, path = tempfiles.create_private(str(tmp_path), "body-")
    try:
        info = os.fstat(fd)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == 0
        assert os.path.basename(path).startswith("body-" + tempfiles.PROCESS_TAG)
        assert os.path.dirname(path) == str(tmp_path)
    finally:
        os.close(fd)


def test_names_taken_are_skipped_and_never_opened(tmp_path: Path) -> None:
    """A name already taken (here, the next one, as a symbolic link to a file) is skipped: the
    existing file is neither opened nor changed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    taken = []
    for _ in range(3):
        fd, path = tempfiles.create_private(str(tmp_path), "t-")
        os.close(fd)
        taken.append(path)
    assert len(set(taken)) == 3
    # Plant a link under the name the next call tries first (the counter's next number).
    upcoming = next(tempfiles._numbers) + 1
    planted = tmp_path / f"t-{tempfiles.PROCESS_TAG}{upcoming:x}"
    planted.symlink_to(victim)
    fd, path = tempfiles.create_private(str(tmp_path), "t-")
    os.close(fd)
    assert path != str(planted) and victim.read_bytes() == b"keep"


def test_gives_up_when_every_name_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After ATTEMPTS names taken it raises FileExistsError rather than looping forever."""

    def taken(*_args: object) -> int:
        raise FileExistsError

    monkeypatch.setattr(os, "open", taken)
    with pytest.raises(FileExistsError, match="no unused temporary name"):
        tempfiles.create_private(str(tmp_path), "t-")


def test_a_new_private_file_in_an_open_folder(tmp_path: Path) -> None:
    """create_private_at names the file prefix + tag + number + suffix, in the folder the
    descriptor holds even after the folder's path is moved away."""
    folder = tmp_path / "a"
    folder.mkdir()
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        folder.rename(tmp_path / "b")
        fd, name = tempfiles.create_private_at(folder_fd, ".x.", ".part")
        os.close(fd)
    finally:
        os.close(folder_fd)
    assert name.startswith(".x." + tempfiles.PROCESS_TAG) and name.endswith(".part")
    assert stat.S_IMODE((tmp_path / "b" / name).stat().st_mode) == 0o600
    assert not (tmp_path / "a").exists()


def test_a_taken_name_in_an_open_folder_is_skipped(tmp_path: Path) -> None:
    """create_private_at skips a name held by a planted link and leaves its target alone."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    upcoming = next(tempfiles._numbers) + 1
    planted = tmp_path / f"t-{tempfiles.PROCESS_TAG}{upcoming:x}.part"
    planted.symlink_to(victim)
    folder_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd, name = tempfiles.create_private_at(folder_fd, "t-", ".part")
        os.close(fd)
    finally:
        os.close(folder_fd)
    assert name != planted.name and victim.read_bytes() == b"keep"
