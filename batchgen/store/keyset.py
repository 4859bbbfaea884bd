"""A set of keys on disk, for scans of manifests of any length."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence


class KeySet:
    """A set of row keys kept on disk, in a private temporary SQLite database that is deleted
    when closed, so that finding duplicate keys costs no memory however long the manifest."""

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect("", isolation_level=None)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("CREATE TABLE keys (key TEXT PRIMARY KEY) WITHOUT ROWID")
        return self._db

    def present(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` that were added before."""
        if not keys:
            return set()
        sql = "SELECT key FROM keys WHERE key IN (SELECT value FROM json_each(?))"
        return {r[0] for r in self._conn().execute(sql, (json.dumps(keys),))}

    def add(self, keys: Sequence[str]) -> None:
        if keys:
            sql = "INSERT OR IGNORE INTO keys SELECT value FROM json_each(?)"
            self._conn().execute(sql, (json.dumps(keys),))

    def add_new(self, keys: Sequence[str]) -> set[str]:
        """Add ``keys``; return those that were not there before."""
        new = set(keys) - self.present(keys)
        self.add(sorted(new))
        return new

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
