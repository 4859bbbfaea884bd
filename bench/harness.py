"""Shared machinery of the benchmarks: a simulator in its own process, manifests, job files, and
``batchgen run`` as a measured subprocess.

Nothing here is imported by batchgen itself. Linux only (``os.wait4``, ``/proc``).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: no BATCHGEN_/RIVYA_ leaking in, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHGEN_", "RIVYA_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # The live catalog's cache: the bench's own, never the user's.
    env["BATCHGEN_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / "batchgen-bench-cache")
    env.update(extra or {})
    return env


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Simulator:
    """``python -m batchgen sim`` in its own process on 127.0.0.1 (a free port)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.api_key = ""
        self.cpu_seconds = 0.0
        self.peak_rss_mb = 0.0
        self._cpu_mark = 0.0

    def __enter__(self) -> Simulator:
        args = [sys.executable, "-m", "batchgen", "sim", "--port", "0", "--credits", "1000000000"]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not None and value is not False:
                args += [flag, str(value)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env()
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while not (self.base_url and self.api_key):
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the simulator did not start: {' '.join(args)}")
                continue
            name, _, value = line.strip().partition(": ")
            if name == "base_url":
                self.base_url = value
            elif name == "api_key":
                self.api_key = value
        return self

    def mark(self) -> None:
        """Start counting the simulator's CPU from now (see :meth:`cpu_since_mark`)."""
        assert self.proc is not None
        self._cpu_mark = proc_cpu_seconds(self.proc.pid)

    def cpu_since_mark(self) -> float:
        assert self.proc is not None
        return proc_cpu_seconds(self.proc.pid) - self._cpu_mark

    def ledger(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/_sim/ledger", timeout=120) as resp:
            return json.loads(resp.read())

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            self.cpu_seconds = proc_cpu_seconds(self.proc.pid)
            self.peak_rss_mb = proc_peak_rss_mb(self.proc.pid)
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_manifest(path: Path, rows: int, *, models: tuple[str, ...] = ("qwen-image",)) -> None:
    """A CSV manifest of ``rows`` rows without references (columns id, prompt, model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "model"])
        for i in range(rows):
            w.writerow([f"sku-{i:07d}", f"studio photo of product {i}", models[i % len(models)]])


def write_job(
    folder: Path, manifest: Path, *, job_id: str = "bench", run: dict[str, Any] | None = None
) -> Path:
    """A job file over ``manifest`` with batchgen's defaults (no rate, no poll timings)."""
    lines = [
        "[job]",
        f'id = "{job_id}"',
        "[manifest]",
        f'path = "{manifest}"',
        'model_column = "model"',
        "[generation]",
        'model = "qwen-image"',
        "[output]",
        f'path = "{folder / "out" / "results.csv"}"',
        "[run]",
    ]
    for key, value in (run or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    job = folder / "job.toml"
    job.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return job


@dataclass
class Measured:
    """One measured child process."""

    exit_code: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    summary: dict[str, Any] = field(default_factory=dict)


def _vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set so far (VmHWM, kB), or 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measure(args: list[str], env: dict[str, str], *, timeout: float = 1800) -> Measured:
    """Run ``args``; wall time, and CPU and peak RSS of that process alone (``os.wait4``)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bg-bench-{os.getpid()}-{time.time_ns()}"
    with open(str(out_path) + ".out", "w+") as out, open(str(out_path) + ".err", "w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, text=True)
        deadline = t0 + timeout
        hwm = 0
        while True:
            hwm = max(hwm, _vm_hwm_kb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for suffix in (".out", ".err"):
        Path(str(out_path) + suffix).unlink(missing_ok=True)
    return Measured(
        exit_code=proc.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        # ru_maxrss of a child counts the parent's RSS at fork (Linux keeps the high-water mark
        # across exec), so a big benchmark process would show through: VmHWM, polled from
        # /proc, is the child's own peak. ru_maxrss is the fallback where /proc is missing.
        peak_rss_mb=(hwm or usage.ru_maxrss) / 1024,
        stdout=stdout,
        stderr=stderr,
    )


def run_batchgen(job: Path, sim: Simulator, *, timeout: float = 1800) -> Measured:
    """``python -m batchgen run JOB -q --json`` against ``sim``, measured."""
    env = child_env({"RIVYA_API_KEY": sim.api_key, "RIVYA_BASE_URL": sim.base_url})
    m = measure(
        [sys.executable, "-m", "batchgen", "run", str(job), "-q", "--json"], env, timeout=timeout
    )
    try:
        m.summary = json.loads(m.stdout)
    except ValueError:
        m.summary = {}
    return m


def ledger_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Requests by route and responses by status between two ledger snapshots."""

    def diff(name: str) -> dict[str, int]:
        a, b = before.get(name, {}), after.get(name, {})
        return {k: v - a.get(k, 0) for k, v in b.items() if v - a.get(k, 0)}

    return {
        "requests": diff("requests"),
        "responses": diff("responses"),
        "tasks_created": after["tasks_created"] - before["tasks_created"],
    }


ROUTES = {
    "POST /api/v1/generations": "submit",
    "GET /api/v1/generations/{task_id}": "poll",
    "POST /api/v1/files": "upload",
    "GET /api/v1/credits": "credits",
}


def request_figures(delta: dict[str, Any], rows: int) -> dict[str, Any]:
    """Requests per row by endpoint, and the share of 429s."""
    by = {name: 0 for name in ROUTES.values()}
    for route, n in delta["requests"].items():
        by[ROUTES.get(route, "other")] = by.get(ROUTES.get(route, "other"), 0) + n
    total = sum(delta["requests"].values())
    throttled = delta["responses"].get("429", 0)
    return {
        "requests": total,
        "requests_per_row": round(total / rows, 3),
        "per_row": {k: round(v / rows, 3) for k, v in by.items() if v},
        "share_429": round(throttled / total, 4) if total else 0.0,
        "responses_429": throttled,
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return info
