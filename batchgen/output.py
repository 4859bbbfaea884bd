"""The output table: one row per manifest row, in manifest order, written from the journal.

Because it is a view of the journal it always agrees with what was charged, and it can be written
at any time (``batchgen export``), even while a run is going on in another process. It is written
to a temporary file and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchgen import journal as J
from batchgen.errors import UsageError

CHUNK = 5000

# (column, arrow type); the first column is named after the manifest's id column.
COLUMNS: list[tuple[str, pa.DataType]] = [
    ("row_number", pa.int64()),
    ("key", pa.string()),
    ("model", pa.string()),
    ("status", pa.string()),
    ("generated", pa.string()),
    ("task_id", pa.string()),
    ("primary_url", pa.string()),
    ("urls", pa.string()),
    ("reserved_credits", pa.int64()),
    ("final_credits", pa.int64()),
    ("error_code", pa.string()),
    ("error_field", pa.string()),
    ("error_message", pa.string()),
    ("request_id", pa.string()),
    ("attempts", pa.int64()),
    ("submitted_at", pa.string()),
    ("finished_at", pa.string()),
    ("download_path", pa.string()),
    ("download_bytes", pa.int64()),
    ("download_sha256", pa.string()),
    ("download_error", pa.string()),
]


def _generated(row: sqlite3.Row, run_id: int | None) -> str:
    gen = row["generated_run"]
    if gen is None:
        return ""
    return "this_run" if run_id is not None and gen == run_id else "kept"


def _records(
    journal: J.Journal, scan: int, current_run: int | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    for r in journal.iter_scan(scan):
        yield (
            r["row_index"],
            {
                "row_number": r["row_number"],
                "key": r["key"],
                "model": r["model"],
                "status": r["state"],
                "generated": _generated(r, current_run),
                "task_id": r["task_id"],
                "primary_url": r["primary_url"],
                "urls": " ".join(json.loads(r["urls"])) if r["urls"] else None,
                "reserved_credits": r["reserved_credits"],
                "final_credits": r["final_credits"],
                "error_code": r["error_code"],
                "error_field": r["error_field"],
                "error_message": r["error_message"],
                "request_id": r["request_id"],
                "attempts": r["attempts"],
                "submitted_at": r["submitted_at"],
                "finished_at": r["finished_at"],
                "download_path": r["download_path"],
                "download_bytes": r["download_bytes"],
                "download_sha256": r["download_sha256"],
                "download_error": r["download_error"],
                "_passthrough": r["passthrough"],
            },
        )


def _extra(journal: J.Journal, scan: int) -> Iterator[tuple[int, dict[str, Any]]]:
    for r in journal.iter_extra(scan):
        yield (
            r["row_index"],
            {
                "row_number": r["row_number"],
                "key": r["key"],
                "status": J.INVALID,
                "error_code": r["error_code"],
                "error_field": r["error_field"],
                "error_message": r["error_message"],
                "reserved_credits": 0,
                "final_credits": 0,
                "attempts": 0,
                "_passthrough": r["passthrough"],
            },
        )


def iter_output(journal: J.Journal, *, current_run: int | None = None) -> Iterator[dict[str, Any]]:
    """Output records of the latest scan, in manifest order (streamed)."""
    scan = journal.last_scan_run()
    if scan is None:
        return
    merged = heapq.merge(
        _records(journal, scan, current_run), _extra(journal, scan), key=lambda t: t[0]
    )
    for _, rec in merged:
        yield rec


def write_output(
    journal: J.Journal,
    path: Path,
    *,
    id_column: str = "id",
    passthrough: Sequence[str] = (),
    current_run: int | None = None,
) -> int:
    """Write the output table (CSV or Parquet by suffix) atomically; return the row count."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UsageError("unsupported output format", str(path), "use a .csv or .parquet file name")
    base_names = [name for name, _ in COLUMNS]
    key_name = id_column if id_column not in base_names else "key"
    extra = [(p if p not in base_names and p != key_name else f"input_{p}") for p in passthrough]
    fields = [pa.field(key_name if n == "key" else n, t) for n, t in COLUMNS]
    fields += [pa.field(name, pa.string()) for name in extra]
    schema = pa.schema(fields)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer: Any
    if suffix == ".csv":
        writer = pacsv.CSVWriter(str(tmp), schema)
    else:
        writer = pq.ParquetWriter(str(tmp), schema)
    count = 0
    try:
        batch: dict[str, list[Any]] = {f.name: [] for f in fields}
        for rec in iter_output(journal, current_run=current_run):
            values = json.loads(rec.pop("_passthrough") or "{}")
            for name, _ in COLUMNS:
                batch[key_name if name == "key" else name].append(rec.get(name))
            for src, dst in zip(passthrough, extra, strict=True):
                v = values.get(src)
                batch[dst].append(None if v is None else str(v))
            count += 1
            if len(batch["status"]) >= CHUNK:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {f.name: [] for f in fields}
        if batch["status"] or count == 0:
            writer.write_table(pa.table(batch, schema=schema))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)
    return count
