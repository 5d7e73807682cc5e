"""The hotline's files are its citizens' data: the run folder and everything under it readable by its owner only."""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Folders 0700 and files 0600 for everything created from here on, by this process and by the children it starts
# (Asterisk's recordings and logs, espeak-ng/sox prompt audio, SQLite's database and its -wal/-shm files).
PRIVATE_UMASK = 0o077


def use_private_umask() -> int:
    """Set the process umask so new files are 0600 and folders 0700; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def _tighten(path: str, wanted: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077 or st.st_uid != os.geteuid():
        return False  # a link's target, or a file someone else owns, is not ours to change
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & wanted)
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc.strerror or exc)
        return False
    return True


def make_private(run_dir: Path, extra_files: Iterable[Path] = ()) -> int:
    """Take group and other permissions off run_dir, everything under it and extra_files (made by an older
    version, or before the umask was set); returns how many entries were changed."""
    changed = 0
    if not run_dir.is_dir():
        return 0
    changed += _tighten(str(run_dir), 0o700)
    for root, dirs, files in os.walk(run_dir):
        changed += sum(_tighten(os.path.join(root, d), 0o700) for d in dirs)
        changed += sum(_tighten(os.path.join(root, f), 0o700) for f in files)
    for path in extra_files:
        changed += _tighten(str(path), 0o700)
    if changed:
        log.info("made %d files and folders under %s private to their owner", changed, run_dir)
    return changed
