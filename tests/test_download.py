"""Result downloads: safe names, faults of the media host, resume and re-runs (real HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from jobkit import cli, product_rows, read_output, run, simple_job
from PIL import Image

from batchgen.pipeline.download import Downloader, check_image, safe_name, write_atomic
from batchgen.rivya.client import RivyaClient
from batchgen.rivya.retry import RetryPolicy
from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store import journal as J
from batchgen.store.output import write_output

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}
QUICK_RETRY = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30), colour: str = "teal") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


# -- names -----------------------------------------------------------------------------------

HOSTILE = [
    "../x",
    "a/b",
    "",
    "x" * 5000,
    "café ☕",
    "日本語キー",
    "..",
    ".hidden",
    "a\\b",
    "a\x00b",
    "/etc/passwd",
    "😀" * 300,
    "CON",
    " ",
]


@pytest.mark.parametrize("key", HOSTILE)
def test_safe_name_stays_in_the_folder(tmp_path: Path, key: str) -> None:
    name = safe_name(key, "png")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and name.endswith(".png")
    assert len(name.encode()) <= 120 and name.isascii()
    path = write_atomic(tmp_path / "images", name, b"data")
    assert path.resolve().parent == (tmp_path / "images").resolve()
    assert path.read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "images").iterdir()] == [name]  # no temporary left


def test_keys_differing_only_in_unsafe_characters_do_not_collide() -> None:
    keys = ["a/b", "a b", "a?b", "a_b", "a\\b", "a:b", "a*b", "A/B", "a/b/", "ä/b", "a\x00b", ""]
    names = [safe_name(k, "png") for k in keys]
    assert len(set(names)) == len(keys)
    assert safe_name("a/b", "png") == safe_name("a/b", "png")  # stable across runs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=2, max_size=2, unique=True))
def test_safe_name_property(keys: list[str]) -> None:
    a, b = (safe_name(k, "jpg") for k in keys)
    assert a != b
    for name in (a, b):
        assert name.isascii() and "/" not in name and not name.startswith(".")
        assert len(name) <= 100


def test_check_image_format_and_truncation() -> None:
    png = image_bytes("PNG")
    assert check_image(png, "PNG") == "PNG"
    assert check_image(image_bytes("JPEG"), None) == "JPEG"
    with pytest.raises(Exception, match="declared PNG but the bytes are JPEG"):
        check_image(image_bytes("JPEG"), "PNG")
    with pytest.raises(Exception, match="not a whole image"):
        check_image(png[: len(png) // 2], "PNG")
    with pytest.raises(Exception, match="empty"):
        check_image(b"", "PNG")


# -- the media host under faults --------------------------------------------------------------


class MediaHost:
    """A tiny media server with fault routes; counts hits and the most requests at once."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.inflight = 0
        self.max_inflight = 0
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{kind}/{name}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    def url(self, kind: str, name: str) -> str:
        return str(self.server.make_url(f"/{kind}/{name}"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind, name = request.match_info["kind"], request.match_info["name"]
        self.hits[f"{kind}/{name}"] += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._answer(request, kind, name)
        finally:
            self.inflight -= 1

    async def _answer(self, request: web.Request, kind: str, name: str) -> web.StreamResponse:
        png = image_bytes("PNG", colour="orange")
        if kind == "ok":
            await asyncio.sleep(0.05)
            return web.Response(body=png, content_type="image/png")
        if kind == "missing":
            return web.Response(status=404, text="gone")
        if kind == "truncated":  # a complete HTTP answer whose body is half an image
            return web.Response(body=png[: len(png) // 2], content_type="image/png")
        if kind == "cut":  # promises the whole length, sends half, hangs up
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            resp.content_length = len(png)
            await resp.prepare(request)
            await resp.write(png[: len(png) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        if kind == "wrongtype":
            return web.Response(body=image_bytes("JPEG"), content_type="image/png")
        if kind == "flaky":  # fails the first time, then works
            if self.hits[f"{kind}/{name}"] == 1:
                return web.Response(body=png[:20], content_type="image/png")
            return web.Response(body=png, content_type="image/png")
        if kind == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5.0)
            return web.Response(body=png, content_type="image/png")
        return web.Response(status=400)


@pytest.fixture
async def media() -> AsyncIterator[MediaHost]:
    host = MediaHost()
    await host.server.start_server()
    try:
        yield host
    finally:
        host.release.set()
        await host.server.close()


def journal_with_rows(path: Path, urls: dict[str, str]) -> J.Journal:
    """A journal whose rows succeeded with the given result URLs (keys -> url)."""
    journal = J.Journal(path)
    run_id = journal.start_run(0, "run")
    journal.upsert_rows(
        {
            "key": key,
            "row_index": i,
            "row_number": i + 1,
            "seen_run": run_id,
            "state": J.SUCCEEDED,
            "task_id": f"task_unknown_{i}",
            "primary_url": url,
            "params": '{"output_format": "png"}',
        }
        for i, (key, url) in enumerate(urls.items())
    )
    journal.set_meta("last_scan_run", str(run_id))
    return journal


async def download_all(journal: J.Journal, folder: Path, sim: Any, **kw: Any) -> Downloader:
    async with RivyaClient(sim.base_url, sim.api_key, retry=QUICK_RETRY) as client:
        dl = Downloader(client, journal, folder, retry_delay=0.01, **kw)
        dl.start()
        try:
            dl.feed(journal.iter_scan(int(journal.last_scan_run() or 0)))
            await dl.drain()
        finally:
            await dl.close()
    return dl


async def test_faults_end_with_the_right_row_states(
    tmp_path: Path, media: MediaHost, sim: Any
) -> None:
    kinds = ["ok", "missing", "truncated", "cut", "wrongtype", "flaky", "slow"]
    urls = {f"k-{kind}": media.url(kind, f"{kind}.png") for kind in kinds}
    journal = journal_with_rows(tmp_path / "j.sqlite", urls)
    with journal:
        dl = await download_all(journal, tmp_path / "img", sim, attempts=3, timeout=0.5)
        rows = {k: dict(journal.get_row(k) or {}) for k in urls}
        n = write_output(journal, tmp_path / "out.csv")
    for key, row in rows.items():
        assert row["state"] == J.SUCCEEDED, key  # a download never changes the row's state
        assert row["primary_url"] == urls[key]  # and the row keeps its URL
    for key in ("k-ok", "k-flaky"):
        path = Path(rows[key]["download_path"])
        data = path.read_bytes()
        assert path.parent == tmp_path / "img" and path.suffix == ".png"
        assert rows[key]["download_bytes"] == len(data)
        assert rows[key]["download_sha256"] == hashlib.sha256(data).hexdigest()
        assert rows[key]["download_error"] is None
    errors = {k: rows[k]["download_error"] for k in rows if k not in ("k-ok", "k-flaky")}
    assert "http_404" in errors["k-missing"]
    assert "not a whole image" in errors["k-truncated"]
    assert errors["k-cut"]
    assert "declared PNG but the bytes are JPEG" in errors["k-wrongtype"]
    assert "timed out" in errors["k-slow"]
    for key in errors:
        assert rows[key]["download_path"] is None and rows[key]["download_bytes"] is None
    # Retried: every failing URL was asked for on each of the 3 attempts.
    assert media.hits["missing/missing.png"] == 3
    assert media.hits["truncated/truncated.png"] == 3
    assert media.hits["flaky/flaky.png"] == 2
    assert media.hits["cut/cut.png"] >= 3  # the client's own retries of a dropped body count too
    assert dl.downloaded == 2 and dl.failed == 5
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted(
        Path(rows[k]["download_path"]).name for k in ("k-ok", "k-flaky")
    )  # no temporary or partial file left behind
    assert n == len(kinds)
    out = read_output(tmp_path / "out.csv")
    assert set(out.loc[out["download_error"] != "", "id"]) == set(errors)


async def test_concurrency_cap_measured(tmp_path: Path, media: MediaHost, sim: Any) -> None:
    urls = {f"sku-{i}": media.url("ok", f"{i}.png") for i in range(15)}
    with journal_with_rows(tmp_path / "j.sqlite", urls) as journal:
        dl = await download_all(journal, tmp_path / "img", sim, concurrency=3)
    assert dl.downloaded == 15
    assert 1 < media.max_inflight <= 3


async def test_expired_url_is_refreshed_from_the_task(tmp_path: Path, media: MediaHost) -> None:
    job = simple_job(tmp_path, product_rows(2))
    async with SimServer(SimConfig(**FAST)) as srv:
        await run(job, srv)
        journal_path = tmp_path / "out" / "test-job.journal.sqlite"
        with J.Journal(journal_path) as journal:
            real = {
                r["key"]: r["primary_url"]
                for r in journal.iter_scan(int(journal.last_scan_run() or 0))
            }
            for key in real:  # as if the signed URL had expired
                journal.update_row(key, primary_url=media.url("missing", f"{key}.png"))
            dl = await download_all(journal, tmp_path / "img", srv)
            rows = [dict(r) for r in journal.iter_scan(int(journal.last_scan_run() or 0))]
    assert dl.downloaded == 2
    for row in rows:
        assert row["primary_url"] == real[row["key"]]  # the fresh URL is committed
        assert Path(row["download_path"]).exists() and row["download_error"] is None


# -- through the runner and the CLI ----------------------------------------------------------


async def test_run_downloads_and_reruns_never_download_twice(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(6))
    folder = tmp_path / "images"
    async with SimServer(SimConfig(**FAST)) as srv:
        first = await run(job, srv, download_dir=str(folder))
        files = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        second = await run(job, srv, download_dir=str(folder))
        again = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        # A crash between success and download: the next run fetches just that one.
        journal_path = tmp_path / "out" / "test-job.journal.sqlite"
        db = sqlite3.connect(journal_path)
        db.execute("UPDATE rows SET download_path = NULL WHERE key = 'sku-00003'")
        db.commit()
        db.close()
        third = await run(job, srv, download_dir=str(folder))
    assert first.summary["downloads"]["this_run"] == 6 and len(files) == 6
    assert second.summary["downloads"] == {
        **second.summary["downloads"],
        "this_run": 0,
        "downloaded": 6,
    }
    assert again == files
    assert third.summary["downloads"]["this_run"] == 1
    out = read_output(tmp_path / "out" / "results.csv")
    for _, row in out.iterrows():
        data = Path(row["download_path"]).read_bytes()
        assert int(row["download_bytes"]) == len(data)
        assert row["download_sha256"] == hashlib.sha256(data).hexdigest()
        assert Image.open(io.BytesIO(data)).format == "PNG"


def test_cli_download_flag(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(3))
    with SimThread(SimConfig(**FAST)) as srv:
        proc = cli("run", str(job), "--download", str(tmp_path / "dl"), srv=srv)
    assert proc.returncode == 0, proc.stderr
    assert "downloads: 3 on disk" in proc.stderr
    assert len(list((tmp_path / "dl").glob("sku-*.png"))) == 3


@pytest.mark.parametrize("log_format", ["human", "json"])
def test_cron_status_lines_show_downloads_while_they_run(tmp_path: Path, log_format: str) -> None:
    """No terminal: a status line every --status-interval, with downloads done/pending/failed.
    Each image takes 0.5 s to serve and one downloads at a time, so ticks every 0.1 s land while
    downloads are queued and under way. In JSON, each line stays a JSON object."""
    job = simple_job(tmp_path, product_rows(3))
    with SimThread(SimConfig(**{**FAST, "media_delay": 0.5})) as srv:
        proc = cli(
            "run",
            str(job),
            "--download-dir",
            str(tmp_path / "dl"),
            "--download-concurrency",
            "1",
            "--status-interval",
            "0.1",
            "--log-format",
            log_format,
            srv=srv,
        )
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr
    if log_format == "json":
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert len(records) == len(log.split("\nbatchgen: completed")[0].splitlines())
        log = "\n".join(r["message"] for r in records if r["event"] == "status")
    pattern = r"^batchgen: .* downloads (\d+) done, (\d+) pending, (\d+) failed$"
    lines = [tuple(map(int, m)) for m in re.findall(pattern, log, re.M)]
    assert lines, proc.stderr
    assert any(pending > 0 for _, pending, _ in lines), lines
    assert any(done > 0 and pending > 0 for done, pending, _ in lines), lines  # mid-way
    done = [d for d, _, _ in lines]
    assert done == sorted(done) and max(done) <= 3
    assert all(failed == 0 for _, _, failed in lines)
    assert "downloads: 3 on disk" in proc.stderr
