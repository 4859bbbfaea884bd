"""Variants: a task is (row key, variant). End to end over the simulator on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from jobkit import REPO, cli, read_output, run, write_job

from batchgen.errors import UsageError
from batchgen.job.settings import resolve_settings
from batchgen.job.variants import seed_for
from batchgen.pipeline.plan import canonical_json, fingerprint, idempotency_key
from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store import journal as J

ROWS = [
    {"sku": "A1", "title": "blue mug", "model": "qwen-image"},
    {"sku": "A2", "title": "red lamp", "model": "qwen2-image"},
    {"sku": "A3", "title": "green bag", "model": "qwen2-image"},
]
STYLES = {
    "white": "{title} on a seamless white background",
    "kitchen": "{title} in a sunlit kitchen",
}


def make_job(
    folder: Path,
    variants: dict[str, Any] | None = None,
    rows: list[dict[str, str]] | None = None,
    *,
    output: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    model: str = "qwen-image",
) -> Path:
    folder.mkdir(exist_ok=True)
    pd.DataFrame(rows or ROWS).to_csv(folder / "m.csv", index=False)
    sections: dict[str, Any] = {
        "job": {"id": "var-job"},
        "manifest": {"path": "m.csv", "id_column": "sku", "model_column": "model"},
        "generation": {"model": model, "template": "studio photo of {title}"},
        "output": {"path": "out/results.csv", **(output or {})},
        "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
    }
    if variants is not None:
        sections["variants"] = variants
    sections.update(extra or {})
    return write_job(folder, sections)


def tasks(journal: Path) -> dict[tuple[str, str], dict[str, Any]]:
    with J.Journal(journal) as j:
        return {(r["key"], r["variant"]): dict(r) for r in j.db.execute("SELECT * FROM rows")}


def fast_sim(**kw: Any) -> SimServer:
    return SimServer(SimConfig(rate=None, latency=0.05, queue_time=0.0, seed=1, **kw))


async def test_styles_and_aspects_expand_each_row_in_manifest_then_variant_order(
    tmp_path: Path,
) -> None:
    job = make_job(tmp_path / "j", {"aspect": ["1:1", "16:9"], "styles": STYLES})
    async with fast_sim() as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    assert result.exit_code == 0
    out = read_output(tmp_path / "j" / "out" / "results.csv")
    assert list(out.columns[:6]) == ["row_number", "sku", "variant", "style", "aspect", "model"]
    assert list(out["variant"][:4]) == ["white/1:1", "white/16:9", "kitchen/1:1", "kitchen/16:9"]
    assert list(out["sku"]) == ["A1"] * 4 + ["A2"] * 4 + ["A3"] * 4
    assert (out["status"] == "succeeded").all()
    assert ledger["tasks_created"] == 12
    assert all(n == 1 for n in ledger["tasks_by_idempotency_key"].values())
    journal = tasks(tmp_path / "j" / "out" / "var-job.journal.sqlite")
    # One portable aspect, each model's own option.
    assert json.loads(journal[("A1", "kitchen/16:9")]["params"])["image_size"] == "landscape_16_9"
    assert json.loads(journal[("A2", "kitchen/16:9")]["params"])["image_size"] == "16:9"
    assert json.loads(journal[("A1", "white/1:1")]["params"])["image_size"] == "square_hd"
    assert journal[("A2", "kitchen/1:1")]["prompt"] == "red lamp in a sunlit kitchen"


async def test_adding_removing_and_editing_variants_submit_only_what_changed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "j"
    journal_path = folder / "out" / "var-job.journal.sqlite"
    async with fast_sim() as srv:
        job = make_job(
            folder, {"image_size": ["1:1"], "styles": STYLES}, rows=ROWS[1:], model="qwen2-image"
        )
        assert (await run(job, srv)).exit_code == 0
        assert srv.sim.ledger.snapshot()["tasks_created"] == 4
        first = tasks(journal_path)

        # Adding a value: only the new tasks are submitted.
        job = make_job(
            folder,
            {"image_size": ["1:1", "9:16"], "styles": STYLES},
            rows=ROWS[1:],
            model="qwen2-image",
        )
        assert (await run(job, srv)).exit_code == 0
        assert srv.sim.ledger.snapshot()["tasks_created"] == 8
        again = tasks(journal_path)
        assert all(again[k]["task_id"] == first[k]["task_id"] for k in first)

        # Editing one style: only that style's tasks are new.
        edited = {**STYLES, "kitchen": "{title} on an oak kitchen table"}
        job = make_job(
            folder,
            {"image_size": ["1:1", "9:16"], "styles": edited},
            rows=ROWS[1:],
            model="qwen2-image",
        )
        assert (await run(job, srv)).exit_code == 0
        assert srv.sim.ledger.snapshot()["tasks_created"] == 12
        after = tasks(journal_path)
        for key, row in after.items():
            changed = row["task_id"] != again[key]["task_id"]
            assert changed == key[1].startswith("kitchen/"), key

        # Removing a value: its tasks leave the output, the journal keeps them.
        job = make_job(
            folder, {"image_size": ["9:16"], "styles": edited}, rows=ROWS[1:], model="qwen2-image"
        )
        assert (await run(job, srv)).exit_code == 0
        assert srv.sim.ledger.snapshot()["tasks_created"] == 12
    out = read_output(folder / "out" / "results.csv")
    assert sorted(out["variant"]) == ["kitchen/9:16"] * 2 + ["white/9:16"] * 2
    assert len(tasks(journal_path)) == 8


async def test_retry_failed_resubmits_only_the_failed_tasks(tmp_path: Path) -> None:
    folder = tmp_path / "j"
    async with fast_sim(failure_rate=1.0) as failing:
        job = make_job(folder, {"aspect": ["1:1"]}, rows=ROWS[:2])
        assert (await run(job, failing)).exit_code == 1
    async with fast_sim() as srv:
        job = make_job(folder, {"aspect": ["1:1", "16:9"]}, rows=ROWS[:2])
        assert (await run(job, srv)).exit_code == 1  # the failed tasks stay failed
        assert srv.sim.ledger.snapshot()["tasks_created"] == 2  # the two new 16:9 tasks only
        assert (await run(job, srv, retry_failed=True)).exit_code == 0
        assert srv.sim.ledger.snapshot()["tasks_created"] == 4  # and then the two failed 1:1 tasks
    out = read_output(folder / "out" / "results.csv")
    assert (out["status"] == "succeeded").all() and len(out) == 4


async def test_candidates_get_deterministic_seeds_or_distinct_keys(tmp_path: Path) -> None:
    job = make_job(tmp_path / "j", {"candidates": 3}, rows=ROWS[:2])
    async with fast_sim() as srv:
        assert (await run(job, srv)).exit_code == 0
        ledger = srv.sim.ledger.snapshot()
    journal = tasks(tmp_path / "j" / "out" / "var-job.journal.sqlite")
    assert sorted(v for _, v in journal) == ["c1", "c1", "c2", "c2", "c3", "c3"]
    seeds = [json.loads(journal[("A2", f"c{n}")]["params"])["seed"] for n in (1, 2, 3)]
    assert seeds == [seed_for("var-job", "A2", f"c{n}", n) for n in (1, 2, 3)]
    assert len(set(seeds)) == 3
    # qwen-image has no seed: its candidates differ by their keys alone.
    assert all("seed" not in json.loads(journal[("A1", f"c{n}")]["params"]) for n in (1, 2, 3))
    assert len({journal[("A1", f"c{n}")]["idempotency_key"] for n in (1, 2, 3)}) == 3
    assert ledger["tasks_created"] == 6
    assert set(ledger["tasks_by_client_request_id"]) == {
        f"{k}#c{n}" for k in ("A1", "A2") for n in (1, 2, 3)
    }


async def test_a_job_without_variants_keeps_its_keys_and_fingerprints(tmp_path: Path) -> None:
    job = make_job(tmp_path / "j", None, rows=ROWS[:1])
    async with fast_sim() as srv:
        assert (await run(job, srv)).exit_code == 0
        ledger = srv.sim.ledger.snapshot()
    row = tasks(tmp_path / "j" / "out" / "var-job.journal.sqlite")[("A1", "")]
    params = json.loads(row["params"])
    body = {"client_request_id": "A1", "model": "qwen-image", "prompt": "studio photo of blue mug"}
    body.update({"params": params} if params else {})
    # The formulas from before variants: (job, key, epoch, body) and five fields.
    assert row["idempotency_key"] == idempotency_key("var-job", "A1", 0, canonical_json(body))
    assert row["idempotency_key"] in ledger["tasks_by_idempotency_key"]
    assert row["fingerprint"] == fingerprint("qwen-image", body["prompt"], params, None)
    assert set(ledger["tasks_by_client_request_id"]) == {"A1"}
    out = read_output(tmp_path / "j" / "out" / "results.csv")
    assert "variant" not in out.columns


def test_an_old_journal_is_migrated_its_rows_get_the_empty_variant(tmp_path: Path) -> None:
    path = tmp_path / "old.journal.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, sql in J.MIGRATIONS[:4]:
        for statement in sql.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO migrations VALUES (?, 'then')", (name,))
    db.execute(
        "INSERT INTO rows (key, row_index, row_number, seen_run, state, task_id, fingerprint, "
        "updated_at) VALUES ('A1', 0, 1, 1, 'succeeded', 'task_1', 'fp', 'then')"
    )
    db.close()
    with J.Journal(path) as journal:
        row = journal.get_row("A1")
        assert row is not None
        assert (row["variant"], row["task_id"], row["state"]) == ("", "task_1", "succeeded")
        assert journal.get_row(("A1", "")) is not None
        journal.update_row(("A1", ""), state="failed")
        assert journal.get_row("A1")["state"] == "failed"  # type: ignore[index]


async def test_a_style_too_long_for_one_model_fails_those_tasks_only(tmp_path: Path) -> None:
    long_style = {"white": "{title} " + "x" * 900, "short": "{title} on white"}
    job = make_job(tmp_path / "j", {"styles": long_style}, rows=ROWS[:2])
    async with fast_sim() as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    assert result.exit_code == 1
    out = read_output(tmp_path / "j" / "out" / "results.csv").set_index(["sku", "variant"])
    # qwen2-image allows 800 characters; qwen-image 5000.
    bad = out.loc[("A2", "white")]
    assert bad["status"] == "invalid"
    assert bad["error_field"] == "variants.styles.white"
    assert "800" in bad["error_message"]
    assert (out.drop(index=[("A2", "white")])["status"] == "succeeded").all()
    assert ledger["tasks_created"] == 3


async def test_an_aspect_a_model_lacks_names_the_model_and_its_aspects(tmp_path: Path) -> None:
    job = make_job(tmp_path / "j", {"aspect": ["1:1", "21:9"]}, rows=ROWS[:1])
    async with fast_sim() as srv:
        result = await run(job, srv)
        assert srv.sim.ledger.snapshot()["tasks_created"] == 1
    assert result.exit_code == 1
    out = read_output(tmp_path / "j" / "out" / "results.csv").set_index("variant")
    assert out.loc["1:1", "status"] == "succeeded"
    message = out.loc["21:9", "error_message"]
    assert out.loc["21:9", "status"] == "invalid"
    assert "qwen-image" in message and "1:1, 4:3, 3:4, 16:9, 9:16" in message


async def test_per_model_overrides_and_the_variant_flag(tmp_path: Path) -> None:
    job = make_job(
        tmp_path / "j",
        {"image_size": ["square_hd", "landscape_16_9"]},
        rows=ROWS[:2],
        extra={"variants_by_model": {"qwen2-image": {"image_size": ["1:1", "9:16", "16:9"]}}},
    )
    async with fast_sim() as srv:
        assert (await run(job, srv)).exit_code == 0
        assert srv.sim.ledger.snapshot()["tasks_created"] == 5
    out = read_output(tmp_path / "j" / "out" / "results.csv")
    assert list(out["variant"]) == ["square_hd", "landscape_16_9", "1:1", "9:16", "16:9"]
    flagged = resolve_settings(job, {"variants": ["image_size=square"]}, {})
    assert flagged.variants is not None
    assert flagged.variants["axes"]["image_size"] == ["square"]
    env = resolve_settings(job, {}, {"BATCHGEN_VARIANT": "image_size=square;candidates=2"})
    assert env.variants is not None and env.variants["candidates"] == 2


@pytest.mark.parametrize(
    ("variants", "output", "where", "what"),
    [
        ({"colour": ["red"]}, {}, "variants.colour", "not a param of any model"),
        ({"image_size": ["1:1"]}, {}, "variants.image_size", "not an option of image_size"),
        ({"styles": {"white": "{titel} on white"}}, {}, "variants.styles.white", "{titel}"),
        ({"candidates": 0}, {}, "variants.candidates", "between 1 and"),
        ({"aspect": ["wide"]}, {}, "variants.aspect", "is not W:H"),
        (
            {"aspect": ["1:1", "16:9"]},
            {"download_name": "{key}.{ext}", "download_dir": "img"},
            "output.download_name",
            "two tasks get one download name",
        ),
        ({}, {"download_name": "../{key}.{ext}"}, "output.download_name", "inside the download"),
    ],
)
def test_bad_variant_settings_exit_2_naming_the_key_and_send_nothing(
    tmp_path: Path, variants: dict[str, Any], output: dict[str, Any], where: str, what: str
) -> None:
    job = make_job(tmp_path / "j", variants or None, rows=ROWS[:2], output=output)
    with SimThread(SimConfig(rate=None, latency=0.05, seed=1)) as srv:
        done = cli("run", str(job), srv=srv)
        ledger = srv.sim.ledger.snapshot()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert where in lines[0] and what in lines[0]
    assert "Traceback" not in done.stderr
    assert ledger["tasks_created"] == 0 and ledger["files_uploaded"] == 0


def test_a_flag_naming_an_unknown_style_is_a_usage_error(tmp_path: Path) -> None:
    job = make_job(tmp_path / "j", {"styles": STYLES})
    with pytest.raises(UsageError, match=r"no style named 'wite'.*did you mean 'white'"):
        resolve_settings(job, {"variants": ["style=wite"]}, {})
    chosen = resolve_settings(job, {"variants": ["style=kitchen"]}, {})
    assert chosen.variants is not None and list(chosen.variants["styles"]) == ["kitchen"]


async def test_download_names_follow_the_template_and_stay_inside(tmp_path: Path) -> None:
    rows = [
        {"sku": "../evil", "title": "mug", "model": "qwen2-image"},
        {"sku": "B/2", "title": "lamp", "model": "qwen2-image"},
    ]
    job = make_job(
        tmp_path / "j",
        {"image_size": ["1:1", "16:9"]},
        rows=rows,
        output={"download_dir": "img", "download_name": "{sku}_{image_size}.{ext}"},
        model="qwen2-image",
    )
    async with fast_sim() as srv:
        assert (await run(job, srv)).exit_code == 0
    img = (tmp_path / "j" / "img").resolve()
    files = sorted(p.relative_to(img).as_posix() for p in img.rglob("*.png"))
    assert files == ["B_2_16x9.png", "B_2_1x1.png", "_.._evil_16x9.png", "_.._evil_1x1.png"]
    out = read_output(tmp_path / "j" / "out" / "results.csv")
    assert all(Path(p).resolve().parent == img for p in out["download_path"])


async def test_default_download_names_are_key_then_variant(tmp_path: Path) -> None:
    job = make_job(
        tmp_path / "j", {"styles": STYLES}, rows=ROWS[:1], output={"download_dir": "img"}
    )
    async with fast_sim() as srv:
        assert (await run(job, srv)).exit_code == 0
    img = tmp_path / "j" / "img"
    assert sorted(p.relative_to(img).as_posix() for p in img.rglob("*.png")) == [
        "A1/kitchen.png",
        "A1/white.png",
    ]


def test_estimate_counts_tasks_and_credits_per_axis_exactly(tmp_path: Path) -> None:
    job = make_job(tmp_path / "j", {"aspect": ["1:1", "16:9"], "styles": STYLES, "candidates": 2})
    done = cli("estimate", str(job), "--json")
    assert done.returncode == 0, done.stderr
    est = json.loads(done.stdout)
    # 3 rows x 8 variants: one qwen-image row (4 credits), two qwen2-image rows (6 credits).
    assert (est["rows"], est["tasks"], est["credits"]) == (3, 24, 8 * 4 + 16 * 6)
    assert est["credits_by_model"] == {"qwen-image": 32, "qwen2-image": 96}
    assert est["by_axis"]["style"] == {"white": [12, 64], "kitchen": [12, 64]}
    assert est["by_axis"]["aspect"] == {"1:1": [12, 64], "16:9": [12, 64]}
    assert est["by_axis"]["candidate"] == {"1": [12, 64], "2": [12, 64]}


def test_the_sample_variants_job_prices_sixteen_tasks(tmp_path: Path) -> None:
    job = REPO / "jobs" / "variants.toml"
    done = cli("estimate", str(job), "--json", "--journal", str(tmp_path / "j.sqlite"))
    assert done.returncode == 0, done.stderr
    est = json.loads(done.stdout)
    assert (est["rows"], est["tasks"], est["credits"]) == (4, 16, 8 * 4 + 8 * 6)
    assert set(est["by_axis"]) == {"style", "aspect"}


def test_estimate_out_has_one_line_per_task(tmp_path: Path) -> None:
    job = make_job(tmp_path / "j", {"aspect": ["1:1", "16:9"]}, rows=ROWS[:2])
    plan = tmp_path / "plan.csv"
    done = cli("estimate", str(job), "--out", str(plan))
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(plan, dtype=str)
    assert list(table.columns[:4]) == ["row_number", "key", "variant", "model"]
    assert list(zip(table["key"], table["variant"], strict=True)) == [
        ("A1", "1:1"),
        ("A1", "16:9"),
        ("A2", "1:1"),
        ("A2", "16:9"),
    ]
    assert list(table["credits"]) == ["4", "4", "6", "6"]


async def test_max_credits_counts_tasks(tmp_path: Path) -> None:
    # Two qwen-image rows x 3 aspects = 6 tasks of 4 credits; a cap of 12 fits 3 tasks.
    rows = [{**r, "model": "qwen-image"} for r in ROWS[:2]]
    job = make_job(tmp_path / "j", {"aspect": ["1:1", "16:9", "9:16"]}, rows=rows)
    async with fast_sim() as srv:
        result = await run(job, srv, max_credits=12, allow_partial=True)
        ledger = srv.sim.ledger.snapshot()
    assert result.exit_code == 3
    out = read_output(tmp_path / "j" / "out" / "results.csv")
    assert list(out["status"]) == ["succeeded"] * 3 + ["blocked"] * 3
    assert set(out["error_code"][3:]) == {"budget_reached"}
    assert ledger["tasks_created"] == 3
    assert sum(b["charged"] for b in ledger["credits"].values()) == 12
