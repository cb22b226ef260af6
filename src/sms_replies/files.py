"""Durable small files: what survives a power cut once the call returns.

Used for the data dir's secrets and lists (callback token, erasure key and
list), the stores' rewrites (Parquet parts, the DuckDB copy of ``erase``) and
the worker state's re-seed.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, text: str, *, append: bool = False) -> None:
    """Write ``text`` to ``path`` (only the owner may read it) and fsync it.

    Without ``append`` the file must not exist yet (``FileExistsError``): a
    secret is never overwritten.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "a" if append else "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
