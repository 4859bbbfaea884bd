"""Reference cells: a URL, or a local path relative to the manifest's folder.

The one resolver of reference paths, used by the planner, the uploader and the report alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse


def is_url(cell: str) -> bool:
    """Whether a reference cell is an http(s) URL (fetched) rather than a local path."""
    return urlparse(cell).scheme in ("http", "https")


def resolve_reference(cell: str, base_dir: Path) -> Path:
    """A local reference cell as a path: ``~`` expanded, relative to the manifest's folder."""
    path = Path(os.path.expanduser(cell))
    return path if path.is_absolute() else base_dir / path
