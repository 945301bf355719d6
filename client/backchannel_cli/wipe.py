"""Destroying a participant's profile on this machine (`backchannel wipe`).

Everything under the profile's directory goes: the keystore, the local store with its WAL and
shared-memory files, the cached session token (a sealed row of that store) and anything else
found there. Each file is overwritten with zeros and synced before it is unlinked, so its blocks
no longer hold the data where the file system rewrites in place; copies a journal, a snapshot or
an SSD's wear levelling kept are beyond a program's reach (`RESIDUE_NOTE`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import CliError

CHUNK = 1 << 20

RESIDUE_NOTE = (
    "the profile's files were overwritten and removed, but the file system or disk may still "
    "hold copies: backups and snapshots, journaling file systems, and an SSD's worn-out blocks "
    "(wear levelling); destroy those separately, or use full-disk encryption"
)


@dataclass(frozen=True, slots=True)
class Wiped:
    files: int
    bytes: int
    directories: int


def _overwrite(path: Path) -> int:
    """Zero a regular file in place, sync it, and return its size (before unlinking it)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        zeros = bytes(min(size, CHUNK))
        written = 0
        while written < size:
            written += os.write(fd, zeros[: min(CHUNK, size - written)])
        os.fsync(fd)
        return size
    finally:
        os.close(fd)


def wipe_profile(directory: Path) -> Wiped:
    """Overwrite and remove every file under `directory`, then the directory itself."""
    if not directory.is_dir():
        raise CliError(f"there is no profile to wipe in {directory}", code="no_profile")
    files = size = directories = 0
    try:
        for root, dirs, names in os.walk(directory, topdown=False):
            here = Path(root)
            for name in names:
                path = here / name
                if stat.S_ISREG(path.lstat().st_mode):
                    size += _overwrite(path)
                path.unlink()
                files += 1
            for name in dirs:
                path = here / name
                if path.is_symlink():
                    path.unlink()
                else:
                    path.rmdir()
                    directories += 1
        directory.rmdir()
    except OSError as exc:
        raise CliError(
            f"cannot wipe {exc.filename or directory}: {exc.strerror}; the profile is partly "
            "destroyed, run `backchannel wipe` again once this is fixed",
            code="wipe_failed",
        ) from None
    return Wiped(files, size, directories + 1)
