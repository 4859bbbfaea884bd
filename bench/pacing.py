"""The pacing scenarios of the benchmark suite (issue 13): cases the request budget was not tuned
for. Each runs ``batchgen run`` against ``batchgen sim`` in their own processes, as
``run_bench.py`` does, with R = 100 requests/s undisclosed and a median latency of 3 s.

- ``small_bucket``: the service's token bucket holds 10 tokens, not 100.
- ``shared_account``: four runs at once on one account (one API key), 500 rows each.
- ``limit_change``: the limit drops from 100/s to 30/s, then returns to 100/s.
- ``mixed_latency``: three models with medians 0.8 s, 3 s and 15 s in one job.

The floor of a run is ``rows x 2 / R + median latency``: two requests per row (a submit and a
poll) at the account's rate, plus the time the last task takes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import (
    Measured,
    Simulator,
    ledger_delta,
    request_figures,
    run_batchgen,
    write_job,
    write_manifest,
)

R = 100.0
MEDIAN = 3.0
BASE = {"rate": R, "latency": MEDIAN, "latency_sigma": 0.4, "queue_time": 0.2, "seed": 1}
CLIENTS = 4
LIMIT_STEPS = ((10.0, 30.0), (25.0, 100.0))
"""(seconds after the run starts, new limit): down to 30/s, then back to 100/s."""
RECOVERED = 0.8
"""Recovered: a one-second window of accepted requests at this share of the new limit."""
MIXED = {"z-image": 0.8, "qwen-image": 3.0, "qwen2-image": 15.0}


def _prepare(work: Path, name: str, rows: int, models: tuple[str, ...] = ("qwen-image",)) -> Path:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    write_manifest(manifest, rows, models=models)
    return write_job(folder, manifest, job_id=name)


def _run_figures(m: Measured, rows: int) -> dict[str, Any]:
    return {
        "exit_code": m.exit_code,
        "wall_s": round(m.wall_seconds, 2),
        "client_cpu_s": round(m.cpu_seconds, 2),
        "by_status": m.summary.get("by_status") if m.summary else m.stderr[-500:],
    }


def _set_limit(sim: Simulator, rate: float) -> None:
    req = urllib.request.Request(
        sim.base_url + "/_sim/config",
        data=json.dumps({"rate": rate, "burst": max(1, round(rate))}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def _goal_ratio(wall: float, floor: float) -> float:
    return round(wall / floor, 3)


def small_bucket(work: Path, rows: int) -> dict[str, Any]:
    """R = 100/s with a bucket of 10 tokens."""
    opts = {**BASE, "burst": 10}
    floor = rows * 2 / R + MEDIAN
    job = _prepare(work, "small_bucket", rows)
    with Simulator(**opts) as sim:
        before = sim.ledger()
        m = run_batchgen(job, sim)
        delta = ledger_delta(before, sim.ledger())
    req = request_figures(delta, rows)
    ratio = _goal_ratio(m.wall_seconds, floor)
    return {
        "scenario": "small_bucket",
        "sim": opts,
        "floor_s": floor,
        **_run_figures(m, rows),
        **req,
        "ratio_to_floor": ratio,
        "goals": {
            "wall <= 1.15 x floor": ratio <= 1.15,
            "429 share <= 3%": req["share_429"] <= 0.03,
        },
    }


def shared_account(work: Path, rows: int) -> dict[str, Any]:
    """``CLIENTS`` runs started together on one account, ``rows / CLIENTS`` rows each."""
    each = rows // CLIENTS
    floor = each * CLIENTS * 2 / R + MEDIAN
    jobs = [_prepare(work, f"shared_{i}", each) for i in range(CLIENTS)]
    results: list[Measured | None] = [None] * CLIENTS
    with Simulator(**BASE) as sim:
        before = sim.ledger()

        def one(i: int) -> None:
            results[i] = run_batchgen(jobs[i], sim)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
        t0 = time.perf_counter()
        start_wall = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        whole = time.perf_counter() - t0
        after = sim.ledger()
        delta = ledger_delta(before, after)
    windows = _accepted_per_second(after.get("rate_timeline", {}), start_wall)
    runs = [r for r in results if r is not None]
    walls = [r.wall_seconds for r in runs]
    spread = (max(walls) - min(walls)) / min(walls)
    req = request_figures(delta, each * CLIENTS)
    ratio = _goal_ratio(whole, floor)
    return {
        "scenario": "shared_account",
        "sim": BASE,
        "clients": CLIENTS,
        "rows_each": each,
        "floor_s": floor,
        "wall_s": round(whole, 2),
        "runs": [_run_figures(r, each) for r in runs],
        "run_walls_s": [round(w, 2) for w in walls],
        "accepted_per_s_every_5_s": [n for t, n in windows][::50],
        "spread": round(spread, 3),
        **req,
        "ratio_to_floor": ratio,
        "goals": {
            "whole wall <= 1.15 x floor": ratio <= 1.15,
            "each run within 15% of the others": spread <= 0.15,
            "every run succeeded": all(r.exit_code == 0 for r in runs),
        },
    }


def _accepted_per_second(timeline: dict[str, list[int]], start: float) -> list[tuple[float, int]]:
    """(seconds after ``start``, requests accepted in the one second from there), per 0.1 s."""
    tenths = {int(k): v[0] for k, v in timeline.items()}
    if not tenths:
        return []
    first, last = min(tenths), max(tenths)
    out = []
    for t in range(first, last - 9):
        out.append((round(t / 10 - start, 1), sum(tenths.get(t + i, 0) for i in range(10))))
    return out


def limit_change(
    work: Path, rows: int, steps: tuple[tuple[float, float], ...] = LIMIT_STEPS
) -> dict[str, Any]:
    """The limit goes 100 -> 30 -> 100/s (``steps``) while the run is rate-bound."""
    job = _prepare(work, "limit_change", rows)
    result: dict[str, Any] = {}
    with Simulator(**BASE) as sim:
        before = sim.ledger()
        holder: list[Measured] = []
        runner = threading.Thread(target=lambda: holder.append(run_batchgen(job, sim)))
        start = time.time()
        runner.start()
        for at, rate in steps:
            time.sleep(max(0.0, start + at - time.time()))
            _set_limit(sim, rate)
        runner.join()
        after = sim.ledger()
        delta = ledger_delta(before, after)
    m = holder[0]
    windows = _accepted_per_second(after.get("rate_timeline", {}), start)
    back_at, back_rate = steps[-1]
    recovery = None
    for t, n in windows:
        if t >= back_at and n >= RECOVERED * back_rate:
            recovery = round(t + 1.0 - back_at, 1)  # the end of the first such window
            break
    down_at, down_rate = steps[0]
    low = [n for t, n in windows if down_at + 3 <= t <= back_at - 1]
    req = request_figures(delta, rows)
    floor = (
        down_at * R + (back_at - down_at) * down_rate  # requests the limit allows until its return
    )
    floor_s = back_at + max(0.0, rows * 2 - floor) / R + MEDIAN
    result.update(
        {
            "scenario": "limit_change",
            "sim": BASE,
            "limit_steps": steps,
            "floor_s": floor_s,
            **_run_figures(m, rows),
            **req,
            "ratio_to_floor": _goal_ratio(m.wall_seconds, floor_s),
            "accepted_per_s_while_low": (min(low), max(low)) if low else None,
            "seconds_to_80pct_after_return": recovery,
            "accepted_per_s_after_return": [n for t, n in windows if back_at <= t < back_at + 6][
                ::5
            ],
            "goals": {
                "back to 80% of the limit within 3 s": recovery is not None and recovery <= 3.0,
                "429 share <= 3%": req["share_429"] <= 0.03,
            },
        }
    )
    return result


def mixed_latency(work: Path, rows: int) -> dict[str, Any]:
    """Three models with very different medians in one job, a third of the rows each."""
    opts = {
        **BASE,
        "latency_by_model": ",".join(f"{k}={v}" for k, v in MIXED.items()),
    }
    models = tuple(MIXED)
    job = _prepare(work, "mixed_latency", rows, models)
    with Simulator(**opts) as sim:
        before = sim.ledger()
        m = run_batchgen(job, sim)
        after = sim.ledger()
        delta = ledger_delta(before, after)
    per_model = {model: sum(1 for i in range(rows) if models[i % 3] == model) for model in models}
    polls = after.get("polls_by_model", {})
    polls_per_row = {k: round(polls.get(k, 0) / n, 3) for k, n in per_model.items()}
    req = request_figures(delta, rows)
    floor = rows * 2 / R + max(MIXED.values())
    return {
        "scenario": "mixed_latency",
        "sim": opts,
        "floor_s": floor,
        **_run_figures(m, rows),
        **req,
        "ratio_to_floor": _goal_ratio(m.wall_seconds, floor),
        "polls_per_row_by_model": polls_per_row,
        "goals": {
            "polls/row <= 1.5 for every model": max(polls_per_row.values()) <= 1.5,
            "429 share <= 3%": req["share_429"] <= 0.03,
        },
    }


SCENARIOS = {
    "small_bucket": small_bucket,
    "shared_account": shared_account,
    "limit_change": limit_change,
    "mixed_latency": mixed_latency,
}
