"""The live model catalog, end to end against the simulator over HTTP: fetched, cached, revalidated,
fallen back from, and the service's own prices trusted over it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from jobkit import cli, cli_env, product_rows, read_output, simple_job, write_job

from batchgen.job.catalog import Catalog
from batchgen.sim import SimConfig
from batchgen.sim.server import SimThread

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 5}
NEW_MODEL = {
    "id": "flux-new",
    "object": "model",
    "display_name": "Flux New",
    "category": "image",
    "base_credits": 2,
    "billing_type": "FIXED",
    "max_prompt_length": 300,
    "params": [
        {"key": "style", "type": "select", "default": "photo", "options": ["photo", "sketch"]}
    ],
    "api_status": "available",
    "reference_media": None,
}


def catalog_with(
    *, prices: dict[str, int] | None = None, add: list[dict[str, Any]] | None = None
) -> Catalog:
    """The shipped catalog with some prices changed and some models added."""
    payload = Catalog.default().to_api()
    for entry in payload["data"]:
        if entry["id"] in (prices or {}):
            entry["base_credits"] = (prices or {})[entry["id"]]
    payload["data"].extend(add or [])
    return Catalog.from_api(payload)


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


def run_json(job: Path, srv: Any, *flags: str) -> tuple[int, dict[str, Any], str]:
    proc = cli("run", str(job), "--json", "--progress", "none", *flags, srv=srv)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def estimate_json(job: Path, srv: Any, *flags: str) -> tuple[int, dict[str, Any], str]:
    proc = cli("estimate", str(job), "--json", *flags, srv=srv)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def models_requests(srv: Any) -> int:
    return int(srv.snapshot()["requests"].get("GET /api/v1/models", 0))


def test_a_model_only_in_the_live_catalog_runs_end_to_end(tmp_path: Path) -> None:
    rows = [
        {"id": f"n{i}", "prompt": f"a lamp {i}", "style": "sketch" if i % 2 else ""}
        for i in range(6)
    ]
    job = simple_job(tmp_path, rows)
    text = job.read_text(encoding="utf-8").replace('model = "qwen-image"', 'model = "flux-new"')
    job.write_text(text.replace('model_column = "model"\n', ""), encoding="utf-8")
    # Unknown to the shipped catalog: refused before anything is sent.
    offline = cli("run", str(job), "-q")
    assert offline.returncode == 2 and "unknown model 'flux-new'" in offline.stderr
    with SimThread(SimConfig(**FAST), catalog=catalog_with(add=[NEW_MODEL])) as srv:
        code, summary, stderr = run_json(job, srv)
        ledger = srv.snapshot()
        shown = cli("models", "flux-new", "--base-url", srv.base_url, srv=srv)
    assert code == 0, stderr
    assert summary["by_status"] == {"succeeded": 6}
    assert summary["catalog"]["source"] == "live"
    assert summary["catalog"]["location"] == srv.base_url
    assert ledger["tasks_created"] == 6
    assert ledger["credits"]["acct_default"]["charged"] == 12  # 2 credits each, as served
    out = read_output(tmp_path / "out" / "results.csv")
    assert set(out["model"]) == {"flux-new"} and set(out["final_credits"]) == {"2"}
    assert shown.returncode == 0, shown.stderr
    assert "style (select); one of photo, sketch; default photo" in shown.stdout
    assert "credits: 2 per task" in shown.stdout


def test_a_price_raised_on_the_server_warns_holds_the_cap_and_reprices_estimates(
    tmp_path: Path,
) -> None:
    job = simple_job(tmp_path, product_rows(10, models=["qwen-image"]))
    with SimThread(SimConfig(**FAST)) as srv:
        code, est, _ = estimate_json(job, srv)  # fetches the catalog: qwen-image costs 4
        assert est["credits"] == 40 and est["catalog"]["source"] == "live"
        srv.server.set_catalog(catalog_with(prices={"qwen-image": 6}))
        # The cache is fresh: no request; the catalog says 40 credits, within the cap.
        code, summary, stderr = run_json(job, srv, "--max-credits", "40")
        ledger = srv.snapshot()
        assert models_requests(srv) == 1
        code2, est2, _ = estimate_json(job, srv)
    assert summary["catalog"]["source"] == "cache"
    lines = [w for w in warnings(stderr) if "qwen-image" in w]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(
        "Warning: qwen-image: the service reserved 6 credits per task, the catalog says 4 "
        f"(cached catalog of {srv.base_url} (fetched "
    )
    assert lines[0].endswith("): the rest of the run uses 6")
    book = ledger["credits"]["acct_default"]
    # At the server's 6 credits, 6 tasks fit in 40; a 7th would pass the cap.
    assert ledger["tasks_created"] == 6 and book["reserved"] == 36 <= 40
    assert code == 3 and summary["outcome"] == "budget_reached"
    assert summary["by_status"] == {"blocked": 4, "succeeded": 6}
    assert summary["price_changes"][0]["server_credits"] == 6
    out = read_output(tmp_path / "out" / "results.csv")
    assert set(out.loc[out["status"] == "succeeded", "reserved_credits"]) == {"6"}
    # The next estimate prices the 4 rows left at the server's figure, and says why.
    assert est2["credits"] == 24 and est2["credits_by_model"] == {"qwen-image": 24}
    assert [c["model"] for c in est2["price_changes"]] == ["qwen-image"]
    assert est2["price_changes"][0]["catalog_credits"] == 4
    assert code2 == 0


def test_without_a_cap_the_run_switches_to_the_server_price(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(8, models=["qwen2-image"]), max_tasks_in_flight=4)
    with SimThread(SimConfig(**FAST), catalog=catalog_with(prices={"qwen2-image": 9})) as srv:
        pinned = tmp_path / "old.json"
        pinned.write_text(json.dumps(Catalog.default().to_api()), encoding="utf-8")
        code, summary, stderr = run_json(job, srv, "--catalog", str(pinned))
        ledger = srv.snapshot()
    assert code == 0, stderr
    assert models_requests(srv) == 0  # a pinned catalog is never fetched
    assert summary["catalog"]["source"] == "file"
    lines = [w for w in warnings(stderr) if "qwen2-image" in w]
    assert len(lines) == 1 and f"catalog file {pinned}" in lines[0]
    assert summary["credits_reserved"] == summary["credits_charged"] == 72
    assert ledger["credits"]["acct_default"]["charged"] == 72


def test_offline_runs_use_the_cache_then_the_shipped_copy_and_say_so(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(4))
    with SimThread(SimConfig(**FAST), catalog=catalog_with(prices={"qwen-image": 5})) as srv:
        code, summary, _ = run_json(job, srv)
        base_url = srv.base_url
        gone = type("Gone", (), {"base_url": srv.base_url, "api_key": srv.api_key})()
    assert code == 0 and summary["catalog"]["source"] == "live"
    # The service is gone (nothing listens there now); the cache is too old to trust unasked.
    proc = cli("run", str(job), "--json", "--catalog-max-age", "0", srv=gone)
    again = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert again["catalog"]["source"] == "cache" and again["outcome"] == "completed"
    lines = warnings(proc.stderr)
    assert len(lines) == 1 and "could not fetch the model catalog" in lines[0]
    assert "using the cached catalog of " + base_url in lines[0]
    est = cli("estimate", str(job), "--json", "--catalog-max-age", "0", srv=gone)
    assert json.loads(est.stdout)["catalog"]["source"] == "cache"
    shutil.rmtree(tmp_path / "cache")
    proc = cli("run", str(job), "--json", srv=gone)
    assert json.loads(proc.stdout)["catalog"]["source"] == "shipped"
    lines = warnings(proc.stderr)
    assert len(lines) == 1 and lines[0].endswith(
        "using the shipped catalog (the copy in this batchgen)"
    )
    est = cli("estimate", str(job), "--no-fetch", srv=gone)
    assert "  catalog: shipped catalog (the copy in this batchgen)" in est.stdout.splitlines()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, b"<html>maintenance</html>", "malformed (not JSON)"),
        (200, b'{"object": "list", "data": "soon"}', "malformed (not a model list"),
        (200, b'{"object": "list", "data": [{"name": "x"}]}', "malformed (no model entry"),
        (503, b'{"error": {"code": "public_api_disabled", "message": "off"}}', "could not fetch"),
    ],
)
def test_a_bad_models_answer_falls_back_with_one_warning_line(
    tmp_path: Path, status: int, body: bytes, reason: str
) -> None:
    job = simple_job(tmp_path, product_rows(3))
    with SimThread(SimConfig(**FAST)) as srv:
        srv.sim.set_models_fault(status, body)
        code, summary, stderr = run_json(job, srv)
        ledger = srv.snapshot()
    assert code == 0 and summary["by_status"] == {"succeeded": 3}
    assert summary["catalog"]["source"] == "shipped"
    lines = warnings(stderr)
    assert len(lines) == 1 and reason in lines[0], stderr
    assert ledger["requests"]["GET /api/v1/models"] == 1  # one request, never retried


def test_a_stale_cache_is_revalidated_with_a_conditional_get(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(2, models=["qwen-image"]))
    with SimThread(SimConfig(**FAST)) as srv:
        first = cli("estimate", str(job), "--json", srv=srv)
        again = cli("estimate", str(job), "--json", "--catalog-max-age", "0", srv=srv)
        assert models_requests(srv) == 2
        srv.server.set_catalog(catalog_with(prices={"qwen-image": 7}))
        changed = cli("estimate", str(job), "--json", "--catalog-max-age", "0", srv=srv)
        statuses = srv.snapshot()
    (entry,) = (tmp_path / "cache" / "batchgen").glob("models-*.json")
    cached = json.loads(entry.read_text(encoding="utf-8"))
    assert cached["etag"] and cached["base_url"] == srv.base_url
    assert json.loads(first.stdout)["credits"] == 8
    second = json.loads(again.stdout)
    assert second["catalog"]["source"] == "live" and second["credits"] == 8
    assert json.loads(changed.stdout)["credits"] == 14
    assert statuses["responses"].get("304", 0) == 1, statuses["responses"]
    assert not warnings(first.stderr + again.stderr + changed.stderr)


def test_models_lists_every_model_and_one_in_full(tmp_path: Path) -> None:
    with SimThread(SimConfig(**FAST), catalog=catalog_with(add=[NEW_MODEL])) as srv:
        table = cli("models", srv=srv)
        one = cli("models", "qwen2-image", "--json", srv=srv)
        refreshed = cli("models", "--json", "--refresh", srv=srv)
        assert models_requests(srv) == 2  # the second listing used the fresh cache
        unknown = cli("models", "qwen3-image", srv=srv)
    assert table.returncode == 0, table.stderr
    ids = [line.split()[0] for line in table.stdout.splitlines()[1:] if line.strip()][:9]
    assert ids[:2] == ["qwen-image", "qwen2-image"] and "flux-new" in ids
    assert f"catalog: live catalog from {srv.base_url} (fetched " in table.stdout
    (model,) = json.loads(one.stdout)["models"]
    assert (model["id"], model["credits"], model["billing"], model["max_prompt_length"]) == (
        "qwen2-image",
        6,
        "FIXED",
        800,
    )
    seed = next(p for p in model["params"] if p["key"] == "seed")
    assert seed["type"] == "integer" and seed["minimum"] == 0 and seed["checked"] is True
    size = next(p for p in model["params"] if p["key"] == "image_size")
    assert size["options"] == ["1:1", "3:4", "4:3", "9:16", "16:9"] and size["default"] == "16:9"
    assert model["references"] == {
        "max_files": 1,
        "kinds": ["image"],
        "mime_types": ["image/jpeg", "image/png", "image/webp"],
        "max_bytes": 10_000_000,
    }
    assert json.loads(refreshed.stdout)["catalog"]["source"] == "live"
    assert unknown.returncode == 2
    assert "unknown model 'qwen3-image'" in unknown.stderr and "qwen2-image" in unknown.stderr


def test_the_simulator_serves_and_enforces_a_catalog_file(tmp_path: Path) -> None:
    payload = catalog_with(add=[NEW_MODEL]).to_api()
    payload["data"] = [m for m in payload["data"] if m["id"] != "qwen-image"]  # dropped
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    rows = [
        {"id": "a", "prompt": "a lamp", "model": "flux-new", "style": "sketch"},
        {"id": "b", "prompt": "a lamp", "model": "qwen2-image", "style": ""},
    ]
    job = write_job(
        tmp_path,
        {
            "manifest": {"path": "manifest.csv", "model_column": "model"},
            "generation": {"model": "qwen2-image"},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    with subprocess.Popen(
        [sys.executable, "-m", "batchgen", "sim", "--port", "0", "--catalog", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=cli_env(),
    ) as proc:
        try:
            assert proc.stdout is not None
            base_url = proc.stdout.readline().strip().split(": ", 1)[1]
            api_key = proc.stdout.readline().strip().split(": ", 1)[1]
            srv = type("Srv", (), {"base_url": base_url, "api_key": api_key})()
            code, summary, stderr = run_json(job, srv)
            gone = cli("models", "qwen-image", "--refresh", srv=srv)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert code == 0, stderr
    assert summary["by_status"] == {"succeeded": 2}
    assert gone.returncode == 2 and "unknown model 'qwen-image'" in gone.stderr
    bad = cli("sim", "--catalog", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "--catalog" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("ratio", "status"), [("16:9", "succeeded"), ("21:9", "failed")])
def test_params_the_docs_do_not_state_are_sent_and_the_service_decides(
    tmp_path: Path, ratio: str, status: str
) -> None:
    # The service knows nano-banana's params; the shipped copy does not, and pins the client.
    strict = Catalog.default().to_api()
    for entry in strict["data"]:
        entry.pop("params_unknown", None)
        if entry["id"] == "nano-banana":
            entry["params"] = [{"key": "aspectRatio", "type": "select", "options": ["1:1", "16:9"]}]
    shipped = Path(__file__).resolve().parent.parent / "batchgen" / "data" / "models.json"
    pd.DataFrame([{"id": "a", "prompt": "a lamp"}]).to_csv(tmp_path / "m.csv", index=False)
    job = write_job(
        tmp_path,
        {
            "manifest": {"path": "m.csv"},
            "generation": {
                "model": "nano-banana",
                "params_by_model": {"nano-banana": {"aspectRatio": ratio}},
            },
            "api": {"catalog": str(shipped)},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )
    with SimThread(SimConfig(**FAST), catalog=Catalog.from_api(strict)) as srv:
        code, est, _ = estimate_json(job, srv)
        assert code == 0 and est["decisions"] == {"would_submit": 1}  # not refused offline
        code, summary, stderr = run_json(job, srv)
        ledger = srv.snapshot()
    assert summary["by_status"] == {status: 1}, stderr
    assert code == (0 if status == "succeeded" else 1)
    out = read_output(tmp_path / "out" / "job" / "results.csv")
    if status == "failed":
        assert (
            out["error_code"][0] == "validation_failed" and "aspectRatio" in out["error_message"][0]
        )
        assert ledger["tasks_created"] == 0
    else:
        assert ledger["tasks_created"] == 1
