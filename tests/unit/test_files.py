"""Durable private files: owner-only, never overwritten, appended in place."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sms_replies.files import fsync_directory, write_private


def test_a_private_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private(path, "one\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_private(path, "two\n")
    write_private(path, "two\n", append=True)
    assert path.read_text() == "one\ntwo\n"
    fsync_directory(tmp_path)  # a directory can be synced; a file cannot
    with pytest.raises(NotADirectoryError):
        fsync_directory(path)
