"""The output table: CSV lines built by SQLite hold exactly what the Parquet table holds, written
exactly as pyarrow's CSV writer would write them."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from jobkit import run, write_job

from batchgen import journal as J
from batchgen.output import write_output
from batchgen.sim import SimConfig, SimServer

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

    table = pq.read_table(tmp_path / "t.parquet")
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
