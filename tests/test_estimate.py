"""``batchgen estimate``: exact, offline, and it spends nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from jobkit import SAMPLE, cli, copy_sample, product_rows, read_output, simple_job

from batchgen.sim import SimConfig, SimThread

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}


def estimate_json(*args: str, srv: object | None = None) -> tuple[int, dict]:
    proc = cli("estimate", *args, "--json", srv=srv)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_estimate_equals_charged_without_failures(tmp_path: Path) -> None:
    job = copy_sample(tmp_path)
    code, est = estimate_json(str(job))
    assert code == 1  # the sample has two invalid rows
    assert est["decisions"] == {"invalid": 2, "would_submit": 18}
    with SimThread(SimConfig(**FAST)) as srv:
        assert cli("run", str(job), "-q", srv=srv).returncode == 1
        ledger = srv.snapshot()
    book = ledger["credits"]["acct_default"]
    assert est["credits"] == book["charged"] == 88
    assert est["credits_by_model"] == {"qwen-image": 40, "qwen2-image": 48}


def test_estimate_equals_charged_plus_refunded_with_failures(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(40))
    _, est = estimate_json(str(job))
    with SimThread(
        SimConfig(rate=None, latency=0.05, queue_time=0.0, seed=12, failure_rate=0.25)
    ) as srv:
        cli("run", str(job), "-q", srv=srv)
        book = srv.snapshot()["credits"]["acct_default"]
    assert book["refunded"] > 0
    assert est["credits"] == book["charged"] + book["refunded"] == book["reserved"]


def test_estimate_sends_no_post_and_reads_the_balance(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE / "photos", tmp_path / "photos")
    rows = product_rows(10)
    for row in rows:
        row["photo"] = "photos/mug.png"
    job = simple_job(tmp_path, rows)
    with SimThread(SimConfig(**FAST, credits=30)) as srv:
        code, est = estimate_json(str(job), srv=srv)
        ledger = srv.snapshot()
    # The catalog (public, no key) and the balance: two GETs, no POST.
    assert ledger["requests"] == {"GET /api/v1/models": 1, "GET /api/v1/credits": 1}
    assert ledger["files_uploaded"] == 0 and ledger["tasks_created"] == 0
    assert est["balance"] == 30 and est["credits"] == 50
    assert code == 3 and est["affordable"] is False and "balance is 30" in est["verdict"]
    assert est["unique_reference_files"] == 1 and est["references_cached"] == 0


def test_estimate_offline_without_a_key(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(6, models=["qwen2-image"]))
    code, est = estimate_json(str(job))
    assert code == 0 and est["credits"] == 36 and est["balance"] is None
    code, est = estimate_json(str(job), "--max-credits", "35")
    assert code == 3 and "over --max-credits 35" in est["verdict"]


def test_estimate_excludes_rows_that_already_succeeded(tmp_path: Path) -> None:
    rows = product_rows(8, models=["qwen-image"])
    job = simple_job(tmp_path, rows)
    with SimThread(SimConfig(**FAST)) as srv:
        assert cli("run", str(job), "-q", srv=srv).returncode == 0
    rows[0]["prompt"] = "changed"
    rows.append({"id": "sku-extra", "prompt": "new", "model": "qwen-image"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    code, est = estimate_json(str(job), "--out", str(tmp_path / "plan.csv"))
    assert code == 0
    assert est["decisions"] == {"skip": 7, "would_submit": 2}
    assert est["credits"] == 8
    assert "from 8 past tasks" in est["duration_basis"]  # latencies recorded by the run
    plan = read_output(tmp_path / "plan.csv")
    assert list(plan.loc[plan["decision"] == "would_submit", "key"]) == ["sku-00001", "sku-extra"]
    assert set(plan.loc[plan["decision"] == "skip", "credits"]) == {"0"}


def test_dry_run_is_the_same_as_estimate(tmp_path: Path) -> None:
    job = copy_sample(tmp_path)
    a = cli("estimate", str(job), "--json")
    b = cli("run", str(job), "--dry-run", "--json")
    assert a.returncode == b.returncode == 1
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert not (tmp_path / "out" / "sample" / "results.csv").exists()


def test_estimate_table_names_invalid_rows(tmp_path: Path) -> None:
    job = copy_sample(tmp_path)
    proc = cli("estimate", str(job))
    assert proc.returncode == 1
    assert "row 18" in proc.stdout and "image_size" in proc.stdout
    assert "row 19" in proc.stdout and "photo" in proc.stdout
    assert "88" in proc.stdout
