"""Cron-grade operations: re-runs, the lock, the credit governor, run-wide stops, signals, logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from jobkit import cli, cli_env, interrupt_run, product_rows, read_output, run, simple_job

from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store.lock import JobLock

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}


def charged(ledger: dict) -> int:
    return sum(b["charged"] for b in ledger["credits"].values())


async def test_edited_manifest_regenerates_only_edited_and_new_rows(tmp_path: Path) -> None:
    rows = product_rows(10)
    job = simple_job(tmp_path, rows)
    async with SimServer(SimConfig(**FAST)) as srv:
        assert (await run(job, srv)).exit_code == 0
        first = read_output(tmp_path / "out" / "results.csv").set_index("id")
        rows[2]["prompt"] = "a different prompt"
        rows[7]["model"] = "qwen-image" if rows[7]["model"] == "qwen2-image" else "qwen2-image"
        rows.append({"id": "sku-new", "prompt": "brand new", "model": "qwen-image"})
        pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
        before = srv.sim.ledger.snapshot()["tasks_created"]
        result = await run(job, srv)
        after = srv.sim.ledger.snapshot()["tasks_created"]
    assert result.exit_code == 0
    assert after - before == 3
    out = read_output(tmp_path / "out" / "results.csv").set_index("id")
    regenerated = set(out.index[out["generated"] == "this_run"])
    assert regenerated == {"sku-00003", "sku-00008", "sku-new"}
    kept = out.index[out["generated"] == "kept"]
    assert len(kept) == 8
    assert (out.loc[kept, "task_id"] == first.loc[kept, "task_id"]).all()
    assert out.loc["sku-00003", "task_id"] != first.loc["sku-00003", "task_id"]


def test_second_run_while_locked_exits_4(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(3))
    journal = tmp_path / "out" / "test-job.journal.sqlite"
    with SimThread(SimConfig(**FAST)) as srv, JobLock(journal):
        proc = cli("run", str(job), srv=srv)
        assert srv.snapshot()["tasks_created"] == 0
    assert proc.returncode == 4
    assert "already running" in proc.stderr and f"pid {os.getpid()}" in proc.stderr


def test_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(3))
    lock = tmp_path / "out" / "test-job.journal.sqlite.lock"
    lock.parent.mkdir(parents=True)
    # What a SIGKILLed run leaves: its pid in the file, but no flock (the kernel dropped it).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")
    with SimThread(SimConfig(**FAST)) as srv:
        proc = cli("run", str(job), srv=srv)
    assert proc.returncode == 0, proc.stderr
    assert f"pid {dead.pid}" in proc.stderr
    assert lock.read_text() == ""  # released cleanly


async def test_governor_never_exceeds_the_cap_including_in_flight(tmp_path: Path) -> None:
    rows = product_rows(30, models=["qwen-image"])  # 4 credits each, 120 in all
    job = simple_job(tmp_path, rows, max_tasks_in_flight=10)
    async with SimServer(SimConfig(rate=None, latency=0.2, queue_time=0.0, seed=2)) as srv:
        refused = await run(job, srv, max_credits="50")
        assert refused.exit_code == 3 and srv.sim.ledger.snapshot()["tasks_created"] == 0
        result = await run(job, srv, max_credits="50", allow_partial=True)
        ledger = srv.sim.ledger.snapshot()
        tasks = list(srv.sim.state.tasks.values())
    assert result.exit_code == 3
    assert result.summary["outcome"] == "budget_reached"
    # Reservations at the server at any moment never exceed the cap: the sum of costs of tasks
    # open at once (created .. done) stays <= 50.
    events = sorted([(t.created_at, t.cost) for t in tasks] + [(t.done_at, -t.cost) for t in tasks])
    open_credits = peak = 0
    for _, delta in events:
        open_credits += delta
        peak = max(peak, open_credits)
    assert peak <= 50
    assert charged(ledger) <= 50 and len(tasks) == 12
    out = read_output(tmp_path / "out" / "results.csv")
    assert (out["status"] == "succeeded").sum() == 12
    assert set(out.loc[out["status"] != "succeeded", "error_code"]) == {"budget_reached"}


async def test_insufficient_credits_mid_run_then_resume_after_top_up(tmp_path: Path) -> None:
    rows = product_rows(20, models=["qwen-image"])  # 80 credits
    job = simple_job(tmp_path, rows, max_tasks_in_flight=4)
    async with SimServer(
        SimConfig(rate=None, latency=0.1, queue_time=0.0, seed=4, credits=40)
    ) as srv:
        first = await run(job, srv, allow_partial=True)
        mid = srv.sim.ledger.snapshot()
        out = read_output(tmp_path / "out" / "results.csv")
        assert first.exit_code == 3 and first.summary["outcome"] == "insufficient_credits"
        assert set(out["status"]) == {"succeeded", "blocked"}
        assert (out["status"] == "succeeded").sum() == mid["tasks_created"] == 10
        assert charged(mid) == 40
        srv.sim.add_credits(None, 100)
        second = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    assert second.exit_code == 0
    assert ledger["tasks_created"] == 20
    assert all(n == 1 for n in ledger["tasks_by_idempotency_key"].values())
    assert charged(ledger) == 80


def test_bad_key_stops_at_once_naming_the_variable(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(5))
    with SimThread(SimConfig(**FAST)) as srv:
        env = cli_env(srv)
        env["RIVYA_API_KEY"] = "rvya_sk_wrong"
        proc = subprocess.run(
            [sys.executable, "-m", "batchgen", "run", str(job)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        ledger = srv.snapshot()
    assert proc.returncode == 3
    assert "api_key_invalid" in proc.stderr and "RIVYA_API_KEY" in proc.stderr
    assert "rvya_sk_wrong" not in proc.stderr + proc.stdout
    assert ledger["tasks_created"] == 0


def test_sigterm_stops_cleanly_writes_output_and_resumes(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(40), max_tasks_in_flight=6)
    with SimThread(SimConfig(rate=None, latency=0.5, queue_time=0.0, seed=8)) as srv:
        assert interrupt_run(job, srv, after_tasks=8, sig=signal.SIGTERM) == 143
        out = read_output(tmp_path / "out" / "results.csv")
        assert len(out) == 40 and (out["status"] != "succeeded").any()
        again = cli("run", str(job), "-q", srv=srv)
        ledger = srv.snapshot()
    assert again.returncode == 0, again.stderr
    assert ledger["tasks_created"] == 40
    assert all(n == 1 for n in ledger["tasks_by_idempotency_key"].values())


def test_retry_failed_resubmits_only_failed_rows(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(30))
    with SimThread(
        SimConfig(rate=None, latency=0.05, queue_time=0.0, seed=6, failure_rate=0.3)
    ) as srv:
        first = cli("run", str(job), "-q", srv=srv)
        assert first.returncode == 1
        failed = (
            read_output(tmp_path / "out" / "results.csv").query("status == 'failed'")["id"].tolist()
        )
        assert failed
        plain = cli("run", str(job), "-q", srv=srv)  # failed rows are kept, not resent
        assert plain.returncode == 1
        before = srv.snapshot()["tasks_created"]
        assert before == 30
        srv.sim.config.failure_rate = 0.0
        retry = cli("run", str(job), "--retry-failed", srv=srv)
        after = srv.snapshot()["tasks_created"]
    assert retry.returncode == 0, retry.stderr
    assert after - before == len(failed)
    assert f"{len(failed)} rows that failed before" in retry.stderr


def test_json_logs_one_object_per_line(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(4))
    with SimThread(SimConfig(**FAST)) as srv:
        proc = cli("run", str(job), "--log-format", "json", srv=srv)
    assert proc.returncode == 0
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    events = [r["event"] for r in records]
    assert events.count("submitted") == 4 and events.count("succeeded") == 4
    assert all(r.get("task_id") for r in records if r["event"] == "succeeded")
    assert all(r.get("key", "").startswith("sku-") for r in records if r["event"] == "submitted")


def test_status_and_export_from_another_process(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(6))
    with SimThread(SimConfig(**FAST)) as srv:
        assert cli("run", str(job), "-q", srv=srv).returncode == 0
    status = cli("status", str(job), "--json")
    assert status.returncode == 0, status.stderr
    s = json.loads(status.stdout)
    assert s["by_status"] == {"succeeded": 6} and s["runs"][0]["exit_code"] == 0
    exported = cli("export", str(job), "--out", str(tmp_path / "x.parquet"))
    assert exported.returncode == 0, exported.stderr
    table = pd.read_parquet(tmp_path / "x.parquet")
    original = read_output(tmp_path / "out" / "results.csv")
    assert list(table["id"]) == list(original["id"])
    assert list(table["task_id"]) == list(original["task_id"])


def test_status_and_export_while_a_run_is_going_on(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(30), max_tasks_in_flight=4)
    with SimThread(SimConfig(rate=None, latency=0.4, queue_time=0.0, seed=13)) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchgen", "run", str(job), "-q"],
            env=cli_env(srv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while srv.snapshot()["tasks_created"] < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            status = cli("status", str(job), "--json")
            exported = cli("export", str(job), "--out", str(tmp_path / "mid.csv"))
        finally:
            assert proc.wait(timeout=120) == 0
    assert status.returncode == 0, status.stderr
    s = json.loads(status.stdout)
    assert s["running_pid"] == proc.pid
    assert exported.returncode == 0, exported.stderr
    mid = read_output(tmp_path / "mid.csv")
    assert len(mid) == 30
    assert "pending" in set(mid["status"]) or "submitted" in set(mid["status"])
