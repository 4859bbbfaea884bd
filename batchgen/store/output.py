"""The output table: one row per task (per manifest row for a job without variants), in
manifest order then variant order, written from the journal.

Because it is a view of the journal it always agrees with what was charged, and it can be written
at any time (``batchgen export``), even while a run is going on in another process. It is written
to a temporary file and renamed, so a reader never sees half a table.

The Parquet table is typed: integers int64 (a missing value is null, and pandas reads them as
``Int64``), ``urls`` a list of strings, timestamps ``timestamp[ms, UTC]``. The CSV table holds the same values as text: ``urls``
space-separated, timestamps as the journal writes them (``2026-05-11T00:00:00.000Z``).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.store import journal as J
from batchgen.store.files import replacing

CHUNK = 5000

# (column, type: string, int64, list (of strings) or timestamp (ms, UTC)); the first column is
# named after the manifest's id column.
COLUMNS: list[tuple[str, str]] = [
    ("row_number", "int64"),
    ("key", "string"),
    ("model", "string"),
    ("status", "string"),
    ("generated", "string"),
    ("task_id", "string"),
    ("primary_url", "string"),
    ("urls", "list"),
    ("reserved_credits", "int64"),
    ("final_credits", "int64"),
    ("error_code", "string"),
    ("error_field", "string"),
    ("error_message", "string"),
    ("request_id", "string"),
    ("attempts", "int64"),
    ("submitted_at", "timestamp"),
    ("finished_at", "timestamp"),
    ("download_path", "string"),
    ("download_bytes", "int64"),
    ("download_sha256", "string"),
    ("download_error", "string"),
]


# The SQL expression of each output column (in COLUMNS order), for journal rows and extra rows.
_ROW_EXPRS = [
    "row_number",
    "key",
    "model",
    "state",
    "CASE WHEN generated_run IS NULL THEN NULL WHEN generated_run = :run THEN 'this_run' "
    "ELSE 'kept' END",
    "task_id",
    "primary_url",
    "urls",
    "reserved_credits",
    "final_credits",
    "error_code",
    "error_field",
    "error_message",
    "request_id",
    "attempts",
    "submitted_at",
    "finished_at",
    "download_path",
    "download_bytes",
    "download_sha256",
    "download_error",
]
_EXTRA_EXPRS = [
    "row_number",
    "key",
    "NULL",
    "'invalid'",
    "NULL",
    "NULL",
    "NULL",
    "NULL",
    "0",
    "0",
    "error_code",
    "error_field",
    "error_message",
    "NULL",
    "0",
    "NULL",
    "NULL",
    "NULL",
    "NULL",
    "NULL",
    "NULL",
]
# The journal keeps result URLs as a JSON list (json.dumps: '["a", "b"]'); the CSV shows them
# space-separated, the Parquet table as a list (see _url_lists).
_URLS = (
    "CASE WHEN urls IS NULL OR urls = '[]' THEN NULL ELSE replace(replace(replace(replace("
    "urls, '[\"', ''), '\"]', ''), '\", \"', ' '), '\",\"', ' ') END"
)
_URL_LISTS = "NULLIF(urls, '[]')"
_ROW_FROM = (
    "FROM rows WHERE seen_run = :scan AND (row_index, variant_index) > (:after_row, :after_variant) "
    "ORDER BY row_index, variant_index LIMIT :limit"
)
_EXTRA_FROM = "FROM extra_rows WHERE run_id = :scan ORDER BY row_index"
VARIANT_SLOTS = 1 << 20
"""Orders tasks: row_index * VARIANT_SLOTS + variant_index (a row has fewer variants)."""
_ROW_ORDER = f"row_index * {VARIANT_SLOTS} + variant_index"
_EXTRA_ORDER = f"row_index * {VARIANT_SLOTS}"


def columns_for(axes: Sequence[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """The output columns (name, type) and their SQL over journal rows and extra rows: with
    variant ``axes``, ``variant`` and one column per axis follow the key (long form)."""
    if not axes:
        return COLUMNS, _ROW_EXPRS, _EXTRA_EXPRS
    at = [n for n, _ in COLUMNS].index("key") + 1
    cols = [*COLUMNS[:at], ("variant", "string"), *((a, "string") for a in axes), *COLUMNS[at:]]
    axis_sql = [
        "CAST(json_extract(axes, '$.\"" + a.replace("'", "''").replace('"', '\\"') + "\"') AS TEXT)"
        for a in axes
    ]
    rows = [*_ROW_EXPRS[:at], "variant", *axis_sql, *_ROW_EXPRS[at:]]
    extra = [*_EXTRA_EXPRS[:at], "NULL", *(["NULL"] * len(axes)), *_EXTRA_EXPRS[at:]]
    return cols, rows, extra


def _passthrough_sql(passthrough: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``json_extract`` of each pass-through column (as text), with its JSON path as a parameter."""
    exprs = [f"CAST(json_extract(passthrough, :p{i}) AS TEXT)" for i in range(len(passthrough))]
    params = {f"p{i}": '$."' + name.replace('"', '\\"') + '"' for i, name in enumerate(passthrough)}
    return exprs, params


