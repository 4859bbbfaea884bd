"""The journal: one SQLite file per job, the single source of truth of a run.

Every state change of a row is committed before the next step depends on it; the output table,
``status`` and ``export`` are views of it. Schema changes are named migrations, applied once each
in their own transaction and recorded in ``migrations``.

Tables:

- ``rows``: one per task, keyed by (row key, variant id); a job without ``[variants]`` has one
  task per row, of the empty variant ``''``. Each holds its content (model, prompt, params, reference), its fingerprint, the
  retry epoch that goes into its Idempotency-Key, state, task id, credits, result, error, timings,
  download, ``seen_run`` (the last scan that planned the task), its place in the row's variant
  order (``variant_index``) and its variant's axis values (``axes``, JSON).
- ``extra_rows``: manifest rows that cannot own a key (blank or duplicate key), per scan.
- ``uploads``: the upload cache, sha256 of the bytes -> the service's file id and url.
- ``runs``: one per invocation, with its outcome.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Row states (DESIGN.md). ``ready`` also covers "submitted, outcome unknown": the next run resends
# the same key and body, and the service answers with the original task if there was one.
PENDING = "pending"
READY = "ready"
SUBMITTED = "submitted"
SUCCEEDED = "succeeded"
FAILED = "failed"
INVALID = "invalid"
BLOCKED = "blocked"
TIMED_OUT = "timed_out"
STATES = (PENDING, READY, SUBMITTED, SUCCEEDED, FAILED, INVALID, BLOCKED, TIMED_OUT)
TERMINAL = frozenset({SUCCEEDED, FAILED, INVALID})
IN_FLIGHT = frozenset({SUBMITTED, TIMED_OUT})
TO_SUBMIT = frozenset({PENDING, READY, BLOCKED})


TaskRef = tuple[str, str]
"""A task's identity: (row key, variant id); the variant id is ``""`` for a job without variants."""


def task_ref(task: TaskRef | str) -> TaskRef:
    """``task`` as a (row key, variant id) pair: a bare row key is the empty variant's task."""
    return (task, "") if isinstance(task, str) else (task[0], task[1])


