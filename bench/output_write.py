"""Time writing the output table (CSV and Parquet) of a synthetic finished journal.

    python bench/output_write.py --rows 200000

Builds a journal of ``--rows`` succeeded rows (task id, two-field URL list, timestamps, credits,
a downloaded file) in a temporary folder, then writes the table ``--repeat`` times per format and
prints the best wall time of each. No API, no simulator.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from batchgen.store import journal as J
from batchgen.store.output import write_output


def build(path: Path, rows: int) -> None:
    with J.Journal(path) as journal:
        run_id = journal.start_run(0, "run")
        batch = []
        for i in range(rows):
            url = f"https://cdn.example/media/task_{i:012x}/0.png"
            batch.append(
                {
                    "key": f"sku-{i:07d}",
                    "row_index": i,
                    "row_number": i + 1,
                    "seen_run": run_id,
                    "model": "qwen-image",
                    "prompt": f"studio photo of product {i}",
                    "state": J.SUCCEEDED,
                    "task_id": f"task_{i:012x}",
                    "reserved_credits": 4,
                    "final_credits": 4,
                    "primary_url": url,
                    "urls": json.dumps([url]),
                    "attempts": 1,
                    "submitted_at": "2026-05-11T00:00:00.000Z",
                    "finished_at": "2026-05-11T00:00:03.250Z",
                    "generated_run": run_id,
                    "download_bytes": 1500 + i % 100 if i % 10 else None,
                }
            )
            if len(batch) == 5000:
                journal.upsert_rows(batch)
                batch = []
        journal.upsert_rows(batch)
        journal.set_meta("last_scan_run", str(run_id))
        journal.finish_run(run_id, "completed", 0, {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.journal.sqlite"
        build(db, args.rows)
        with J.Journal(db, readonly=True) as journal:
            for suffix in (".csv", ".parquet"):
                best = float("inf")
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    write_output(journal, Path(tmp) / f"out{suffix}", current_run=1)
                    best = min(best, time.perf_counter() - start)
                size = (Path(tmp) / f"out{suffix}").stat().st_size
                print(f"{suffix[1:]:8} {args.rows} rows: {best:.2f} s, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
