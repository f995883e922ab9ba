"""Atomic file replacement: a reader, or a restart after a crash or a power cut, sees either
the old content of a path or the new one, never a torn write.

The recipe: write a temporary file in the same folder, fsync it, rename it over the target
(atomic on POSIX within one filesystem), then fsync the folder so that the rename itself is
on disk. Without the first fsync a power cut after the rename can leave a renamed but empty
file; without the second, the old file can come back.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path) -> Path:
    # Hidden (globs such as "snapshot-*.bin" skip it) and unique per writer: two processes
    # replacing the same file must not share a temporary file.
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def fsync_directory(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write `path`'s new content to (for writers that want a path,
    such as pyarrow); on a clean exit it is fsynced and renamed over `path`, and the folder
    fsynced. On an exception the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    partial = temporary_path(path)
    try:
        yield partial
        _fsync_file(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as partial, open(partial, "wb") as out:
        out.write(data)
