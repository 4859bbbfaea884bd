"""Messy inputs through a whole run: URL references, duplicate and blank keys, secrecy."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from jobkit import SAMPLE, cli, product_rows, read_output, run, simple_job
from PIL import Image

from batchgen.progress import Reporter
from batchgen.sim import SimConfig, SimServer, SimThread

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
    assert list(out["status"]) == ["succeeded", "succeeded", "failed", "failed"]
    assert ledger["files_uploaded"] == 1
    assert out.loc["sku-00003", "error_code"] == "reference_unavailable"
    assert out.loc["sku-00003", "error_field"] == "photo"
    assert "404" in out.loc["sku-00003", "error_message"]
    assert out.loc["sku-00004", "error_field"] == "photo"
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