def _select(
    exprs: Sequence[str], *, csv: bool, columns: Sequence[tuple[str, str]] = COLUMNS
) -> str:
    """The select list after ``row_index``: the columns, or (``csv``) one CSV line per row.

    The CSV line is built by SQLite exactly as pyarrow's writer would write the same values:
    text quoted with doubled quotes, integers bare, NULL empty.
    """
    if not csv:
        return ", ".join(_URL_LISTS if e == "urls" else e for e in exprs)
    exprs = [_URLS if e == "urls" else e for e in exprs]
    ints = {i for i, (_, t) in enumerate(columns) if t == "int64"}
    cells = [
        f"COALESCE({e}, '')"
        if i in ints
        else f"COALESCE('\"' || replace({e}, '\"', '\"\"') || '\"', '')"
        for i, e in enumerate(exprs)
    ]
    return "printf('" + ",".join(["%s"] * len(cells)) + "', " + ", ".join(cells) + ")"


def _scan_pages(
    journal: J.Journal, sql: str, params: dict[str, Any]
) -> Iterator[list[tuple[Any, ...]]]:
    after = (-1, -1)
    while True:
        page = journal.db.execute(
            sql, {**params, "after_row": after[0], "after_variant": after[1], "limit": CHUNK}
        ).fetchall()
        if not page:
            return
        yield [tuple(r) for r in page]
        after = divmod(page[-1][0], VARIANT_SLOTS)


