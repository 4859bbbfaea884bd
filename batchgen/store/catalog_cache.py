"""The cached live catalog: one JSON file per service in the user's cache folder.

It holds the ``GET /api/v1/models`` payload as it came, the time it was fetched and the
response's validators (ETag, Last-Modified) for a conditional GET. No HTTP here: the fetch is
``batchgen.pipeline.catalog_fetch``. A file that cannot be read counts as no cache at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.store.files import write_atomic


@dataclass(frozen=True)
class CachedCatalog:
    """One cache entry: the payload, when it was fetched (epoch seconds), its validators."""

    base_url: str
    payload: dict[str, Any]
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None


class CatalogCache:
    """The cache folder; an entry per base URL (different services, different catalogs)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, base_url: str) -> Path:
        """The entry's file for ``base_url``."""
        digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
        return self.folder / f"models-{digest}.json"

    def load(self, base_url: str) -> CachedCatalog | None:
        """The entry for ``base_url``, or None when there is none or it is unreadable."""
        try:
            data = json.loads(self.path(base_url).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
            return None
        fetched = data.get("fetched_at")
        if isinstance(fetched, bool) or not isinstance(fetched, int | float):
            return None
        return CachedCatalog(
            base_url=str(data.get("base_url") or base_url),
            payload=data["payload"],
            fetched_at=float(fetched),
            etag=data.get("etag") if isinstance(data.get("etag"), str) else None,
            last_modified=(
                data.get("last_modified") if isinstance(data.get("last_modified"), str) else None
            ),
        )

    def save(self, entry: CachedCatalog) -> Path:
        """Write ``entry`` atomically (a reader never sees half a file); returns its path."""
        path = self.path(entry.base_url)
        record = {
            "base_url": entry.base_url,
            "fetched_at": entry.fetched_at,
            "etag": entry.etag,
            "last_modified": entry.last_modified,
            "payload": entry.payload,
        }
        write_atomic(path, json.dumps(record).encode("utf-8"))
        return path
