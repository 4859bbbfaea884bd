"""``batchgen run`` end to end, against the simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from jobkit import (
    cli,
    copy_sample,
    interrupt_run,
    max_overlap,
    product_rows,
    read_output,
    run,
    simple_job,
    write_job,
)

from batchgen.sim import SimConfig, SimServer, SimThread

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}


async def test_sample_job_end_to_end(tmp_path: Path) -> None:
    job = copy_sample(tmp_path)
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "sample" / "results.csv")
    assert len(out) == 20
    assert list(out["sku"]) == sorted(out["sku"])  # manifest order
    invalid = out[out["status"] == "invalid"]
    assert set(invalid["sku"]) == {"00118", "00119"}
    assert set(invalid["row_number"]) == {"18", "19"}
    assert set(invalid["error_field"]) == {"image_size", "photo"}
    valid = out[out["status"] != "invalid"]
    assert (valid["status"] == "succeeded").all()
    assert all(u.startswith(srv.base_url) for u in valid["primary_url"])
    charged = (
        ledger["credits"]["acct_default"]["charged"]
        if "acct_default" in ledger["credits"]
        else sum(b["charged"] for b in ledger["credits"].values())
    )
    assert out["final_credits"].astype(int).sum() == charged == 88
    assert ledger["tasks_created"] == 18
    assert result.exit_code == 1  # two invalid rows
    # passthrough columns come along
    assert (
        "title" in out.columns
        and out.loc[out["sku"] == "00102", "title"].item() == "espresso cup, set of 2"
    )
    assert ledger["files_uploaded"] == 4  # four good photos; the broken one never sent


async def test_rerun_sends_nothing_new(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(12))
    async with SimServer(SimConfig(**FAST)) as srv:
        first = await run(job, srv)
        before = srv.sim.ledger.snapshot()
        second = await run(job, srv)
        after = srv.sim.ledger.snapshot()
    assert first.exit_code == second.exit_code == 0
    assert after["tasks_created"] == before["tasks_created"] == 12
    assert second.summary["kept"] == 12 and second.summary["generated_this_run"] == 0
    out = read_output(tmp_path / "out" / "results.csv")
    assert set(out["generated"]) == {"kept"}


async def test_under_faults_every_row_terminal_and_charged_at_most_once(tmp_path: Path) -> None:
    rows = product_rows(80)
    job = simple_job(tmp_path, rows, max_tasks_in_flight=16, max_requests_in_flight=8)
    config = SimConfig(
        rate=40.0,
        burst=10,
        latency=0.1,
        queue_time=0.0,
        failure_rate=0.05,
        error_rate=0.05,
        drop_rate=0.03,
        drop_after_rate=0.03,
        seed=11,
    )
    async with SimServer(config) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv")
    assert len(out) == 80
    assert set(out["status"]) <= {"succeeded", "failed"}, Counter(out["status"])
    assert ledger["responses"].get("429", 0) > 0, "the rate limit was not exercised"
    assert ledger["faults"], "no fault was injected"
    per_row = Counter(ledger["tasks_by_client_request_id"])
    assert all(ledger["tasks_by_client_request_id"][k] == 1 for k in per_row), "a row got two tasks"
    assert all(n == 1 for n in ledger["tasks_by_idempotency_key"].values())
    charged = sum(b["charged"] for b in ledger["credits"].values())
    assert out["final_credits"].astype(int).sum() == charged
    failed = out[out["status"] == "failed"]
    assert set(failed["error_code"]) <= {"generation_failed"}
    assert result.exit_code == (0 if failed.empty else 1)


async def test_caps_hold_measured_on_the_simulator(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(30), max_tasks_in_flight=4, max_requests_in_flight=3)
    async with SimServer(SimConfig(rate=None, latency=0.3, queue_time=0.0, seed=5)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
        tasks = list(srv.sim.state.tasks.values())
    assert result.exit_code == 0
    assert 1 <= ledger["max_in_flight"] <= 3
    # A slot is freed only once the task is terminal at the server, so server-side task lifetimes
    # can never overlap by more than the window.
    assert max_overlap((t.created_at, t.done_at) for t in tasks) <= 4
    assert len(tasks) == 30


def test_sigkill_mid_run_then_rerun_charges_once(tmp_path: Path) -> None:
    rows = product_rows(40)
    job = simple_job(tmp_path, rows, max_tasks_in_flight=8)
    with SimThread(SimConfig(rate=None, latency=0.4, queue_time=0.0, seed=9)) as srv:
        assert interrupt_run(job, srv, after_tasks=10, sig=signal.SIGKILL) == -signal.SIGKILL
        killed_at = srv.snapshot()["tasks_created"]
        assert 10 <= killed_at < 40
        again = cli("run", str(job), "-q", srv=srv)
        assert again.returncode == 0, again.stderr
        ledger = srv.snapshot()
    assert ledger["tasks_created"] == 40
    assert all(n == 1 for n in ledger["tasks_by_idempotency_key"].values())
    out = read_output(tmp_path / "out" / "results.csv")
    assert (out["status"] == "succeeded").all()
    charged = sum(b["charged"] for b in ledger["credits"].values())
    assert out["final_credits"].astype(int).sum() == charged


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_column", "manifest"),
        ("unknown_model", "qwen-imag"),
        ("missing_manifest", "nope.csv"),
        ("bad_placeholder", "colour"),
        ("bad_flag_value", "--max-credits"),
        ("unknown_key", "max_taks_in_flight"),
    ],
)
def test_bad_input_one_clear_line_exit_2_nothing_sent(
    tmp_path: Path, case: str, expect: str
) -> None:
    pd.DataFrame(product_rows(3)).to_csv(tmp_path / "manifest.csv", index=False)
    sections: dict[str, dict[str, object]] = {
        "manifest": {"path": "manifest.csv"},
        "generation": {"model": "qwen-image"},
        "output": {"path": "out/results.csv"},
    }
    args: list[str] = []
    if case == "missing_column":
        sections["manifest"]["id_column"] = "sku"
    elif case == "unknown_model":
        sections["generation"]["model"] = "qwen-imag"
    elif case == "missing_manifest":
        sections["manifest"]["path"] = "nope.csv"
    elif case == "bad_placeholder":
        sections["generation"]["template"] = "a {colour} thing"
    elif case == "bad_flag_value":
        args = ["--max-credits", "lots"]
    elif case == "unknown_key":
        sections["run"] = {"max_taks_in_flight": 3}
    job = write_job(tmp_path, sections)
    with SimThread(SimConfig(**FAST)) as srv:
        proc = cli("run", str(job), *args, srv=srv)
        requests = srv.snapshot()["requests"]
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and expect in lines[0]
    assert "Traceback" not in proc.stderr
    # Nothing sent; only an unknown model id needs the service's (public) catalog to be told.
    assert requests == ({"GET /api/v1/models": 1} if case == "unknown_model" else {})
    assert not (tmp_path / "out" / "results.csv").exists()


def test_cli_run_simulate_json_summary(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(5))
    proc = cli("run", str(job), "--simulate", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["by_status"] == {"succeeded": 5}
    assert summary["credits_charged"] == summary["credits_charged_this_run"] > 0
