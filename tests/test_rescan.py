"""Re-runs: the fast path decides exactly what full planning decides, and a re-scan writes only
what changed while the output, status and scan membership stay right."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from jobkit import cli, copy_sample, product_rows, read_output, run, simple_job

from batchgen.job.catalog import Catalog
from batchgen.job.manifest import MAPPING_SETTINGS, Manifest
from batchgen.job.settings import Settings, resolve_settings
from batchgen.pipeline import plan as P
from batchgen.pipeline.scan import make_planner, scan_manifest
from batchgen.sim import SimConfig, SimServer
from batchgen.store import journal as J

CATALOG = Catalog.default()
FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 5}

# Settings that do not change what a row asks for, so they stay out of the re-run digest.
NOT_MAPPING = {
    "job_file": "where the settings came from",
    "job_id": "part of the Idempotency-Key, not of the row's content",
    "manifest": "the file's folder is in the digest; its name does not change a row",
    "batch_size": "how many rows are read at a time",
    "output": "where results go",
    "journal": "where the journal is",
    "download_dir": "where images go",
    "max_tasks_in_flight": "pace",
    "max_requests_in_flight": "pace",
    "upload_concurrency": "pace",
    "download_concurrency": "pace",
    "rate": "pace",
    "poll_first": "pace",
    "poll_interval": "pace",
    "task_timeout": "pace",
    "max_credits": "budget",
    "allow_partial": "budget",
    "retry_failed": "checked by the fast path itself",
    "dry_run": "mode",
    "base_url": "service",
    "catalog": "the catalog itself is in the digest, not where it came from",
    "catalog_max_age": "the catalog itself is in the digest, not where it came from",
    "cache_dir": "the catalog itself is in the digest, not where it came from",
    "api_key": "secret, and not content",
    "api_key_source": "where the key came from",
    "simulate": "service",
    "progress": "display",
    "quiet": "display",
    "log_format": "display",
    "status_interval": "display",
    "sources": "where each value came from",
    "variants": "each variant's definition is in its task's digest (Planner.task_digest)",
    "variants_by_model": "each variant's definition is in its task's digest",
    "download_name": "the name template is in each task's digest when set",
}


def test_every_setting_is_either_in_the_digest_or_known_not_to_change_a_row() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(MAPPING_SETTINGS) | set(NOT_MAPPING) == fields
    assert not set(MAPPING_SETTINGS) & set(NOT_MAPPING)


# --------------------------------------------------------------------------- fast == full


def _settings(job: Path) -> Settings:
    return resolve_settings(job, {}, {})


def _record_finished(job: Path) -> None:
    """Scan the job into its journal as a run would, then mark the rows as a finished run
    leaves them: all valid rows succeeded except one that failed."""
    settings = _settings(job)
    with J.Journal(settings.journal) as journal:
        run_id = journal.start_run(os.getpid(), "run")
        scan_manifest(settings, CATALOG, journal, run_id)
        journal.db.execute("UPDATE rows SET state = 'succeeded' WHERE state = 'pending'")
        journal.db.execute("UPDATE rows SET state = 'failed' WHERE key = '00104'")


def _decisions(job: Path, *, fast: bool) -> list[tuple[str, int, str, int, bool]]:
    settings = _settings(job)
    manifest = Manifest.open(settings, CATALOG)
    with J.Journal(settings.journal, readonly=True) as journal:
        planner = make_planner(settings, CATALOG, manifest, journal, fast=fast)
        return [
            (p.row.key, p.row.index, p.action, p.epoch, p.fast)
            for batch in manifest.iter_raw_batches()
            for p in planner.plan_batch(batch)
        ]


def _edit_cells(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "sample" / "catalog.csv"
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        change(df).to_csv(path, index=False)

    return edit


def _set_cell(row: int, column: str, value: str) -> Callable[[Path], None]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, column] = value
        return df

    return _edit_cells(change)


def _edit_job(old: str, new: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        job = folder / "sample.toml"
        text = job.read_text(encoding="utf-8")
        assert old in text
        job.write_text(text.replace(old, new), encoding="utf-8")

    return edit


def _new_photo_bytes(folder: Path) -> None:
    from PIL import Image

    path = folder / "sample" / "photos" / "mug.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)


def _touch_photo(folder: Path) -> None:
    path = folder / "sample" / "photos" / "mug.png"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def _semicolons(folder: Path) -> None:
    path = folder / "sample" / "catalog.csv"
    pd.read_csv(path, dtype=str, keep_default_na=False).to_csv(path, index=False, sep=";")
    _edit_job('id_column = "sku"', 'id_column = "sku"\ndelimiter = "auto"')(folder)


def _blank_cells_on_line(line: int) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "sample" / "catalog.csv"
        lines = path.read_bytes().split(b"\n")
        lines[line - 1] = lines[line - 1].rstrip(b"\r") + b",,"
        path.write_bytes(b"\n".join(lines))

    return edit


def _duplicate_key(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[5, "sku"] = df.loc[2, "sku"]
    return df


EDITS: dict[str, Callable[[Path], None]] = {
    "re-exported unchanged": _edit_cells(lambda df: df),
    "template input": _set_cell(2, "title", "linen napkin set, sand"),
    "pass-through only": _set_cell(3, "category", "home"),
    "padding that stripping removes": _set_cell(4, "colour", "  cobalt blue  "),
    "param column": _set_cell(6, "seed", "4242"),
    "model column": _set_cell(7, "model", "qwen2-image"),
    "blank key": _set_cell(8, "sku", ""),
    "duplicate key": _edit_cells(_duplicate_key),
    "rows reversed": _edit_cells(lambda df: df.iloc[::-1].reset_index(drop=True)),
    "rows removed and added": _edit_cells(
        lambda df: pd.concat([df.drop(index=[1, 9]), df.iloc[[0]].assign(sku="99999")])
    ),
    "reference bytes changed in place": _new_photo_bytes,
    "reference touched": _touch_photo,
    "job default param": _edit_job('output_format = "png"', 'output_format = "jpeg"'),
    "job template": _edit_job("soft daylight", "soft window light"),
    "per-model default": _edit_job('image_size = "1:1"', 'image_size = "16:9"'),
    "job delimiter, file re-exported with semicolons": _semicolons,
    "job encoding": _edit_job('id_column = "sku"', 'id_column = "sku"\nencoding = "cp1252"'),
    "blank extra cells on a line": _blank_cells_on_line(5),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_fast_path_decides_exactly_what_full_planning_decides(tmp_path: Path, edit: str) -> None:
    job = copy_sample(tmp_path)
    _record_finished(job)
    EDITS[edit](tmp_path)
    fast = _decisions(job, fast=True)
    full = _decisions(job, fast=False)
    assert [d[:4] for d in fast] == [d[:4] for d in full]
    assert not any(d[4] for d in full)
    kept = [d for d in fast if d[2] in (P.KEEP, P.KEEP_FAILED)]
    if edit in ("re-exported unchanged", "rows reversed"):
        assert len(kept) == 18 and all(d[4] for d in kept)  # every kept row took the fast path
    if edit.startswith("job "):  # the job changed what every row asks for
        assert not any(d[4] for d in fast)
    if edit == "blank extra cells on a line":  # line 5: the fourth row, 00104
        assert fast[3][:3] == ("", 3, P.INVALID) and "00104" not in [d[0] for d in fast]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_fast_path_in_parquet_and_jsonl_manifests(tmp_path: Path, fmt: str) -> None:
    job = copy_sample(tmp_path)
    table = pd.read_csv(tmp_path / "sample" / "catalog.csv", dtype=str, keep_default_na=False)
    if fmt == "jsonl":
        table.to_json(tmp_path / "sample" / "catalog.jsonl", orient="records", lines=True)
    else:
        table.to_parquet(tmp_path / "sample" / "catalog.parquet", index=False)
    _edit_job("sample/catalog.csv", f"sample/catalog.{fmt}")(tmp_path)
    _record_finished(job)
    fast = _decisions(job, fast=True)
    assert [d[:4] for d in fast] == [d[:4] for d in _decisions(job, fast=False)]
    assert sum(d[4] for d in fast) == 18  # every kept row took the fast path
    if fmt == "jsonl":  # a changed cell is noticed in JSONL too
        lines = (tmp_path / "sample" / "catalog.jsonl").read_text().splitlines()
        lines[1] = lines[1].replace('"kitchen"', '"garden"')
        (tmp_path / "sample" / "catalog.jsonl").write_text("\n".join(lines) + "\n")
        fast = _decisions(job, fast=True)
        assert [d[:4] for d in fast] == [d[:4] for d in _decisions(job, fast=False)]
        assert sum(d[4] for d in fast) == 17


def test_fast_path_agrees_after_random_cell_edits(tmp_path: Path) -> None:
    """Many small edits at once, chosen by a seeded generator: still the same decisions."""
    import random

    job = copy_sample(tmp_path)
    _record_finished(job)
    rng = random.Random(11)
    path = tmp_path / "sample" / "catalog.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for _ in range(12):
        row, column = rng.randrange(len(df)), rng.choice(list(df.columns))
        df.loc[row, column] = rng.choice(["", " ", "x", df.loc[row, column] + " ", "00101"])
    df.to_csv(path, index=False)
    fast = _decisions(job, fast=True)
    full = _decisions(job, fast=False)
    assert [d[:4] for d in fast] == [d[:4] for d in full]


# --------------------------------------------------------------------------- end to end


def _journal_rows(job: Path) -> dict[str, tuple[str, int]]:
    settings = _settings(job)
    db = sqlite3.connect(settings.journal)
    try:
        return {k: (u, s) for k, u, s in db.execute("SELECT key, updated_at, seen_run FROM rows")}
    finally:
        db.close()


async def test_rerun_of_a_finished_job_writes_no_row_and_keeps_everything(
    tmp_path: Path,
) -> None:
    job = copy_sample(tmp_path)
    out = tmp_path / "out" / "sample" / "results.csv"
    async with SimServer(SimConfig(**FAST)) as srv:
        assert (await run(job, srv)).exit_code == 1  # the two invalid sample rows
        first = read_output(out)
        before = _journal_rows(job)
        tasks = srv.sim.ledger.snapshot()["tasks_created"]
        result = await run(job, srv)
        assert srv.sim.ledger.snapshot()["tasks_created"] == tasks
    assert result.exit_code == 1
    assert _journal_rows(job) == before  # not one row written
    second = read_output(out)
    assert list(second["sku"]) == list(first["sku"]) and len(second) == 20
    assert set(first["generated"]) == {"this_run", ""}
    assert set(second["generated"]) == {"kept", ""}
    same = [c for c in first.columns if c != "generated"]
    pd.testing.assert_frame_equal(first[same], second[same])
    assert result.summary["by_status"] == {"invalid": 2, "succeeded": 18}
    assert result.summary["kept"] == 18
    exported = tmp_path / "exported.csv"
    assert cli("export", str(job), "--out", str(exported)).returncode == 0
    assert exported.read_bytes() == out.read_bytes()  # the same table the run wrote


async def test_rescan_follows_rows_leaving_moving_and_coming_back(tmp_path: Path) -> None:
    rows = product_rows(10)
    duplicate = {**rows[2], "prompt": "same key again"}
    job = simple_job(tmp_path, [*rows, duplicate])
    out = tmp_path / "out" / "results.csv"
    manifest = tmp_path / "manifest.csv"

    async def rerun(new_rows: list[dict[str, str]]) -> tuple[int, pd.DataFrame, dict]:
        pd.DataFrame(new_rows).to_csv(manifest, index=False)
        before = srv.sim.ledger.snapshot()["tasks_created"]
        result = await run(job, srv)
        created = srv.sim.ledger.snapshot()["tasks_created"] - before
        return created, read_output(out), result.summary

    async with SimServer(SimConfig(**FAST)) as srv:
        created, table, summary = await rerun([*rows, duplicate])
        assert created == 10 and len(table) == 11
        assert table["error_code"].tolist().count("duplicate_key") == 1

        created, table, summary = await rerun([*rows, duplicate])  # unchanged
        assert created == 0 and table["id"].tolist() == [r["id"] for r in [*rows, duplicate]]
        assert table["error_code"].tolist().count("duplicate_key") == 1
        assert summary["by_status"] == {"invalid": 1, "succeeded": 10}

        left = [rows[i] for i in (9, 8, 7, 6, 4, 3, 2, 0)] + [duplicate]  # 2 gone, reversed
        created, table, summary = await rerun(left)
        assert created == 0
        assert table["id"].tolist() == [r["id"] for r in left]
        assert table["row_number"].tolist() == [str(i) for i in range(1, 10)]
        assert summary["by_status"] == {"invalid": 1, "succeeded": 8}

        created, table, summary = await rerun(left)  # the same again: nothing moves
        assert created == 0 and table["id"].tolist() == [r["id"] for r in left]

        back = [*rows, {"id": "sku-new", "prompt": "a new product", "model": "qwen-image"}]
        created, table, summary = await rerun(back)  # the two come back, unchanged: kept
        assert created == 1
        assert table["id"].tolist() == [r["id"] for r in back]
        assert table.set_index("id").loc["sku-new", "generated"] == "this_run"
        assert (table.set_index("id").drop(index="sku-new")["generated"] == "kept").all()
        assert summary["by_status"] == {"succeeded": 11}


async def test_reference_changed_in_place_is_regenerated_and_a_touch_is_not(
    tmp_path: Path,
) -> None:
    job = copy_sample(tmp_path)
    catalog = pd.read_csv(tmp_path / "sample" / "catalog.csv", dtype=str, keep_default_na=False)
    with_mug = set(catalog.loc[catalog["photo"] == "photos/mug.png", "sku"])
    out = tmp_path / "out" / "sample" / "results.csv"
    async with SimServer(SimConfig(**FAST)) as srv:
        await run(job, srv)
        first = read_output(out).set_index("sku")

        _new_photo_bytes(tmp_path)
        before = srv.sim.ledger.snapshot()["tasks_created"]
        await run(job, srv)
        assert srv.sim.ledger.snapshot()["tasks_created"] - before == len(with_mug)
        second = read_output(out).set_index("sku")
        changed = set(second.index[second["task_id"] != first["task_id"]])
        assert changed == with_mug

        _touch_photo(tmp_path)  # new times, same bytes: hashed again, nothing to send
        before = srv.sim.ledger.snapshot()["tasks_created"]
        await run(job, srv)
        assert srv.sim.ledger.snapshot()["tasks_created"] == before
        refreshed = _journal_rows(job)
        await run(job, srv)  # and the digest was refreshed: the next re-run writes nothing
        assert _journal_rows(job) == refreshed


def test_estimate_reads_a_journal_of_an_older_version(tmp_path: Path) -> None:
    """A read-only look (estimate) at a journal made before the digest column existed."""
    job = copy_sample(tmp_path)
    settings = _settings(job)
    settings.journal.parent.mkdir(parents=True)
    db = sqlite3.connect(settings.journal, isolation_level=None)
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, sql in J.MIGRATIONS[:3]:
        db.executescript(sql)
        db.execute("INSERT INTO migrations VALUES (?, 'then')", (name,))
    db.close()
    from batchgen.views.estimate import estimate

    est = estimate(settings, catalog=Catalog.default())
    assert est.decisions == {"invalid": 2, "would_submit": 18}
    with J.Journal(settings.journal) as journal:  # a run migrates it
        names = {r[1] for r in journal.db.execute("PRAGMA table_info(rows)")}
    assert "scan_digest" in names