def iter_output_pages(
    journal: J.Journal,
    *,
    current_run: int | None = None,
    passthrough: Sequence[str] = (),
    csv: bool = False,
    axes: Sequence[str] = (),
) -> Iterator[list[tuple[Any, ...]]]:
    """Pages of output tuples (an order key first, then the columns of :func:`columns_for`,
    then passthrough), in manifest order, then variant order.

    With ``csv``, each tuple is (row_index, the row as a CSV line); without, ``urls`` is
    its JSON text and timestamps are ISO text (see :func:`_write_parquet`).
    """
    scan = journal.last_scan_run()
    if scan is None:
        return
    extra_exprs, paths = _passthrough_sql(passthrough)
    params: dict[str, Any] = {**paths, "run": current_run, "scan": scan}
    cols, row_exprs, extra_row_exprs = columns_for(axes)
    row_select = _select(row_exprs + extra_exprs, csv=csv, columns=cols)
    extra_select = _select(extra_row_exprs + extra_exprs, csv=csv, columns=cols)
    row_sql = f"SELECT {_ROW_ORDER}, {row_select} {_ROW_FROM}"
    extra_sql = f"SELECT {_EXTRA_ORDER}, {extra_select} {_EXTRA_FROM}"
    extra = [tuple(r) for r in journal.db.execute(extra_sql, params)]
    pages = _scan_pages(journal, row_sql, params)
    if not extra:
        yield from pages
        return
    merged = heapq.merge((r for page in pages for r in page), extra, key=lambda t: t[0])
    chunk: list[tuple[Any, ...]] = []
    for rec in merged:
        chunk.append(rec)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_output(
    journal: J.Journal,
    path: Path,
    *,
    id_column: str = "id",
    passthrough: Sequence[str] = (),
    current_run: int | None = None,
    axes: Sequence[str] = (),
) -> int:
    """Write the output table (CSV or Parquet by suffix) atomically; return the row count.

    One row per task: with variant ``axes``, ``variant`` and one column per axis follow the key.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UsageError("unsupported output format", str(path), "use a .csv or .parquet file name")
    cols, _, _ = columns_for(axes)
    base_names = [name for name, _ in cols]
    key_name = id_column if id_column not in base_names else "key"
    extra = [(p if p not in base_names and p != key_name else f"input_{p}") for p in passthrough]
    names = [key_name if n == "key" else n for n, _ in cols] + extra

    pages = iter_output_pages(
        journal, current_run=current_run, passthrough=passthrough, csv=suffix == ".csv", axes=axes
    )
    count = 0
    with replacing(path) as tmp:
        if suffix == ".csv":
            # The header as pyarrow writes it; the lines come whole from SQLite (see _select).
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                fh.write(",".join('"' + n.replace('"', '""') + '"' for n in names) + "\n")
                for page in pages:
                    fh.write("\n".join(line for _, line in page))
                    fh.write("\n")
                    count += len(page)
        else:
            count = _write_parquet(tmp, names, pages, len(passthrough), cols)
    return count


def _write_parquet(
    tmp: Path,
    names: list[str],
    pages: Iterator[list[tuple[Any, ...]]],
    n_extra: int,
    columns: Sequence[tuple[str, str]] = COLUMNS,
) -> int:
    import pyarrow as pa  # here, not at the top: a CSV output never needs pyarrow
    import pyarrow.parquet as pq

    arrow = {
        "string": pa.string(),
        "int64": pa.int64(),
        "list": pa.list_(pa.string()),
        "timestamp": pa.timestamp("ms", tz="UTC"),
    }
    kinds = [t for _, t in columns] + ["string"] * n_extra
    # pandas reads an int64 column holding nulls as float64 (NaN), unless the file says Int64.
    pandas_ints = [
        {
            "name": n,
            "field_name": n,
            "pandas_type": "int64",
            "numpy_type": "Int64",
            "metadata": None,
        }
        for n, t in zip(names, kinds, strict=True)
        if t == "int64"
    ]
    pandas = {"index_columns": [], "column_indexes": [], "columns": pandas_ints}
    schema = pa.schema(
        [pa.field(n, arrow[t]) for n, t in zip(names, kinds, strict=True)],
        metadata={"pandas": json.dumps(pandas)},
    )

    def column(values: Sequence[Any], kind: str) -> Any:
        if kind == "list":
            return _url_lists(values)
        if kind == "timestamp":
            return pa.array(values, pa.string()).cast(arrow[kind])
        return pa.array(values, arrow[kind])

    count = 0
    with pq.ParquetWriter(str(tmp), schema) as writer:
        for page in pages:
            values = list(zip(*page, strict=True))[1:]  # drop row_index
            arrays = [column(v, k) for v, k in zip(values, kinds, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(page)
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def _url_lists(values: Sequence[str | None]) -> Any:
    """JSON lists of URLs as an Arrow list<string> array: split in Arrow, or (when a list holds
    an escape, which a URL never needs) decoded by ``json``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(values, pa.string())
    if pc.any(pc.match_substring(text, "\\")).as_py():
        return pa.array(
            [None if v is None else json.loads(v) for v in values], pa.list_(pa.string())
        )
    return pc.split_pattern_regex(pc.utf8_slice_codeunits(text, 2, -2), '", ?"')
