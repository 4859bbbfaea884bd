"""Helpers for end-to-end tests: write jobs and manifests, run the pipeline and the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from batchgen.job.settings import Settings, resolve_settings
from batchgen.pipeline.progress import Reporter
from batchgen.pipeline.runner import RunResult, run_job

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "jobs" / "sample"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_job(
    folder: Path, sections: Mapping[str, Mapping[str, Any]], name: str = "job.toml"
) -> Path:
    """Write a job file from {section: {key: value}} (nested dicts become sub-tables)."""
    lines: list[str] = []

    def emit(prefix: str, table: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            emit(f'{prefix}."{k}"' if "-" in k else f"{prefix}.{k}", v)

    for section, table in sections.items():
        emit(section, table)
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def product_rows(
    n: int, *, start: int = 1, models: Iterable[str] = ("qwen-image", "qwen2-image")
) -> list[dict[str, str]]:
    models = list(models)
    return [
        {
            "id": f"sku-{i:05d}",
            "prompt": f"studio photo of product {i}",
            "model": models[i % len(models)],
        }
        for i in range(start, start + n)
    ]


def simple_job(folder: Path, rows: list[dict[str, Any]], **run: Any) -> Path:
    """A job over ``rows`` (columns id, prompt, model, ...), output CSV in ``folder/out``."""
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    sections: dict[str, dict[str, Any]] = {
        "job": {"id": "test-job"},
        "manifest": {"path": "manifest.csv", "model_column": "model"},
        "generation": {"model": "qwen-image"},
        "output": {"path": "out/results.csv"},
        "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2], **run},
    }
    if any("photo" in r for r in rows):
        sections["manifest"]["reference_column"] = "photo"
    return write_job(folder, sections)


def copy_sample(folder: Path) -> Path:
    """The sample job copied into ``folder`` (so its outputs land there)."""
    shutil.copytree(SAMPLE, folder / "sample")
    text = (REPO / "jobs" / "sample.toml").read_text(encoding="utf-8")
    text = text.replace("[run]", "[run]\npoll_first = [0.05, 0.1]\npoll_interval = [0.05, 0.2]")
    job = folder / "sample.toml"
    job.write_text(text, encoding="utf-8")
    return job


def settings_for(job: Path, srv: Any, **flags: Any) -> Settings:
    env = {"RIVYA_API_KEY": srv.api_key, "RIVYA_BASE_URL": srv.base_url}
    env["BATCHGEN_CACHE_DIR"] = os.environ["BATCHGEN_CACHE_DIR"]
    return resolve_settings(job, flags, env)


async def run(job: Path, srv: Any, **flags: Any) -> RunResult:
    settings = settings_for(job, srv, **flags)
    return await run_job(settings, Reporter(quiet=True))


def cli_env(srv: Any | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHGEN_", "RIVYA_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["BATCHGEN_CACHE_DIR"] = os.environ["BATCHGEN_CACHE_DIR"]
    env["RIVYA_BASE_URL"] = os.environ["RIVYA_BASE_URL"]  # loopback, refused (conftest)
    if srv is not None:
        env["RIVYA_API_KEY"] = srv.api_key
        env["RIVYA_BASE_URL"] = srv.base_url
    return env


def cli(
    *args: str, srv: Any | None = None, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m batchgen ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *args],
        capture_output=True,
        text=True,
        env=cli_env(srv),
        timeout=timeout,
        **kw,
    )


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pd.read_parquet(path)


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of [start, end) intervals open at once."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    best = cur = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        cur += delta
        best = max(best, cur)
    return best


def interrupt_run(job: Path, srv: Any, *, after_tasks: int, sig: int, timeout: float = 60) -> int:
    """Start ``batchgen run JOB -q`` in a subprocess, send it ``sig`` once the simulator has
    created ``after_tasks`` tasks, and return its exit code (negative: killed by a signal)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "run", str(job), "-q"],
        env=cli_env(srv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while srv.snapshot()["tasks_created"] < after_tasks and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.wait(timeout=30)
