"""A run-wide stop stops for real: after the first ``insufficient_credits`` (a 402, or a task that
fails with that code), after ``--max-credits`` is reached and after an auth error, no create and
no upload starts; the creates already in flight may come back refused, nothing more.

The simulator's request log (one sequence numbers every start and every end) says what reached
it after it sent the first refusal. A request the client let through before that answer reached
it may still arrive later, so the bound is the client's request cap (``max_requests_in_flight``,
32): at most 31 others were on their way. Before the fix, the 32-in-flight scenario had 67
creates and 100 uploads arrive after the first 402 (70 creates refused).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pandas as pd
from jobkit import product_rows, read_output, run, simple_job
from PIL import Image

from batchgen.sim import SimConfig, SimServer

CREATE = "POST /api/v1/generations"
UPLOAD = "POST /api/v1/files"


def job_with_references(folder: Path, n: int = 200, **run_settings: Any) -> Path:
    """``n`` rows of qwen-image (4 credits each); every second row has its own reference."""
    (folder / "photos").mkdir()
    rows: list[dict[str, Any]] = product_rows(n, models=["qwen-image"])
    for i, row in enumerate(rows):
        row["photo"] = ""
        if i % 2 == 0:
            name = f"photos/p{i:04d}.png"
            Image.new("RGB", (32, 32), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(folder / name)
            row["photo"] = name
    return simple_job(folder, rows, **run_settings)


IN_FLIGHT = 32  # max_requests_in_flight (the default)


def assert_none_started_after(after: Counter[str]) -> None:
    """Only requests already on their way when the refusal came back: fewer than the cap."""
    assert after[CREATE] + after[UPLOAD] < IN_FLIGHT
    assert after["refused"] <= IN_FLIGHT


def sent_after_first(log: list[dict[str, Any]], codes: set[str]) -> Counter[str]:
    """Requests by route that started after the first answer with one of ``codes`` came back
    (``refused``: the answers with those codes)."""
    ends = [e["end"] for e in log if e["code"] in codes and e["end"] is not None]
    assert ends, f"no answer with {codes}"
    first = min(ends)
    after = Counter(e["route"] for e in log if e["start"] > first)
    after["refused"] = sum(1 for e in log if e["code"] in codes)
    return after


async def when(condition: Callable[[], bool], action: Callable[[], Any]) -> None:
    """Run ``action`` once ``condition`` holds (checked every few milliseconds)."""
    while not condition():
        await asyncio.sleep(0.002)
    action()


async def run_with(job: Path, srv: Any, side: Awaitable[None] | None = None, **flags: Any) -> Any:
    task = asyncio.ensure_future(side) if side is not None else None
    try:
        return await run(job, srv, **flags)
    finally:
        if task is not None:
            task.cancel()


def statuses(folder: Path) -> pd.Series:
    return read_output(folder / "out" / "results.csv")["status"]


def assert_stopped_cleanly(folder: Path, srv: Any, result: Any) -> None:
    """Exit 3, every task created was polled to its end, every row not sent is blocked."""
    ledger = srv.sim.ledger.snapshot()
    assert result.exit_code == 3
    status = statuses(folder)
    assert set(status) <= {"succeeded", "failed", "blocked"}
    assert (status == "succeeded").sum() == ledger["settled"].get("succeeded", 0)
    assert ledger["credits"]["acct_default"]["outstanding"] == 0  # nothing left running


async def test_first_402_stops_creates_and_uploads(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, max_tasks_in_flight=64)
    config = SimConfig(rate=None, latency=0.3, queue_time=0.0, seed=11, credits=120)
    async with SimServer(config) as srv:
        result = await run(job, srv, allow_partial=True)
        after = sent_after_first(srv.sim.ledger.request_log(), {"insufficient_credits"})
        assert_stopped_cleanly(tmp_path, srv, result)
        created = srv.sim.ledger.snapshot()["tasks_created"]
        assert result.summary["outcome"] == "insufficient_credits"
        assert_none_started_after(after)
        assert (statuses(tmp_path) == "blocked").sum() == 200 - created
        # The next run, after a top-up, continues where this one stopped: one task per row.
        srv.sim.add_credits(None, 10_000)
        again = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    assert again.exit_code == 0
    assert ledger["tasks_created"] == 200
    assert set(ledger["tasks_by_idempotency_key"].values()) == {1}


async def test_a_top_up_during_the_stop_changes_nothing_in_that_run(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, max_tasks_in_flight=64)
    config = SimConfig(rate=None, latency=0.3, queue_time=0.0, seed=12, credits=120)
    async with SimServer(config) as srv:
        ledger = srv.sim.ledger
        top_up = when(
            lambda: ledger.errors["insufficient_credits"] > 0,
            lambda: srv.sim.add_credits(None, 10_000),
        )
        result = await run_with(job, srv, top_up, allow_partial=True)
        after = sent_after_first(ledger.request_log(), {"insufficient_credits"})
        assert_stopped_cleanly(tmp_path, srv, result)
    assert srv.sim.credits() > 9_000  # the top-up happened while the run went on
    assert_none_started_after(after)


async def test_a_task_failing_with_insufficient_credits_stops_submitting(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, max_tasks_in_flight=8)
    config = SimConfig(
        rate=None,
        latency=0.2,
        queue_time=0.0,
        seed=13,
        failure_rate=1.0,
        failure_code="insufficient_credits",
    )
    async with SimServer(config) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    assert result.exit_code == 3 and result.summary["outcome"] == "insufficient_credits"
    # Every task fails: a window slot frees only when a failure is seen, and that stops the run.
    assert ledger["tasks_created"] <= 8
    status = statuses(tmp_path)
    assert (status == "blocked").sum() == 200
    assert ledger["requests"].get(UPLOAD, 0) <= 8 + 16  # the window's rows and the lookahead


async def test_max_credits_reached_sends_no_later_row(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, max_tasks_in_flight=16)
    config = SimConfig(rate=None, latency=0.2, queue_time=0.0, seed=14)
    async with SimServer(config) as srv:
        result = await run(job, srv, max_credits="60", allow_partial=True)
        ledger = srv.sim.ledger.snapshot()
    assert result.exit_code == 3 and result.summary["outcome"] == "budget_reached"
    assert ledger["tasks_created"] * 4 <= 60
    out = read_output(tmp_path / "out" / "results.csv")
    sent = list(out["status"] != "blocked")
    # Rows go out in manifest order and none is sent after the first one refused.
    assert sent == [True] * sum(sent) + [False] * (len(sent) - sum(sent))
    assert set(out.loc[out["status"] == "blocked", "error_code"]) == {"budget_reached"}
    created_refs = sum(1 for i in range(sum(sent)) if i % 2 == 0)
    assert ledger["requests"].get(UPLOAD, 0) <= created_refs + 16  # at most the lookahead


async def test_a_revoked_key_stops_creates_and_uploads(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, max_tasks_in_flight=64)
    config = SimConfig(rate=None, latency=0.3, queue_time=0.0, seed=15)
    async with SimServer(config) as srv:
        ledger = srv.sim.ledger
        revoke = when(
            lambda: ledger.tasks_created >= 20,
            lambda: srv.sim.set_key(srv.api_key, status="revoked"),
        )
        result = await run_with(job, srv, revoke)
        after = sent_after_first(ledger.request_log(), {"api_key_revoked"})
    assert result.exit_code == 3 and result.summary["outcome"] == "auth"
    assert_none_started_after(after)
    status = statuses(tmp_path)
    assert (status == "blocked").sum() + (status == "succeeded").sum() + (
        status == "submitted"
    ).sum() == 200


async def test_with_32_creates_in_flight_at_most_32_are_refused(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, max_tasks_in_flight=256, max_requests_in_flight=32)
    config = SimConfig(
        rate=None, latency=0.3, queue_time=0.0, seed=16, credits=120, create_delay=0.3
    )
    async with SimServer(config) as srv:
        result = await run(job, srv, allow_partial=True)
        log = srv.sim.ledger.request_log()
        after = sent_after_first(log, {"insufficient_credits"})
        assert srv.sim.ledger.max_in_flight >= 16  # the creates really overlapped
        assert_stopped_cleanly(tmp_path, srv, result)
    assert_none_started_after(after)
