"""Proof of exactly-once: SIGKILL a run at many random moments, re-run until done, then compare
with an uninterrupted run and with the simulator's ledger; per row, and per (row, variant) task
for a job with variants."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobkit import SAMPLE, cli, cli_env, product_rows, read_output, simple_job

from batchgen.sim import SimConfig, SimThread

ROWS = 300
KILLS = 8
COMPARED = [
    "id",
    "model",
    "status",
    "reserved_credits",
    "final_credits",
    "error_code",
    "row_number",
]


def faulty() -> SimConfig:
    return SimConfig(
        rate=300.0,
        burst=30,
        latency=0.3,
        queue_time=0.05,
        error_rate=0.03,
        drop_rate=0.02,
        drop_after_rate=0.02,
        seed=21,
    )


VARIANTS = ("1:1", "16:9")  # the variant test: ROWS // 2 rows of two aspects each


def make_job(folder: Path, variants: bool = False) -> Path:
    folder.mkdir()
    shutil.copytree(SAMPLE / "photos", folder / "photos")
    rows = product_rows(ROWS // len(VARIANTS) if variants else ROWS)
    photos = ["photos/mug.png", "photos/sneaker.jpg", "photos/lamp.png", "photos/backpack.jpg"]
    for i, row in enumerate(rows):
        row["photo"] = photos[i % 4] if i % 3 == 0 else ""
    job = simple_job(folder, rows, max_tasks_in_flight=64, max_requests_in_flight=16)
    if variants:
        with job.open("a", encoding="utf-8") as fh:
            fh.write(f"[variants]\naspect = {list(VARIANTS)!r}\n".replace("'", '"'))
    return job


@pytest.mark.parametrize("variants", [False, True], ids=["rows", "variants"])
def test_killed_at_random_moments_then_completed_equals_uninterrupted(
    tmp_path: Path, variants: bool
) -> None:
    rng = random.Random(20261122)
    crashed_job = make_job(tmp_path / "crashed", variants)
    clean_job = make_job(tmp_path / "clean", variants)

    with SimThread(faulty()) as srv:
        kills = 0
        for attempt in range(KILLS):
            proc = subprocess.Popen(
                [sys.executable, "-m", "batchgen", "run", str(crashed_job), "-q"],
                env=cli_env(srv),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # Kill at random moments: some during start-up and the scan, most after a random
            # number of new tasks (so the moment does not depend on how fast the machine is).
            before = srv.snapshot()["tasks_created"]
            target = before + rng.randint(5, 40)
            deadline = time.monotonic() + (rng.uniform(0.2, 1.0) if attempt % 3 == 0 else 60)
            while proc.poll() is None and time.monotonic() < deadline:
                if srv.snapshot()["tasks_created"] >= target:
                    break
                time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            if proc.returncode == 0:
                break
        final = cli("run", str(crashed_job), "-q", srv=srv, timeout=300)
        ledger = srv.snapshot()
    assert kills >= 3, "the job finished before it could be interrupted often enough"
    assert final.returncode == 0, final.stderr

    with SimThread(faulty()) as srv2:
        clean = cli("run", str(clean_job), "-q", srv=srv2, timeout=300)
    assert clean.returncode == 0, clean.stderr

    crashed_out = read_output(tmp_path / "crashed" / "out" / "results.csv")
    clean_out = read_output(tmp_path / "clean" / "out" / "results.csv")
    assert len(crashed_out) == ROWS  # tasks: rows, or rows x variants
    assert (crashed_out["status"] == "succeeded").all()
    compared = [*COMPARED, "variant"] if variants else COMPARED
    assert crashed_out[compared].equals(clean_out[compared])

    # Exactly one task per task key (row, variant), one charge per succeeded task, and no task
    # without one.
    if variants:
        assert sorted(set(crashed_out["variant"])) == sorted(VARIANTS)
        keys = {f"{k}#{v}" for k, v in zip(crashed_out["id"], crashed_out["variant"], strict=True)}
    else:
        keys = set(crashed_out["id"])
    assert len(keys) == ROWS
    assert ledger["tasks_created"] == ROWS
    assert ledger["tasks_without_key"] == 0
    assert set(ledger["tasks_by_client_request_id"]) == keys
    assert all(n == 1 for n in ledger["tasks_by_client_request_id"].values())
    assert all(n == 1 for n in ledger["tasks_by_idempotency_key"].values())
    charged = sum(b["charged"] for b in ledger["credits"].values())
    assert charged == crashed_out["final_credits"].astype(int).sum()
    assert len(set(crashed_out["task_id"])) == ROWS
    # Each unique photo uploaded at most once per interruption window, and reused afterwards.
    assert ledger["files_uploaded"] <= 4 * (KILLS + 1)
