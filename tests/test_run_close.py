"""Every run is closed in the journal, whatever ends it; the counts a run reports are the
requests the service saw."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from jobkit import cli, cli_env, product_rows, write_job

from batchgen.sim import SimConfig, SimThread


def corrupt_parquet_job(folder: Path) -> Path:
    """A Parquet manifest of 300 rows in 3 row groups whose third row group cannot be read:
    the header and the first rows read fine, the scan fails part-way."""
    table = pa.Table.from_pandas(
        pd.DataFrame(product_rows(300, models=["qwen-image"])), preserve_index=False
    )
    path = folder / "manifest.parquet"
    pq.write_table(table, path, row_group_size=100)
    chunk = pq.ParquetFile(path).metadata.row_group(2).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    return write_job(
        folder,
        {
            "job": {"id": "corrupt"},
            "manifest": {"path": "manifest.parquet", "model_column": "model"},
            "output": {"path": "out/results.csv"},
        },
    )


def test_a_run_failing_in_the_manifest_scan_is_closed_in_the_journal(tmp_path: Path) -> None:
    job = corrupt_parquet_job(tmp_path)
    env = cli_env()
    env["RIVYA_API_KEY"] = "rvya_sk_never_used"
    env["RIVYA_BASE_URL"] = "http://127.0.0.1:9"  # nothing is sent before the scan fails
    proc = subprocess.run(
        [sys.executable, "-m", "batchgen", "run", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a readable Parquet file" in proc.stderr and "Traceback" not in proc.stderr
    status = cli("status", str(job), "--json")
    assert status.returncode == 0, status.stderr
    (last,) = json.loads(status.stdout)["runs"]
    assert last["finished_at"] is not None
    assert (last["outcome"], last["exit_code"]) == ("usage_error", 2)
    assert "not a readable Parquet file" in last["error"]
    text = cli("status", str(job)).stdout
    assert "not finished" not in text and "usage_error (exit 2)" in text


def test_an_interrupted_run_reports_the_requests_the_service_saw(tmp_path: Path) -> None:
    rows = product_rows(300, models=["qwen-image"])
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    job = write_job(
        tmp_path,
        {
            "job": {"id": "interrupted"},
            "manifest": {"path": "manifest.csv", "model_column": "model"},
            "output": {"path": "out/results.csv"},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )
    # A rate-limited service: most creates are still waiting for a request slot at the signal.
    config = SimConfig(rate=40.0, latency=0.3, queue_time=0.0, seed=31)
    with SimThread(config) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchgen", "run", str(job), "--json", "-q"],
            env=cli_env(srv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while srv.snapshot()["tasks_created"] < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        ledger = srv.snapshot()
        status = cli("status", str(job), "--json", srv=srv)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    sent = summary["http"]["requests"]
    seen = ledger["requests"]
    assert 30 <= seen["POST /api/v1/generations"] < 300
    assert sent.get("create", 0) == seen["POST /api/v1/generations"]
    assert sent.get("poll", 0) == seen.get("GET /api/v1/generations/{task_id}", 0)
    assert sent.get("credits", 0) == seen.get("GET /api/v1/credits", 0)
    # Answers the service refused with 429 are requests too, on both sides. (The catalog's one
    # public GET /models is fetched before the run's client exists.)
    assert sum(sent.values()) == sum(
        n
        for route, n in seen.items()
        if route.startswith(("GET /api/", "POST /api/")) and route != "GET /api/v1/models"
    )
    (last,) = json.loads(status.stdout)["runs"]
    assert (last["outcome"], last["exit_code"]) == ("interrupted", 130)
