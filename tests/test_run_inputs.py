"""Messy inputs through a whole run: URL references, duplicate and blank keys, secrecy."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from jobkit import SAMPLE, cli, product_rows, read_output, run, simple_job, write_job
from PIL import Image

from batchgen.pipeline.progress import Reporter
from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store import journal as J

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
async def photo_host() -> AsyncIterator[str]:
    """A media host on 127.0.0.1: /photo.png, /text.png (not an image), anything else 404."""

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=png_bytes(), content_type="image/png")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hello", content_type="image/png")

    app = web.Application()
    app.router.add_get("/photo.png", photo)
    app.router.add_get("/text.png", text)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_url_references_are_fetched_then_uploaded(tmp_path: Path, photo_host: str) -> None:
    rows = product_rows(4, models=["qwen2-image"])
    rows[0]["photo"] = f"{photo_host}/photo.png"
    rows[1]["photo"] = f"{photo_host}/photo.png"  # same bytes: one upload
    rows[2]["photo"] = f"{photo_host}/missing.png"
    rows[3]["photo"] = f"{photo_host}/text.png"
    job = simple_job(tmp_path, rows)
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv").set_index("id")
    assert result.exit_code == 1
    # A URL reference that cannot be fetched or is not an image makes its row invalid (never
    # sent), as an estimate that fetches it says.
    assert list(out["status"]) == ["succeeded", "succeeded", "invalid", "invalid"]
    assert ledger["files_uploaded"] == 1
    assert out.loc["sku-00003", "error_code"] == "invalid_input"
    assert out.loc["sku-00003", "error_field"] == "photo"
    message = out.loc["sku-00003", "error_message"]
    assert "missing.png: HTTP 404" in message and "(reference_unavailable)" in message
    assert out.loc["sku-00004", "error_field"] == "photo"
    assert "(mime)" in out.loc["sku-00004", "error_message"]
    assert ledger["tasks_created"] == 2


async def test_duplicate_and_blank_keys_are_reported_not_merged(tmp_path: Path) -> None:
    rows = product_rows(5)
    rows[3]["id"] = rows[1]["id"]  # duplicate of row 2
    rows[4]["id"] = ""
    job = simple_job(tmp_path, rows)
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv")
    assert result.exit_code == 1
    assert len(out) == 5 and list(out["row_number"]) == ["1", "2", "3", "4", "5"]
    assert list(out["status"]) == ["succeeded", "succeeded", "succeeded", "invalid", "invalid"]
    assert (
        out.loc[3, "error_code"] == "duplicate_key" and rows[1]["id"] in out.loc[3, "error_message"]
    )
    assert out.loc[4, "error_message"] == "column 'id': the row key is blank (required)"
    assert ledger["tasks_created"] == 3


def test_the_key_never_leaves_the_process(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mug.png").write_bytes((SAMPLE / "photos" / "mug.png").read_bytes())
    rows = product_rows(6)
    rows[0]["photo"] = "photos/mug.png"
    rows[1]["model"] = "no-such-model"
    job = simple_job(tmp_path, rows)
    with SimThread(SimConfig(**FAST, failure_rate=0.3, error_rate=0.1)) as srv:
        proc = cli("run", str(job), "--log-format", "json", srv=srv)
        status = cli("status", str(job), "--json")
        key = srv.api_key
    assert proc.returncode == 1
    secret = key.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for text in (proc.stdout, proc.stderr, status.stdout, status.stderr):
        assert key not in text
        assert key[8:] not in text


def test_status_lines_outside_a_terminal() -> None:
    now = [0.0]
    stream = io.StringIO()
    reporter = Reporter(mode="auto", status_interval=10, stream=stream, clock=lambda: now[0])
    reporter.begin(3, 0)
    reporter.emit("submitted", key="a")
    assert stream.getvalue() == ""
    now[0] = 11.0
    reporter.emit("succeeded", key="a", credits=4)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "submitted 1/3" in lines[0] and "ok 1" in lines[0]
    assert "credits 4" in lines[0]


def test_quiet_reporter_prints_nothing() -> None:
    stream = io.StringIO()
    reporter = Reporter(quiet=True, status_interval=0, stream=stream)
    reporter.begin(1, 0)
    reporter.emit("stop", message="x")
    reporter.emit("succeeded", key="a")
    assert stream.getvalue() == ""


# --------------------------------------------------------------------------- manifest edges


async def test_a_line_with_the_wrong_cell_count_is_never_sent(tmp_path: Path) -> None:
    """Blank trailing cells (common in exports) or missing cells make the line invalid: it is
    neither charged nor allowed to take a key. (Read as before, line 3 was charged, and line 4
    was charged under key A3, leaving the real A3 of line 6 a duplicate: 3 tasks, one wrong.)"""
    job = simple_job(tmp_path, [])
    (tmp_path / "manifest.csv").write_text(
        "id,prompt,model\n"
        "A1,a red mug,qwen-image\n"
        "A2,a blue cup,qwen-image,,\n"  # two blank extra cells
        "A3,a lamp\n"  # one cell missing
        "A4,a chair,A3,\n"  # a stray comma: every cell after it shifted right
        "A3,a chair,qwen-image\n"
    )
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv")
    assert result.exit_code == 1
    assert ledger["tasks_created"] == 2
    assert sorted(ledger["tasks_by_client_request_id"]) == ["A1", "A3"]
    assert list(out["status"]) == ["succeeded", "invalid", "invalid", "invalid", "succeeded"]
    assert list(out["id"]) == ["A1", "", "", "", "A3"]
    bad = out[out["status"] == "invalid"]
    assert set(bad["error_field"]) == {"row"} and set(bad["error_code"]) == {"invalid_input"}
    assert [m.split(" has ")[0] for m in bad["error_message"]] == ["line 3", "line 4", "line 5"]
    assert "has 5 cells but the header has 3 columns" in bad["error_message"].iloc[0]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
async def test_errors_name_the_manifests_own_columns(tmp_path: Path, fmt: str) -> None:
    """The id, model and mapped param columns and the template's input, as the manifest names
    them; a blank param cell whose job default is wrong names the job-file key instead."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "sku": ["S1", "S1", "", "S4", "S5", "S6", "S7", "S8"],
            "title": ["mug", "cup", "lamp", "vase", "pot", "bowl", "jar", "tray"],
            "colour": ["red", "blue", "red", "red", "red", "red", "", "red"],
            "engine": ["qwen2-image", "qwen2-image", "qwen2-image", "qwen9", "", "qwen2-image",
                       "qwen2-image", "qwen-image"],
            "size": ["1:1", "", "", "", "", "99:1", "", ""],
        }
    )  # fmt: skip
    manifest = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        frame.to_csv(manifest, index=False)
    elif fmt == "parquet":
        frame.to_parquet(manifest, index=False)
    else:
        frame.to_json(manifest, orient="records", lines=True, force_ascii=False)
    job = write_job(
        tmp_path,
        {
            "job": {"id": "names"},
            "manifest": {
                "path": manifest.name, "id_column": "sku", "model_column": "engine",
                "param_columns": {"image_size": "size"},
            },
            "generation": {
                "template": "{title} in {colour}",
                "params_by_model": {"qwen-image": {"image_size": "huge"}},
            },
            "output": {"path": "out/results.csv"},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )  # fmt: skip
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv")
    assert result.exit_code == 1 and ledger["tasks_created"] == 1
    assert list(out["status"]) == ["succeeded"] + ["invalid"] * 7
    default = 'generation.params_by_model."qwen-image".image_size'
    columns = ["sku", "sku", "engine", "engine", "size", "colour", default]
    assert list(out["error_field"][1:]) == columns
    assert list(out["error_code"][1:]) == ["duplicate_key"] + ["invalid_input"] * 6
    messages = list(out["error_message"][1:])
    for message, column in zip(messages[:-1], columns, strict=False):
        assert message.startswith(f"column '{column}': "), message
    assert "key 'S1' already used" in messages[0] and "key is blank" in messages[1]
    assert "unknown model 'qwen9'" in messages[2] and "blank" in messages[3]
    assert "'99:1' is not one of" in messages[4] and "template uses it" in messages[5]
    assert messages[6].startswith(f"{default} (job default): 'huge' is not one of")


async def test_a_windows_semicolon_export_runs(tmp_path: Path) -> None:
    """European Excel: Windows-1252 bytes, semicolons, CRLF; read with encoding and auto."""
    text = "id;prompt;title\r\nA1;a café mug;Tasse émaillée\r\nA2;a 20€ vase, blue;Vase\r\n"
    rows = product_rows(1)
    job = simple_job(tmp_path, rows)
    (tmp_path / "manifest.csv").write_bytes(text.encode("cp1252"))
    job.write_text(
        job.read_text()
        .replace('model_column = "model"', 'encoding = "cp1252"\ndelimiter = "auto"')
        .replace('path = "manifest.csv"', 'path = "manifest.csv"\npassthrough = ["title"]')
    )
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv")
    assert result.exit_code == 0 and ledger["tasks_created"] == 2
    assert list(out["title"]) == ["Tasse émaillée", "Vase"]
    with J.Journal(tmp_path / "out" / "test-job.journal.sqlite", readonly=True) as journal:
        prompts = {k: r["prompt"] for k, r in journal.get_rows(["A1", "A2"], "key, prompt").items()}
    assert prompts == {"A1": "a café mug", "A2": "a 20€ vase, blue"}


def test_an_undecodable_byte_is_located_exactly(tmp_path: Path) -> None:
    """A cp1252 byte on line 36 of a UTF-8 manifest: its line, byte offset and the fix."""
    lines = ["id,prompt"] + [f"sku-{i},a product photo {i}" for i in range(1, 35)]
    head = ("\r\n".join(lines) + "\r\n").encode()
    data = head + "sku-35,a caf\xe9 au lait mug\r\n".encode("cp1252") + b"sku-36,a lamp\r\n"
    job = simple_job(tmp_path, [])
    (tmp_path / "manifest.csv").write_bytes(data)
    with SimThread(SimConfig(**FAST)) as srv:
        proc = cli("run", str(job), srv=srv)
        ledger = srv.sim.ledger.snapshot()
    assert proc.returncode == 2
    assert ledger["tasks_created"] == 0 and ledger["files_uploaded"] == 0
    error = proc.stderr.strip().splitlines()[-1]
    offset = data.index(b"\xe9")
    assert error.startswith("Error: manifest is not UTF-8 text: byte e9 cannot be decoded")
    assert f"manifest.csv, line 36, byte offset {offset})" in error
    assert 'set manifest.encoding = "cp1252"' in error
    assert "Traceback" not in proc.stderr
