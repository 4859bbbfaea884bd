"""Benchmark: `batchgen estimate` over a large Parquet manifest (default 1,000,000 rows).

Goal (issue "batchgen estimate"): under a minute, peak memory under 1 GB.

    python bench/estimate_1m.py [--rows 1000000] [--workdir /tmp/bg-bench-estimate]

Makes the manifest once (kept in --workdir), then runs the CLI in a subprocess and reports wall
time and the child's own peak RSS (VmHWM, see harness.measure). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from harness import measure  # noqa: E402


def make_manifest(path: Path, rows: int) -> None:
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    rng = np.random.default_rng(1)
    writer = None
    chunk = 100_000
    sizes_q1 = np.array(["square", "square_hd", "portrait_4_3", "landscape_16_9"])
    sizes_q2 = np.array(["1:1", "3:4", "4:3", "16:9"])
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        idx = np.arange(start, start + n)
        q2 = rng.random(n) < 0.4
        size_pick = rng.integers(0, 4, n)
        table = pa.table(
            {
                "sku": [f"SKU-{i:08d}" for i in idx],
                "title": [f"product {i}" for i in idx],
                "colour": rng.choice(["red", "navy", "olive", "black", "cream"], n),
                "material": rng.choice(["cotton", "steel", "oak", "leather"], n),
                "model": np.where(q2, "qwen2-image", "qwen-image"),
                "image_size": np.where(q2, sizes_q2[size_pick], sizes_q1[size_pick]),
                "seed": [
                    str(s) if q else "" for s, q in zip(rng.integers(0, 10**6, n), q2, strict=True)
                ],
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bg-bench-estimate"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    manifest = args.workdir / f"catalog-{args.rows}.parquet"
    t0 = time.perf_counter()
    make_manifest(manifest, args.rows)
    made = time.perf_counter() - t0
    job = args.workdir / "estimate.toml"
    job.write_text(
        f"""[job]
id = "bench-estimate"
[manifest]
path = "{manifest.name}"
id_column = "sku"
model_column = "model"
[generation]
model = "qwen-image"
template = "Studio photo of a {{colour}} {{material}} {{title}}"
[output]
path = "out/results.parquet"
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # The shipped catalog, pinned: the figure measures planning, not a network round trip.
    env["BATCHGEN_CATALOG"] = str(REPO / "batchgen" / "data" / "models.json")
    m = measure([sys.executable, "-m", "batchgen", "estimate", str(job), "--json"], env)
    wall = m.wall_seconds
    if m.exit_code not in (0, 1):
        sys.exit(f"estimate failed ({m.exit_code}): {m.stderr}")
    est = json.loads(m.stdout)
    print(
        json.dumps(
            {
                "rows": args.rows,
                "manifest_seconds_to_make": round(made, 1),
                "estimate_wall_seconds": round(wall, 1),
                "estimate_peak_rss_mb": round(m.peak_rss_mb, 1),
                "rows_per_second": round(args.rows / wall),
                "credits": est["credits"],
                "decisions": est["decisions"],
                "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