def now_iso() -> str:
    """UTC timestamp with milliseconds, as the API writes them."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            pid INTEGER,
            mode TEXT NOT NULL,
            outcome TEXT,
            exit_code INTEGER,
            summary TEXT
        );
        CREATE TABLE rows (
            key TEXT PRIMARY KEY,
            row_index INTEGER NOT NULL,
            row_number INTEGER NOT NULL,
            seen_run INTEGER NOT NULL,
            model TEXT,
            prompt TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            reference TEXT,
            reference_sha256 TEXT,
            passthrough TEXT NOT NULL DEFAULT '{}',
            fingerprint TEXT,
            epoch INTEGER NOT NULL DEFAULT 0,
            cost INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            task_id TEXT,
            idempotency_key TEXT,
            reserved_credits INTEGER NOT NULL DEFAULT 0,
            final_credits INTEGER NOT NULL DEFAULT 0,
            primary_url TEXT,
            urls TEXT,
            error_code TEXT,
            error_field TEXT,
            error_message TEXT,
            request_id TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            submitted_at TEXT,
            finished_at TEXT,
            generated_run INTEGER,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX rows_by_run_index ON rows (seen_run, row_index);
        CREATE INDEX rows_by_state ON rows (state);
        CREATE TABLE extra_rows (
            run_id INTEGER NOT NULL,
            row_index INTEGER NOT NULL,
            row_number INTEGER NOT NULL,
            key TEXT,
            error_code TEXT NOT NULL,
            error_field TEXT,
            error_message TEXT NOT NULL,
            passthrough TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (run_id, row_index)
        );
        CREATE TABLE uploads (
            sha256 TEXT PRIMARY KEY,
            model TEXT,
            file_id TEXT NOT NULL,
            url TEXT NOT NULL,
            kind TEXT NOT NULL,
            mime_type TEXT,
            name TEXT,
            size INTEGER,
            uploaded_at TEXT NOT NULL
        );
        """,
    ),
    (
        "0002_downloads_and_timings",
        """
        ALTER TABLE rows ADD COLUMN download_path TEXT;
        ALTER TABLE rows ADD COLUMN download_bytes INTEGER;
        ALTER TABLE rows ADD COLUMN download_sha256 TEXT;
        ALTER TABLE rows ADD COLUMN download_error TEXT;
        ALTER TABLE rows ADD COLUMN duration_s REAL;
        """,
    ),
    (
        "0003_download_task_id",
        """
        ALTER TABLE rows ADD COLUMN download_task_id TEXT;
        """,
    ),
    (
        "0004_scan_digest",
        """
        ALTER TABLE rows ADD COLUMN scan_digest BLOB;
        CREATE INDEX rows_by_finished ON rows (finished_at) WHERE duration_s IS NOT NULL;
        """,
    ),
    (
        "0005_tasks_by_variant",
        """
        CREATE TABLE rows_by_task (
            key TEXT NOT NULL,
            variant TEXT NOT NULL DEFAULT '',
            variant_index INTEGER NOT NULL DEFAULT 0,
            axes TEXT NOT NULL DEFAULT '{}',
            row_index INTEGER NOT NULL,
            row_number INTEGER NOT NULL,
            seen_run INTEGER NOT NULL,
            model TEXT,
            prompt TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            reference TEXT,
            reference_sha256 TEXT,
            passthrough TEXT NOT NULL DEFAULT '{}',
            fingerprint TEXT,
            epoch INTEGER NOT NULL DEFAULT 0,
            cost INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            task_id TEXT,
            idempotency_key TEXT,
            reserved_credits INTEGER NOT NULL DEFAULT 0,
            final_credits INTEGER NOT NULL DEFAULT 0,
            primary_url TEXT,
            urls TEXT,
            error_code TEXT,
            error_field TEXT,
            error_message TEXT,
            request_id TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            submitted_at TEXT,
            finished_at TEXT,
            generated_run INTEGER,
            updated_at TEXT NOT NULL,
            download_path TEXT,
            download_bytes INTEGER,
            download_sha256 TEXT,
            download_error TEXT,
            duration_s REAL,
            download_task_id TEXT,
            scan_digest BLOB,
            download_name TEXT,
            PRIMARY KEY (key, variant)
        );
        INSERT INTO rows_by_task (key, row_index, row_number, seen_run, model, prompt, params,
            reference, reference_sha256, passthrough, fingerprint, epoch, cost, state, task_id,
            idempotency_key, reserved_credits, final_credits, primary_url, urls, error_code,
            error_field, error_message, request_id, attempts, submitted_at, finished_at,
            generated_run, updated_at, download_path, download_bytes, download_sha256,
            download_error, duration_s, download_task_id, scan_digest)
        SELECT key, row_index, row_number, seen_run, model, prompt, params,
            reference, reference_sha256, passthrough, fingerprint, epoch, cost, state, task_id,
            idempotency_key, reserved_credits, final_credits, primary_url, urls, error_code,
            error_field, error_message, request_id, attempts, submitted_at, finished_at,
            generated_run, updated_at, download_path, download_bytes, download_sha256,
            download_error, duration_s, download_task_id, scan_digest FROM rows;
        DROP TABLE rows;
        ALTER TABLE rows_by_task RENAME TO rows;
        CREATE INDEX rows_by_run_index ON rows (seen_run, row_index, variant_index);
        CREATE INDEX rows_by_state ON rows (state);
        CREATE INDEX rows_by_finished ON rows (finished_at) WHERE duration_s IS NOT NULL;
        """,
    ),
]


@dataclass(frozen=True, slots=True)
class Upload:
    """A cached upload: what ``referenceMediaItems`` needs, keyed by the bytes' sha256."""

    sha256: str
    file_id: str
    url: str
    kind: str
    mime_type: str | None
    name: str | None
    size: int | None


