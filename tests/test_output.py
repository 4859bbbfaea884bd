"""The output table: CSV lines built by SQLite hold exactly what the Parquet table holds (as text:
URLs space-separated, timestamps as the journal writes them), written exactly as pyarrow's CSV
writer would write them; the Parquet table is typed."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from jobkit import cli, product_rows, run, simple_job, write_job

from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store import journal as J
from batchgen.store.output import write_output

TRICKY = [
    'say "hi", then\nleave',
    "naïve ☕ 日本",
    "",
    " spaced ",
    "a,b",
    '"',
    "back\\slash",
    "=1+2",
    "line\r\nbreak",
]


def as_text(table: pa.Table) -> pa.Table:
    """The typed Parquet table in the CSV's text form: URLs space-separated, timestamps ISO."""
    for name in ("urls", "submitted_at", "finished_at"):
        i = table.schema.get_field_index(name)
        column = table.column(i)
        if name == "urls":
            text = pc.binary_join(column, " ")
        else:  # %S of a ms timestamp carries the milliseconds
            text = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ")
        table = table.set_column(i, name, text)
    return table


async def test_csv_output_equals_the_parquet_table_written_by_pyarrow(tmp_path: Path) -> None:
    rows = [
        {"id": f"k{i}", "prompt": f"product {i}", "model": "qwen-image", "title": text}
        for i, text in enumerate(TRICKY)
    ]
    rows.append({"id": "bad", "prompt": "x", "model": "no-such-model", "title": 'q"uote'})
    rows.append({"id": "k1", "prompt": "duplicate key", "model": "qwen-image", "title": "dup"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    job = write_job(
        tmp_path,
        {
            "job": {"id": "out-job"},
            "manifest": {"path": "manifest.csv", "model_column": "model", "passthrough": ["title"]},
            "generation": {"model": "qwen-image"},
            "output": {"path": "out/results.csv"},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )
    async with SimServer(SimConfig(rate=None, latency=0.05, queue_time=0.0, seed=4)) as srv:
        result = await run(job, srv)
    assert result.exit_code == 1
    with J.Journal(tmp_path / "out" / "out-job.journal.sqlite", readonly=True) as journal:
        n_csv = write_output(journal, tmp_path / "t.csv", passthrough=["title"], current_run=1)
        n_pq = write_output(journal, tmp_path / "t.parquet", passthrough=["title"], current_run=1)
    assert n_csv == n_pq == len(rows)

    table = as_text(pq.read_table(tmp_path / "t.parquet"))
    by_pyarrow = io.BytesIO()
    pacsv.write_csv(table, by_pyarrow)
    ours = (tmp_path / "t.csv").read_bytes()
    assert ours == by_pyarrow.getvalue()

    back = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    assert back["title"].tolist() == [r["title"] for r in rows]
    assert back["id"].tolist() == [r["id"] for r in rows]
    assert back["status"].tolist() == ["succeeded"] * len(TRICKY) + ["invalid", "invalid"]
    assert back["error_code"].tolist()[-2:] == ["invalid_input", "duplicate_key"]


def test_output_of_a_journal_with_no_scan_is_a_header_only(tmp_path: Path) -> None:
    with J.Journal(tmp_path / "j.sqlite") as journal:
        assert write_output(journal, tmp_path / "t.csv") == 0
        assert write_output(journal, tmp_path / "t.parquet") == 0
    header = (tmp_path / "t.csv").read_text().splitlines()
    assert len(header) == 1 and header[0].startswith('"row_number","id","model"')
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 0


TYPES = {
    "row_number": pa.int64(),
    "reserved_credits": pa.int64(),
    "final_credits": pa.int64(),
    "attempts": pa.int64(),
    "download_bytes": pa.int64(),
    "urls": pa.list_(pa.string()),
    "submitted_at": pa.timestamp("ms", tz="UTC"),
    "finished_at": pa.timestamp("ms", tz="UTC"),
}


def test_parquet_output_and_export_are_typed(tmp_path: Path) -> None:
    rows = product_rows(3)
    rows.append({"id": "bad", "prompt": "x", "model": "no-such-model"})
    job = simple_job(tmp_path, rows)
    text = job.read_text(encoding="utf-8").replace("results.csv", "results.parquet")
    job.write_text(text.replace("[output]", '[output]\ndownload_dir = "images"'), encoding="utf-8")
    with SimThread(SimConfig(rate=None, latency=0.05, queue_time=0.0, seed=5)) as srv:
        ran = cli("run", str(job), "-q", srv=srv)
    assert ran.returncode == 1, ran.stderr  # one invalid row
    journal_path = tmp_path / "out" / "test-job.journal.sqlite"
    two = ["http://127.0.0.1/media/a.png", "http://127.0.0.1/media/b.png"]
    escaped = ["http://127.0.0.1/media/\u00e9.png", 'http://127.0.0.1/media/"c".png']
    with J.Journal(journal_path) as journal:  # results with two URLs, and JSON escapes
        for key, urls in (("sku-00002", two), ("sku-00003", escaped)):
            journal.db.execute("UPDATE rows SET urls = ? WHERE key = ?", (json.dumps(urls), key))
        journal.db.commit()
        stored = {r["key"]: dict(r) for r in journal.db.execute("SELECT * FROM rows")}
    exported = cli("export", str(job), "--out", str(tmp_path / "export.parquet"))
    assert exported.returncode == 0, exported.stderr
    exported = cli("export", str(job), "--out", str(tmp_path / "export.csv"))
    assert exported.returncode == 0, exported.stderr
    text_table = pd.read_csv(tmp_path / "export.csv", dtype=str, keep_default_na=False)
    assert text_table["urls"].tolist()[1] == " ".join(two)
    assert text_table["submitted_at"].tolist()[0] == stored["sku-00001"]["submitted_at"]

    for path in (tmp_path / "out" / "results.parquet", tmp_path / "export.parquet"):
        table = pq.read_table(path)
        for name, kind in TYPES.items():
            assert table.schema.field(name).type == kind, (path.name, name)
        got = {r["id"]: r for r in table.to_pylist()}
        assert got["bad"]["status"] == "invalid"
        for name in ("download_bytes", "urls", "submitted_at", "finished_at"):
            assert got["bad"][name] is None, name  # null, not NaN or ""
        for key, row in got.items():
            if key == "bad":
                continue
            journal_row = stored[key]
            assert row["download_bytes"] == journal_row["download_bytes"] > 0
            for name in ("submitted_at", "finished_at"):
                iso = journal_row[name].replace("Z", "+00:00")
                assert row[name] == datetime.fromisoformat(iso).astimezone(UTC), name
        assert got["sku-00001"]["urls"] == [got["sku-00001"]["primary_url"]]
        if path.name == "export.parquet":  # written after the change of the journal
            assert got["sku-00002"]["urls"] == two
            assert got["sku-00003"]["urls"] == escaped
        frame = pd.read_parquet(path)
        assert str(frame["download_bytes"].dtype) == "Int64"
        assert frame["download_bytes"].isna().sum() == 1
