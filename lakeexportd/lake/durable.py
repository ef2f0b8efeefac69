"""The two file-system steps every writer of the lake shares: fsync and exact-mode mkdir.

Small on purpose: sinks, metadata, cleanup, the lock and the feed registry all publish by
"write a temp, fsync it, rename, fsync the directory", and must agree on how.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path, *, directory: bool = False) -> None:
    """fsync a file, or a directory (after a rename in it, so the rename survives a crash)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, dir_mode: int) -> list[Path]:
    """Create ``path`` and missing parents with ``dir_mode`` exactly; returns the created ones."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    created = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, dir_mode)
        except FileExistsError:
            continue
        os.chmod(directory, dir_mode)  # umask may have removed bits
        created.append(directory)
    return created
