"""Benchmarks of variants (issue 15, "Measured"); not run in CI, figures in BENCHMARKS.md.

    python bench/variants_bench.py                    # all three (about 25 minutes on 2 cores)
    python bench/variants_bench.py --only rate        # one (repeatable flag)
    python bench/variants_bench.py --quick            # small sizes: checks the script runs

- ``rate``: 10,000 rows x 3 variants (aspect 1:1, 16:9, 9:16) against ``batchgen sim`` at
  R = 100 requests/s (log-normal latency, median 3 s): wall within 1.15 x the floor
  (2 x tasks / R + latency), at most 1.5 polls per task.
- ``rss``: 10,000 and 100,000 rows x 3 variants (30,000 and 300,000 tasks) against a fast
  simulator: the client's peak RSS stays flat (largest <= 1.2 x smallest).
- ``estimate``: ``batchgen estimate`` of 1,000,000 rows x 4 variants (2 styles x 2 aspects) over
  the Parquet manifest of bench/estimate_1m.py: under 2 minutes and 1 GB.

Each batchgen process is measured alone (wall, CPU, peak RSS from /proc, see harness.measure);
requests come from the simulator's ledger.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from estimate_1m import make_manifest
from harness import (
    Simulator,
    child_env,
    ledger_delta,
    machine,
    measure,
    request_figures,
    run_batchgen,
    write_job,
    write_manifest,
)

RL = {"rate": 100, "latency": 3.0, "latency_sigma": 0.4, "queue_time": 0.2, "seed": 1}
FAST = {"rate": 0, "latency": 0.005, "queue_time": 0.0, "seed": 1}
ASPECTS = ["1:1", "16:9", "9:16"]


def variant_job(folder: Path, rows: int, name: str) -> Path:
    shutil.rmtree(folder, ignore_errors=True)  # a fresh journal: nothing left from a past run
    folder.mkdir(parents=True)
    manifest = folder / "manifest.csv"
    write_manifest(manifest, rows, models=("qwen-image", "qwen2-image"))
    job = write_job(folder, manifest, job_id=name)
    with job.open("a", encoding="utf-8") as fh:
        fh.write(f"[variants]\naspect = {json.dumps(ASPECTS)}\n")
    return job


def run_scenario(work: Path, name: str, rows: int, sim_opts: dict[str, Any]) -> dict[str, Any]:
    job = variant_job(work / name, rows, name)
    tasks = rows * len(ASPECTS)
    with Simulator(**sim_opts) as sim:
        before = sim.ledger()
        sim.mark()
        m = run_batchgen(job, sim)
        sim_cpu = sim.cpu_since_mark()
        delta = ledger_delta(before, sim.ledger())
    return {
        "rows": rows,
        "tasks": tasks,
        "exit_code": m.exit_code,
        "wall_s": round(m.wall_seconds, 2),
        "tasks_per_s": round(tasks / m.wall_seconds, 1),
        "client_cpu_s": round(m.cpu_seconds, 2),
        "client_peak_rss_mb": round(m.peak_rss_mb, 1),
        "sim_cpu_s": round(sim_cpu, 2),
        "tasks_created": delta["tasks_created"],
        "by_status": (m.summary or {}).get("by_status"),
        # request_figures' "per row" is per task here: it divides by what it is given.
        **{k.replace("row", "task"): v for k, v in request_figures(delta, tasks).items()},
        **({"stderr": m.stderr[-1000:]} if m.exit_code != 0 else {}),
    }


def rate(work: Path, rows: int) -> dict[str, Any]:
    r = run_scenario(work, "variants_rate", rows, RL)
    floor = 2 * r["tasks"] / RL["rate"] + RL["latency"]
    polls = r["per_task"].get("poll", 0.0)
    return {
        "scenario": "rate",
        "sim": RL,
        "run": r,
        "floor_s": floor,
        "wall_ratio_vs_floor": round(r["wall_s"] / floor, 3),
        "goals": {
            "wall <= 1.15 x floor": r["wall_s"] <= 1.15 * floor,
            "polls/task <= 1.5": polls <= 1.5,
            "one task per (row, variant)": r["tasks_created"] == r["tasks"],
        },
    }


def rss(work: Path, sizes: list[int]) -> dict[str, Any]:
    runs = [run_scenario(work, f"variants_rss_{n}", n, FAST) for n in sizes]
    peaks = [r["client_peak_rss_mb"] for r in runs]
    return {
        "scenario": "rss",
        "sim": FAST,
        "runs": runs,
        "rss_growth": round(peaks[-1] / peaks[0], 3),
        "goals": {
            "RSS flat (largest <= 1.2 x smallest)": peaks[-1] <= 1.2 * peaks[0],
            "every task created once": all(r["tasks_created"] == r["tasks"] for r in runs),
        },
    }


def estimate(work: Path, rows: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / f"catalog-{rows}.parquet"
    make_manifest(manifest, rows)
    job = work / "estimate-variants.toml"
    job.write_text(
        f"""[job]
id = "bench-estimate-variants"
[manifest]
path = "{manifest.name}"
id_column = "sku"
model_column = "model"
[generation]
model = "qwen-image"
[variants]
aspect = ["1:1", "16:9"]
[variants.styles]
white = "Studio photo of a {{colour}} {{material}} {{title}} on white"
lifestyle = "A {{colour}} {{material}} {{title}} in a sunlit room"
[output]
path = "out/results.parquet"
""",
        encoding="utf-8",
    )
    m = measure([sys.executable, "-m", "batchgen", "estimate", str(job), "--json"], child_env())
    if m.exit_code not in (0, 1):
        return {"scenario": "estimate", "error": m.stderr[-2000:]}
    est = json.loads(m.stdout)
    return {
        "scenario": "estimate",
        "rows": rows,
        "tasks": est["tasks"],
        "wall_s": round(m.wall_seconds, 1),
        "peak_rss_mb": round(m.peak_rss_mb, 1),
        "tasks_per_s": round(est["tasks"] / m.wall_seconds),
        "credits": est["credits"],
        "by_axis": est["by_axis"],
        "goals": {
            "under 2 minutes": m.wall_seconds < 120,
            "under 1 GB": m.peak_rss_mb < 1024,
            "4 tasks per row": est["tasks"] == 4 * rows,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=["rate", "rss", "estimate"])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bg-bench-variants"))
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    only = set(args.only or ["rate", "rss", "estimate"])
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine()}
    if "rate" in only:
        results["rate"] = rate(args.workdir, 20 if args.quick else 10_000)
    if "rss" in only:
        results["rss"] = rss(args.workdir, [10, 100] if args.quick else [10_000, 100_000])
    if "estimate" in only:
        results["estimate"] = estimate(args.workdir / "estimate", 200 if args.quick else 1_000_000)
    results["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
