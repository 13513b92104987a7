"""Checks of files in folders that other users may write, where a name is only a hint: what
counts is the file a descriptor holds, and a name is looked at without following links."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def is_at(path: Path, status: os.stat_result) -> bool:
    """Whether the entry at ``path`` (a link not followed) is the file with ``status``."""
    try:
        return same_file(os.stat(path, follow_symlinks=False), status)
    except OSError:
        return False


def is_own_file(status: os.stat_result) -> bool:
    """A regular file of this user's that no other name links to: safe to write."""
    return stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid() and status.st_nlink == 1
