"""Atomic file writes: the one way batchgen replaces a file (output table, report, downloads,
estimate tables).

The new content goes to a temporary file beside the destination, is flushed to disk (fsync), then
renamed over it, so a reader sees the old file or the new one, never half of one, even after a
crash or Ctrl-C; on any error the temporary file is removed and the old file stays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_beside(path: Path) -> Path:
    """The temporary name used while ``path`` is written (hidden, unique to the process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def commit(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    ::

        with replacing(out) as tmp:
            tmp.write_text(page)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return path
