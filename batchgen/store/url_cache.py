"""The verdicts on fetched URL references, kept with the validators that tell whether they changed.

The fetching itself is :mod:`batchgen.pipeline.remote`'s; this module only keeps its answers
(SQLite), so a later estimate or run asks the server "changed?" instead of fetching again.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Fetched:
    """What fetching a URL reference gave: the facts of its bytes, or why there are none.

    ``failure`` says why nothing came back (``HTTP 404``, a refused connection: never the body
    of an error page); ``too_large`` is the cap a body went over.
    """

    url: str
    status: int | None = None
    content_type: str | None = None
    size: int = 0
    sha256: str | None = None
    mime: str | None = None
    damage: tuple[str, str] | None = None
    failure: str | None = None
    too_large: int | None = None


class UrlCache:
    """Verdicts on fetched URLs, with the validators to ask whether they changed (SQLite)."""

    _COLUMNS = "etag, last_modified, status, content_type, size, sha256, mime, rule, detail"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self, create: bool) -> sqlite3.Connection | None:
        if self._db is None and (create or self.path.exists()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, {self._COLUMNS})"
            )
        return self._db

    def get(self, url: str) -> tuple[str | None, str | None, Fetched] | None:
        """``(etag, last_modified, verdict)`` of ``url``, or None."""
        db = self._conn(create=False)
        row = (
            db.execute(f"SELECT {self._COLUMNS} FROM urls WHERE url = ?", (url,)).fetchone()
            if db is not None
            else None
        )
        if row is None:
            return None
        etag, modified, status, ctype, size, sha, mime, rule, detail = row
        damage = (rule, detail) if rule else None
        return etag, modified, Fetched(url, status, ctype, size, sha, mime, damage)

    def put(self, found: Fetched, etag: str | None, last_modified: str | None) -> None:
        db = self._conn(create=True)
        assert db is not None
        rule, detail = found.damage or (None, None)
        db.execute(
            f"INSERT OR REPLACE INTO urls (url, {self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                found.url,
                etag,
                last_modified,
                found.status,
                found.content_type,
                found.size,
                found.sha256,
                found.mime,
                rule,
                detail,
            ),
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
