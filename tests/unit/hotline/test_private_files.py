"""The run folder is made private to its owner: loose modes left by an older version are tightened, links and
others' files left alone, and the umask the hotline sets makes new files 0600 and folders 0700."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotline.private_files import make_private, use_private_umask


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_loose_files_and_folders_are_tightened(tmp_path: Path, loose_umask: None) -> None:
    run = tmp_path / "var"
    (run / "recordings" / "calls").mkdir(parents=True)
    (run / "hotline.db").write_bytes(b"")
    (run / "recordings" / "C-1.wav").write_bytes(b"RIFF")
    (run / "recordings" / "calls" / "x-agent.wav").write_bytes(b"RIFF")
    script = run / "tool.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    outside = tmp_path / "shared.txt"
    outside.write_text("not the hotline's")
    (run / "link").symlink_to(outside)
    db_elsewhere = tmp_path / "db" / "hotline.db"
    db_elsewhere.parent.mkdir()
    db_elsewhere.write_bytes(b"")
    assert mode(run) == 0o755 and mode(run / "hotline.db") == 0o644

    changed = make_private(run, [db_elsewhere, db_elsewhere.with_name("hotline.db-wal")])

    assert changed == 8
    for folder in (run, run / "recordings", run / "recordings" / "calls"):
        assert mode(folder) == 0o700, folder
    for file in (run / "hotline.db", run / "recordings" / "C-1.wav", run / "recordings" / "calls" / "x-agent.wav",
                 db_elsewhere):
        assert mode(file) == 0o600, file
    assert mode(script) == 0o700  # still runnable by its owner
    assert mode(outside) == 0o644  # a link is not followed out of the run folder
    assert make_private(run) == 0  # nothing left to do


def test_the_private_umask_makes_new_files_0600_and_folders_0700(tmp_path: Path, loose_umask: None) -> None:
    previous = use_private_umask()
    try:
        (tmp_path / "new").mkdir()
        (tmp_path / "new" / "file").write_bytes(b"")
        fd = os.open(tmp_path / "sqlite-like", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
    finally:
        os.umask(previous)
    assert previous == 0o022
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "file") == 0o600
    assert mode(tmp_path / "sqlite-like") == 0o600
