"""Uploads overlapping submissions: wall time of a job whose rows are half references against
an all-prompt job of the same size, at two upload delays of the simulator.

With the stages in series, the half-reference job pays for its uploads on top of the
submissions (``rows / 2 * delay / upload_concurrency`` more seconds); overlapped, it costs about
the longer of the two. ``--client-repo`` runs ``batchgen run`` from another checkout (the
simulator always comes from this one), so one invocation can compare two versions.

    python bench/overlap.py --out overlap.json
    python bench/overlap.py --client-repo /tmp/batchgen-main   # e.g. from `git archive main`
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import Simulator, child_env, measure, write_job
from PIL import Image

SIM = {"rate": 0, "latency": 0.5, "latency_sigma": 0.2, "queue_time": 0.0, "seed": 5}


def write_manifest(folder: Path, rows: int, *, references: bool) -> Path:
    """``rows`` rows of qwen-image; with ``references``, every second row has its own image."""
    path = folder / "manifest.csv"
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "model", "photo"])
        for i in range(rows):
            photo = ""
            if references and i % 2 == 0:
                photo = f"photos/p{i:06d}.png"
                color = (i % 256, (i // 256) % 256, 7)
                Image.new("RGB", (32, 32), color).save(folder / photo)
            w.writerow([f"sku-{i:07d}", f"studio photo of product {i}", "qwen-image", photo])
    return path


def run_once(folder: Path, sim: Simulator, client_repo: Path | None) -> dict[str, Any]:
    job = write_job(folder, folder / "manifest.csv")
    text = job.read_text(encoding="utf-8")
    job.write_text(text.replace("[manifest]", '[manifest]\nreference_column = "photo"'))
    env = child_env({"RIVYA_API_KEY": sim.api_key, "RIVYA_BASE_URL": sim.base_url})
    if client_repo is not None:
        env["PYTHONPATH"] = str(client_repo) + os.pathsep + env["PYTHONPATH"]
    m = measure([sys.executable, "-m", "batchgen", "run", str(job), "-q", "--json"], env)
    if m.exit_code != 0:
        raise SystemExit(f"batchgen run exited {m.exit_code}: {m.stderr[-2000:]}")
    return {"exit_code": m.exit_code, "wall_seconds": round(m.wall_seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--delays", default="0.05,0.2", help="upload delays, seconds")
    ap.add_argument("--client-repo", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="40 rows (a smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = 40 if args.quick else args.rows
    results: dict[str, Any] = {
        "rows": rows,
        "simulator": SIM,
        "client_repo": str(args.client_repo or "this checkout"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bg-overlap-") as tmp:
        for delay in (float(d) for d in args.delays.split(",")):
            row: dict[str, Any] = {"upload_delay": delay}
            for name, refs in (("all_prompt", False), ("half_references", True)):
                folder = Path(tmp) / f"{name}-{delay}"
                write_manifest(folder, rows, references=refs)
                with Simulator(**SIM, upload_delay=delay) as sim:
                    row[name] = run_once(folder, sim, args.client_repo)
            row["ratio"] = round(
                row["half_references"]["wall_seconds"] / row["all_prompt"]["wall_seconds"], 2
            )
            results["runs"].append(row)
            print(json.dumps(row), file=sys.stderr)
    text = json.dumps(results, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