@dataclass(slots=True)
class ScanTotals:
    """What :meth:`Journal.totals` adds up over the rows of one scan."""

    by_state: dict[str, int] = field(default_factory=dict)
    reserved: int = 0
    charged: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error code -> rows not succeeded
    # Succeeded rows by download outcome, and the bytes on disk.
    downloads: dict[str, int] = field(
        default_factory=lambda: {"downloaded": 0, "failed": 0, "missing": 0, "bytes": 0}
    )

    @property
    def rows(self) -> int:
        return sum(self.by_state.values())


# Columns newer journals have, with what an older one (opened read-only) stands in for them.
_NEWER_COLUMNS = {
    "scan_digest": "NULL",
    "variant": "''",
    "variant_index": "0",
    "axes": "'{}'",
    "download_name": "NULL",
}

TASK_COLUMNS = (
    "key, variant, variant_index, fingerprint, state, task_id, epoch, row_index, passthrough, "
    "seen_run, error_message, scan_digest, download_name"
)
"""The columns planning reads of a task (:meth:`Journal.get_tasks`)."""


class Journal:
    """A job's SQLite journal. Not thread-safe: one per process, used from one event loop."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash (SIGKILL); only an OS crash or
        # power loss can drop the last commits, which idempotent replay then recovers.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.row_factory = sqlite3.Row
        if not readonly:
            self.migrate()
        # A read-only look at a journal of an older version lacks the newer columns.
        names = {r[1] for r in self.db.execute("PRAGMA table_info(rows)")}
        self._stand_ins = {c: f"{v} AS {c}" for c, v in _NEWER_COLUMNS.items() if c not in names}

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; return their names."""
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {r[0] for r in self.db.execute("SELECT name FROM migrations")}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction():
                for statement in sql.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, now_iso())
                )
            applied.append(name)
        return applied

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # -- meta and runs --------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def start_run(self, pid: int, mode: str) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (started_at, pid, mode) VALUES (?, ?, ?)", (now_iso(), pid, mode)
        )
        return int(cur.lastrowid or 0)

    def finish_run(
        self, run_id: int, outcome: str, exit_code: int, summary: dict[str, Any]
    ) -> None:
        self.db.execute(
            "UPDATE runs SET finished_at = ?, outcome = ?, exit_code = ?, summary = ? WHERE id = ?",
            (now_iso(), outcome, exit_code, json.dumps(summary, sort_keys=True), run_id),
        )

    def last_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["summary"] = json.loads(d["summary"]) if d["summary"] else None
            out.append(d)
        return out

    def last_scan_run(self) -> int | None:
        """The run whose manifest scan the output table reflects (the latest scan)."""
        value = self.get_meta("last_scan_run")
        return int(value) if value else None

    # -- rows -----------------------------------------------------------------------------------

    def get_rows(self, keys: Sequence[str], columns: str | None = None) -> dict[str, sqlite3.Row]:
        """The empty variant's tasks of ``keys``, by row key (see :meth:`get_tasks`)."""
        return {k: r for (k, v), r in self.get_tasks(keys, columns).items() if v == ""}

    def get_tasks(
        self, keys: Sequence[str], columns: str | None = None
    ) -> dict[TaskRef, sqlite3.Row]:
        """Every task of the row ``keys``, by (key, variant), one query per call; by default
        the columns planning needs."""
        names = [c.strip() for c in (columns or TASK_COLUMNS).split(",")]
        if "variant" not in names and names != ["*"]:
            names.append("variant")
        columns = ", ".join(self._stand_ins.get(c, c) for c in names)
        sql = f"SELECT {columns} FROM rows WHERE key IN (SELECT value FROM json_each(?))"
        return {(r["key"], r["variant"]): r for r in self.db.execute(sql, (json.dumps(keys),))}

    # -- scans ----------------------------------------------------------------------------------
    #
    # A scan marks the rows it finds with its id (``seen_run``). Rows the previous scan saw and
    # that need no change are "carried": not written, only listed in a temporary table, so that
    # re-scanning an unchanged manifest costs no write per row.

    def start_scan(self) -> int | None:
        """Begin recording a scan; return the previous scan's id (None for the first)."""
        self.db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS carried (key TEXT NOT NULL, variant TEXT NOT NULL)"
        )
        self.db.execute("DELETE FROM temp.carried")
        return self.last_scan_run()

    def carry(self, tasks: Sequence[TaskRef]) -> None:
        """Tasks found again by this scan that keep the previous scan's id for now."""
        if tasks:
            self.db.execute(
                "INSERT INTO temp.carried (key, variant) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                "FROM json_each(?)",
                (json.dumps(tasks),),
            )

    def finish_scan(self, run_id: int, previous_scan: int | None, carried: int) -> int:
        """Give every row of the scan one id and record it as the latest scan; return the id.

        Rows written by the scan carry ``run_id``; carried rows still carry ``previous_scan``.
        When every row of the previous scan was carried, whichever group is smaller moves to the
        other's id; otherwise (rows left the manifest) the carried rows move to ``run_id``.
        """
        with self.transaction():
            scan_id = run_id
            if previous_scan is not None and carried:
                db = self.db
                left = db.execute(
                    "SELECT COUNT(*) FROM rows WHERE seen_run = ?", (previous_scan,)
                ).fetchone()[0]
                written = db.execute(
                    "SELECT COUNT(*) FROM rows WHERE seen_run = ?", (run_id,)
                ).fetchone()[0]
                if left == carried and written < carried:
                    db.execute(
                        "UPDATE rows SET seen_run = ? WHERE seen_run = ?", (previous_scan, run_id)
                    )
                    db.execute("DELETE FROM extra_rows WHERE run_id = ?", (previous_scan,))
                    db.execute(
                        "UPDATE extra_rows SET run_id = ? WHERE run_id = ?",
                        (previous_scan, run_id),
                    )
                    scan_id = previous_scan
                else:
                    db.execute(
                        "UPDATE rows SET seen_run = ? "
                        "WHERE (key, variant) IN (SELECT key, variant FROM temp.carried)",
                        (run_id,),
                    )
            self.db.execute("DELETE FROM temp.carried")
            self.set_meta("last_scan_run", str(scan_id))
        return scan_id

    def get_row(self, task: TaskRef | str) -> sqlite3.Row | None:
        """One task (a bare row key: the empty variant's)."""
        key, variant = task_ref(task)
        return self.db.execute(
            "SELECT * FROM rows WHERE key = ? AND variant = ?", (key, variant)
        ).fetchone()

    def upsert_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or replace whole tasks, or update some fields of existing ones (one
        transaction for the batch). A row without ``variant`` is the empty variant's task."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in rows:
            if "variant" not in r:
                r = {"key": r["key"], "variant": "", **r}
            groups.setdefault(tuple(r), []).append(r)
        stamp = now_iso()
        with self.transaction():
            seen = groups.pop(("key", "variant", "seen_run"), [])
            if seen:  # tasks a re-scan only marks as seen: one statement for the whole batch
                for run_id in {r["seen_run"] for r in seen}:
                    tasks = json.dumps(
                        [(r["key"], r["variant"]) for r in seen if r["seen_run"] == run_id]
                    )
                    self.db.execute(
                        "UPDATE rows SET seen_run = ? WHERE (key, variant) IN "
                        "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
                        (run_id, tasks),
                    )
            for cols_t, members in groups.items():
                cols = [*cols_t, "updated_at"]
                values = [(*(r[c] for c in cols_t), stamp) for r in members]
                if "state" in cols_t:  # a whole row: insert, or replace what the key had
                    marks = ",".join("?" * len(cols))
                    updates = ",".join(f"{c} = excluded.{c}" for c in cols if c != "key")
                    sql = (
                        f"INSERT INTO rows ({','.join(cols)}) VALUES ({marks}) "
                        f"ON CONFLICT(key, variant) DO UPDATE SET {updates}"
                    )
                else:  # a partial update of an existing task (kept or resumed)
                    ident = ("key", "variant")
                    rest = [c for c in cols if c not in ident]
                    sets = ",".join(f"{c} = ?" for c in rest)
                    sql = f"UPDATE rows SET {sets} WHERE key = ? AND variant = ?"
                    values = [
                        (*(r[c] for c in rest if c != "updated_at"), stamp, r["key"], r["variant"])
                        for r in members
                    ]
                self.db.executemany(sql, values)

    def update_row(self, task: TaskRef | str, **fields: Any) -> None:
        """Commit a change of one task (its own transaction: autocommit); a bare row key names
        the empty variant's task."""
        key, variant = task_ref(task)
        fields["updated_at"] = now_iso()
        sets = ",".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE rows SET {sets} WHERE key = ? AND variant = ?",
            (*fields.values(), key, variant),
        )

    def update_rows(self, changes: Sequence[tuple[TaskRef | str, dict[str, Any]]]) -> None:
        """Commit several task changes in one transaction."""
        if not changes:
            return
        with self.transaction():
            for task, fields in changes:
                self.update_row(task, **fields)

    def run_results(self, run_id: int) -> tuple[int, int]:
        """``(rows generated, credits charged)`` by the tasks that run ``run_id`` settled."""
        n, charged = self.db.execute(
            "SELECT SUM(state = ?), SUM(final_credits) FROM rows WHERE generated_run = ?",
            (SUCCEEDED, run_id),
        ).fetchone()
        return int(n or 0), int(charged or 0)

    def add_extra_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO extra_rows (run_id, row_index, row_number, key, error_code, "
                "error_field, error_message, passthrough) VALUES (:run_id, :row_index, :row_number, "
                ":key, :error_code, :error_field, :error_message, :passthrough)",
                list(rows),
            )

    def iter_scan(
        self, run_id: int, states: Iterable[str] | None = None, page: int = 2000
    ) -> Iterator[sqlite3.Row]:
        """Tasks seen by scan ``run_id`` in manifest order, then variant order, paged (never
        all in memory)."""
        wanted = tuple(states) if states is not None else None
        last = (-1, -1)
        order = "ORDER BY row_index, variant_index LIMIT ?"
        after = "(row_index, variant_index) > (?, ?)"
        while True:
            if wanted is None:
                batch = self.db.execute(
                    f"SELECT * FROM rows WHERE seen_run = ? AND {after} {order}",
                    (run_id, *last, page),
                ).fetchall()
            else:
                marks = ",".join("?" * len(wanted))
                batch = self.db.execute(
                    f"SELECT * FROM rows WHERE seen_run = ? AND {after} AND state IN ({marks}) "
                    + order,
                    (run_id, *last, *wanted, page),
                ).fetchall()
            if not batch:
                return
            yield from batch
            last = (batch[-1]["row_index"], batch[-1]["variant_index"])

    def iter_extra(self, run_id: int) -> Iterator[sqlite3.Row]:
        yield from self.db.execute(
            "SELECT * FROM extra_rows WHERE run_id = ? ORDER BY row_index", (run_id,)
        )

    def totals(self, scan_id: int) -> ScanTotals:
        """Rows of a scan by state, credits, errors and downloads, in one pass over the rows.

        Extra rows (blank or duplicate keys) count as invalid, with their error code.
        """
        t = ScanTotals()
        for state, code, n, reserved, charged, ok, failed, size in self.db.execute(
            "SELECT state, error_code, COUNT(*), SUM(reserved_credits), SUM(final_credits), "
            "SUM(download_path IS NOT NULL AND download_error IS NULL), "
            "SUM(download_error IS NOT NULL), "
            "SUM(CASE WHEN download_error IS NULL THEN download_bytes END) "
            "FROM rows WHERE seen_run = ? GROUP BY state, error_code",
            (scan_id,),
        ):
            t.by_state[state] = t.by_state.get(state, 0) + n
            t.reserved += reserved or 0
            t.charged += charged or 0
            if state == SUCCEEDED:
                t.downloads["downloaded"] += ok or 0
                t.downloads["failed"] += failed or 0
                t.downloads["missing"] += n - (ok or 0) - (failed or 0)
                t.downloads["bytes"] += size or 0
            elif code is not None:
                t.errors[code] = t.errors.get(code, 0) + n
        for code, n in self.db.execute(
            "SELECT error_code, COUNT(*) FROM extra_rows WHERE run_id = ? GROUP BY error_code",
            (scan_id,),
        ):
            t.by_state[INVALID] = t.by_state.get(INVALID, 0) + n
            t.errors[code] = t.errors.get(code, 0) + n
        return t

    def block_unsent(self, scan_id: int, code: str, message: str) -> None:
        """Mark the scan's rows that were never sent (pending/ready) as blocked, with why."""
        self.db.execute(
            "UPDATE rows SET state = ?, error_code = ?, error_message = ?, updated_at = ? "
            "WHERE seen_run = ? AND state IN ('pending', 'ready')",
            (BLOCKED, code, message, now_iso(), scan_id),
        )

    def by_model(self, scan_id: int) -> list[dict[str, Any]]:
        """Per model of the scan: rows, succeeded, credits charged and reserved (model order)."""
        return [
            {
                "model": r[0] or "",
                "rows": r[1],
                "succeeded": r[2],
                "charged": r[3],
                "reserved": r[4],
            }
            for r in self.db.execute(
                "SELECT model, COUNT(*), SUM(state = 'succeeded'), "
                "COALESCE(SUM(final_credits), 0), COALESCE(SUM(reserved_credits), 0) "
                "FROM rows WHERE seen_run = ? GROUP BY model ORDER BY model",
                (scan_id,),
            )
        ]

    def scan_durations(self, scan_id: int) -> dict[str, list[float]]:
        """The task durations (seconds) of the scan's rows, by model."""
        found: dict[str, list[float]] = {}
        for model, seconds in self.db.execute(
            "SELECT model, duration_s FROM rows WHERE seen_run = ? AND duration_s IS NOT NULL",
            (scan_id,),
        ):
            found.setdefault(model or "", []).append(float(seconds))
        return found

    def upload_count(self) -> int:
        """How many reference files the upload cache holds."""
        return int(self.db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0])

    def durations(self, limit: int = 2000) -> list[tuple[str, float]]:
        """Recent (model, seconds from submit to done) pairs, for estimates and first polls."""
        return [
            (r[0], float(r[1]))
            for r in self.db.execute(
                "SELECT model, duration_s FROM rows WHERE duration_s IS NOT NULL "
                "ORDER BY finished_at DESC LIMIT ?",
                (limit,),
            )
        ]

    # -- uploads --------------------------------------------------------------------------------

    def get_upload(self, sha256: str) -> Upload | None:
        r = self.db.execute("SELECT * FROM uploads WHERE sha256 = ?", (sha256,)).fetchone()
        if r is None:
            return None
        return Upload(
            r["sha256"], r["file_id"], r["url"], r["kind"], r["mime_type"], r["name"], r["size"]
        )

    def put_upload(self, upload: Upload, model: str | None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (sha256, model, file_id, url, kind, mime_type, name, size, "
            "uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                upload.sha256,
                model,
                upload.file_id,
                upload.url,
                upload.kind,
                upload.mime_type,
                upload.name,
                upload.size,
                now_iso(),
            ),
        )

    def cached_upload_shas(self, shas: Iterable[str]) -> set[str]:
        shas = list(shas)
        found: set[str] = set()
        for start in range(0, len(shas), 500):
            chunk = shas[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self.db.execute(
                    f"SELECT sha256 FROM uploads WHERE sha256 IN ({marks})", chunk
                )
            )
        return found


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error); nests by doing nothing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.outer:
            return
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
