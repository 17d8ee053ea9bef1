"""fsync helpers for files that must survive a crash whole (candidate parts, RM checkpoints).

A rename is durable only once the directory holding it is fsynced, and the renamed file's bytes only once the
file itself was; both stores call these two around every rename.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file"]


def fsync_file(path: str | Path) -> None:
    """Flush a file's bytes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(d: str | Path) -> None:
    """Make renames and unlinks in `d` durable (a no-op where the filesystem cannot fsync a directory)."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
