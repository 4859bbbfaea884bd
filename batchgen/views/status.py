"""Operators' views of a job's journal: ``status`` and ``export``, safe while a run is going on."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from batchgen.errors import UsageError
from batchgen.job.settings import Settings
from batchgen.job.variants import VariantMatrix
from batchgen.store import journal as J
from batchgen.store.output import write_output


def open_journal(settings: Settings) -> J.Journal:
    """The job's journal, read-only; a clear error when the job has never run."""
    if not settings.journal.exists():
        raise UsageError(
            "no journal for this job yet",
            str(settings.journal),
            "run the job first (batchgen run), or point --journal at its journal",
        )
    return J.Journal(settings.journal, readonly=True)


def running_pid(journal_path: Path) -> int | None:
    """The pid of a live run holding the job's lock, or None."""
    lock = journal_path.with_name(journal_path.name + ".lock")
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def job_status(settings: Settings) -> dict[str, Any]:
    """Rows by state, credits, errors, and the last runs with their outcomes."""
    with open_journal(settings) as journal:
        scan = journal.last_scan_run()
        runs = journal.last_runs(5)
        status: dict[str, Any] = {
            "job_id": journal.get_meta("job_id") or settings.job_id,
            "journal": str(settings.journal),
            "running_pid": running_pid(settings.journal),
            "rows": 0,
            "by_status": {},
            "credits_reserved": 0,
            "credits_charged": 0,
            "errors": {},
            "uploads_cached": journal.upload_count(),
            "runs": [
                {
                    k: r[k]
                    for k in (
                        "id",
                        "mode",
                        "started_at",
                        "finished_at",
                        "outcome",
                        "exit_code",
                        "pid",
                    )
                }
                | ({"error": r["summary"]["error"]} if (r["summary"] or {}).get("error") else {})
                for r in runs
            ],
        }
        if scan is not None:
            totals = journal.totals(scan)
            status.update(
                rows=totals.rows,
                by_status=dict(sorted(totals.by_state.items())),
                credits_reserved=totals.reserved,
                credits_charged=totals.charged,
                errors=dict(sorted(totals.errors.items())),
            )
        return status


def format_status(s: dict[str, Any]) -> str:
    lines = [f"job {s['job_id']}  ({s['journal']})"]
    if s["running_pid"]:
        lines.append(f"  running now: pid {s['running_pid']}")
    lines.append(
        f"  rows {s['rows']}: "
        + (", ".join(f"{k} {v}" for k, v in s["by_status"].items()) or "none")
    )
    lines.append(f"  credits: reserved {s['credits_reserved']}, charged {s['credits_charged']}")
    if s["errors"]:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in s["errors"].items()))
    lines.append(f"  uploads cached: {s['uploads_cached']}")
    for r in s["runs"]:
        end = r["finished_at"] or "(not finished: still running, or killed)"
        outcome = f"{r['outcome']} (exit {r['exit_code']})" if r["outcome"] else ""
        lines.append(f"  run {r['id']} {r['mode']}: {r['started_at']} -> {end} {outcome}".rstrip())
        if r.get("error"):
            lines.append(f"    {r['error']}")
    return "\n".join(lines)


def export(settings: Settings, out: Path) -> int:
    """Write the output table from the journal to ``out``; return the number of rows."""
    with open_journal(settings) as journal:
        # ``generated`` as the latest run wrote it (or is writing it): this_run marks its results.
        latest = journal.last_runs(1)
        return write_output(
            journal,
            out,
            id_column=settings.id_column,
            passthrough=settings.passthrough,
            current_run=latest[0]["id"] if latest else None,
            axes=VariantMatrix.of(settings).axes(),
        )
