"""The benchmark scripts still run (on ~20 rows): a smoke test so bench/ does not rot.

No timing is asserted: the benchmarks' goals are measured by ``bench/run_bench.py`` and recorded
in BENCHMARKS.md, never in the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def quick_bench(tmp_path: Path, script: str, *args: str) -> dict[str, Any]:
    """Run ``bench/<script> --quick`` in ``tmp_path``; its JSON report."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / script),
            "--quick",
            *args,
            "--workdir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.timeout(300)
def test_bench_suite_runs_on_a_few_rows(tmp_path: Path) -> None:
    report = quick_bench(tmp_path, "run_bench.py", "--only", "rate_limited", "--only", "scale")
    rl = report["rate_limited"]
    for side in ("batchgen", "baseline"):
        assert rl[side]["by_status"] == {"succeeded": 20}, rl[side]
        assert rl[side]["tasks_created"] == 20
        assert rl[side]["per_row"]["submit"] >= 1.0
    assert [r["tasks_created"] for r in report["scale"]["reruns"]] == [0, 0, 0]
    edited = report["scale"]["rerun_edited"]
    assert edited["edited"] > 0 and edited["tasks_created"] == edited["edited"]
    assert [r["by_status"] for r in report["scale"]["runs"]] == [
        {"succeeded": 20},
        {"succeeded": 30},
    ]


@pytest.mark.timeout(300)
def test_pacing_scenarios_run_on_a_few_rows(tmp_path: Path) -> None:
    args = []
    for name in ("small_bucket", "shared_account", "limit_change", "mixed_latency"):
        args += ["--only", name]
    report = quick_bench(tmp_path, "run_bench.py", *args)
    assert report["small_bucket"]["by_status"] == {"succeeded": 20}
    assert report["small_bucket"]["sim"]["burst"] == 10
    shared = report["shared_account"]
    assert [r["by_status"] for r in shared["runs"]] == [{"succeeded": 5}] * 4
    assert report["limit_change"]["by_status"] == {"succeeded": 20}
    mixed = report["mixed_latency"]
    assert mixed["by_status"] == {"succeeded": 20}
    # every model was polled, and the simulator counted the polls by model
    assert set(mixed["polls_per_row_by_model"]) == {"z-image", "qwen-image", "qwen2-image"}
    assert all(p >= 1.0 for p in mixed["polls_per_row_by_model"].values())


def test_output_write_bench_runs_on_a_few_rows() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "output_write.py"), "--rows", "30", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "csv      30 rows" in proc.stdout and "parquet  30 rows" in proc.stdout


@pytest.mark.timeout(300)
def test_variants_bench_runs_on_a_few_rows(tmp_path: Path) -> None:
    report = quick_bench(tmp_path, "variants_bench.py")
    assert report["rate"]["run"]["tasks_created"] == 60  # 20 rows x 3 aspects
    assert report["rate"]["run"]["by_status"] == {"succeeded": 60}
    assert [r["tasks_created"] for r in report["rss"]["runs"]] == [30, 300]
    assert report["estimate"]["tasks"] == 800  # 200 rows x 4 variants
