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
