"""Reference images are checked as the service sees them: decoded, not only sniffed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jobkit import cli, product_rows, read_output, run, settings_for, simple_job
from PIL import Image

from batchgen.errors import TooLargeError, ValidationFailedError
from batchgen.job.catalog import Catalog, ReferenceInfo
from batchgen.job.filetypes import image_problem
from batchgen.job.manifest import Manifest
from batchgen.pipeline.remote import fetched_violations, from_error
from batchgen.pipeline.scan import make_planner
from batchgen.rivya.client import RivyaClient
from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store import journal as J

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}


def image(fmt: str, size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def corrupt_png() -> bytes:
    data = bytearray(image("PNG"))
    middle = len(data) // 2
    data[middle : middle + 32] = bytes(b ^ 0x5A for b in data[middle : middle + 32])
    return bytes(data)


def bomb_png() -> bytes:
    """A 48 KB PNG of 20000 x 20000 pixels: its signature and size are fine."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    return buf.getvalue()


def broken_files(folder: Path) -> dict[str, bytes]:
    files = {
        "good.png": image("PNG"),
        "truncated.jpg": image("JPEG")[:-600],
        "corrupt.png": corrupt_png(),
        "bomb.png": bomb_png(),
    }
    (folder / "photos").mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / "photos" / name).write_bytes(data)
    return files


@pytest.mark.parametrize(
    ("data", "mime", "rule"),
    [
        (image("JPEG")[:-600], "image/jpeg", "truncated"),
        (image("PNG")[:-200], "image/png", "truncated"),
        (image("WEBP")[:-300], "image/webp", "corrupt_image"),
        (corrupt_png(), "image/png", "corrupt_image"),
        (bomb_png(), "image/png", "too_many_pixels"),
    ],
)
def test_image_problem_names_the_rule(data: bytes, mime: str, rule: str) -> None:
    found = image_problem(data, mime)
    assert found is not None and found[0] == rule


def test_image_problem_accepts_whole_images_and_ignores_other_kinds() -> None:
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        assert image_problem(image(fmt), mime) is None
    assert image_problem(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40, "video/mp4") is None


def test_catalog_turns_damage_into_a_violation() -> None:
    cat = Catalog.default()
    damage = ("truncated", "the JPEG data ends early: the file is truncated")
    info = ReferenceInfo("image", "image/jpeg", 1000, "shoe.jpg", damage)
    found = cat.validate_file("image", info, "qwen-image")
    assert [(v.field, v.rule) for v in found] == [("file", "truncated")]
    refs = cat.validate("qwen-image", "a shoe", {}, [info])
    assert [v.rule for v in refs] == ["truncated"] and "'shoe.jpg'" in refs[0].message


async def test_broken_images_are_invalid_rows_offline(tmp_path: Path) -> None:
    broken_files(tmp_path)
    rows = product_rows(5, models=["qwen2-image"])
    for row, name in zip(
        rows, ["good.png", "truncated.jpg", "corrupt.png", "bomb.png"], strict=False
    ):
        row["photo"] = f"photos/{name}"
    job = simple_job(tmp_path, rows)
    est = cli("estimate", str(job), "--json")
    async with SimServer(SimConfig(**FAST)) as srv:
        result = await run(job, srv)
        ledger = srv.sim.ledger.snapshot()
    out = read_output(tmp_path / "out" / "results.csv").set_index("id")
    assert result.exit_code == 1
    assert list(out["status"]) == ["succeeded", "invalid", "invalid", "invalid", "succeeded"]
    assert ledger["files_uploaded"] == 1 and ledger["tasks_created"] == 2
    for key, rule, name in [
        ("sku-00002", "truncated", "truncated.jpg"),
        ("sku-00003", "corrupt_image", "corrupt.png"),
        ("sku-00004", "too_many_pixels", "bomb.png"),
    ]:
        message = out.loc[key, "error_message"]
        assert out.loc[key, "error_field"] == "photo", message
        assert f"({rule})" in message and name in message and "column 'photo'" in message
    figures = json.loads(est.stdout)
    assert figures["decisions"] == {"invalid": 3, "would_submit": 2}
    assert figures["credits"] == ledger["credits"]["acct_default"]["charged"] == 12


async def test_each_unique_image_is_decoded_once(tmp_path: Path) -> None:
    files = broken_files(tmp_path)
    (tmp_path / "photos" / "copy.png").write_bytes(files["good.png"])  # same bytes, other path
    rows = product_rows(40, models=["qwen-image"])
    for i, row in enumerate(rows):
        row["photo"] = ["photos/good.png", "photos/copy.png", "photos/truncated.jpg"][i % 3]
    job = simple_job(tmp_path, rows)
    async with SimServer(SimConfig(**FAST)) as srv:
        settings = settings_for(job, srv)
        catalog = Catalog.default()

        def decodes() -> int:
            journal = J.Journal(settings.journal) if settings.journal.exists() else None
            manifest = Manifest.open(settings, catalog)
            planner = make_planner(settings, catalog, manifest, journal, fast=False)
            for batch in manifest.iter_raw_batches():
                planner.plan_batch(batch)
            planner.close()
            if journal is not None:
                journal.close()
            return planner.refs.decoded

        assert decodes() == 2  # good.png and copy.png are one file by content
        await run(job, srv)
        # The service took good.png's bytes (the journal's upload cache): only the broken one
        # is decoded again.
        assert decodes() == 1


async def test_the_simulated_files_api_refuses_what_preflight_refuses(tmp_path: Path) -> None:
    async with (
        SimServer(SimConfig(**FAST)) as srv,
        RivyaClient(srv.base_url, srv.api_key) as client,
    ):
        ok = await client.upload_file(
            image("PNG"), filename="a.png", kind="image", mime_type="image/png", model="qwen-image"
        )
        assert ok.id
        for data, name, rule in [
            (image("JPEG")[:-600], "t.jpg", "truncated"),
            (corrupt_png(), "c.png", "corrupt_image"),
            (bomb_png(), "b.png", "too_many_pixels"),
        ]:
            mime = "image/jpeg" if name.endswith("jpg") else "image/png"
            with pytest.raises(ValidationFailedError) as caught:
                await client.upload_file(data, filename=name, kind="image", mime_type=mime)
            assert caught.value.status == 400 and f"({rule})" in caught.value.message
        ledger = srv.sim.ledger.snapshot()
    assert ledger["files_uploaded"] == 1


# --------------------------------------------------------------------------- URL references

NOT_FOUND_PAGE = "<html><head><title>404</title></head><body><h1>Not Found</h1></body></html>"


class MediaHost:
    """An aiohttp media server on 127.0.0.1 in a thread of its own (the CLI runs in a child
    process meanwhile): /good.png and /corrupt.jpg with an ETag (a conditional GET gets 304),
    /page.html an HTML page, anything else a 404 HTML page. It counts what it answered."""

    def __init__(self) -> None:
        self.files = {
            "/good.png": (image("PNG"), "image/png"),
            "/corrupt.jpg": (image("JPEG")[:-600], "image/jpeg"),
        }
        self.answers: list[tuple[str, int]] = []  # (path, status), in order
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        if path in self.files:
            data, ctype = self.files[path]
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            if request.headers.get("If-None-Match") == etag:
                resp = web.Response(status=304, headers={"ETag": etag})
            else:
                resp = web.Response(body=data, content_type=ctype, headers={"ETag": etag})
        elif path == "/page.html":
            resp = web.Response(
                text="<html><body>a shop page</body></html>", content_type="text/html"
            )
        else:
            resp = web.Response(status=404, text=NOT_FOUND_PAGE, content_type="text/html")
        with self.lock:
            self.answers.append((path, resp.status))
        return resp

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def taken(self) -> list[tuple[str, int]]:
        """The answers since the last call."""
        with self.lock:
            answers, self.answers = self.answers, []
        return answers

    def __enter__(self) -> MediaHost:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_estimate_fetches_url_references_like_the_run(tmp_path: Path) -> None:
    with MediaHost() as host, SimThread(SimConfig(**FAST)) as srv:
        rows = product_rows(6, models=["qwen2-image"])
        for row, path in zip(
            rows,
            ["/good.png", "/missing.png", "/page.html", "/corrupt.jpg", "/good.png"],
            strict=False,
        ):
            row["photo"] = host.url(path)
        job = simple_job(tmp_path, rows)

        first = cli("estimate", str(job), "--json", srv=srv)
        est = json.loads(first.stdout)
        fetched = host.taken()
        again = json.loads(cli("estimate", str(job), "--json", srv=srv).stdout)
        revalidated = host.taken()
        unchecked = cli("estimate", str(job), "--no-fetch", srv=srv)
        ledger_before_run = srv.snapshot()
        assert host.taken() == []  # --no-fetch: not one request

        proc = cli("run", str(job), srv=srv)
        ledger = srv.snapshot()

    # The estimate found the three bad references and priced the two good rows only ...
    assert first.returncode == 1, first.stderr
    assert est["decisions"] == {"invalid": 3, "would_submit": 3}
    assert est["credits"] == 18
    assert sorted(fetched) == [
        ("/corrupt.jpg", 200),
        ("/good.png", 200),
        ("/missing.png", 404),
        ("/page.html", 200),
    ]
    # ... its second run downloaded nothing that had not changed (conditional GETs: 304) ...
    assert sorted(revalidated) == [
        ("/corrupt.jpg", 304),
        ("/good.png", 304),
        ("/missing.png", 404),
        ("/page.html", 200),
    ]
    assert again["remote_not_modified"] == 2 and again["decisions"] == est["decisions"]
    # ... and neither estimate sent anything but the balance reads to the API (and the first,
    # the public catalog's GET, which the next ones found fresh in the cache).
    assert ledger_before_run["requests"] == {"GET /api/v1/models": 1, "GET /api/v1/credits": 3}
    assert ledger_before_run["files_uploaded"] == ledger_before_run["tasks_created"] == 0

    # Without fetching, every row is priced and the table says the total is unverified.
    assert "(unverified)" in unchecked.stdout and "--no-fetch" in unchecked.stdout
    assert "36  (unverified)" in unchecked.stdout.split("total", 1)[1].splitlines()[0]

    # The run agrees: the same rows invalid, the same credits charged.
    assert proc.returncode == 1, proc.stderr
    out = read_output(tmp_path / "out" / "results.csv")
    assert (out["status"] == "invalid").sum() == est["decisions"]["invalid"]
    assert ledger["credits"]["acct_default"]["charged"] == est["credits"]
    # One line per failed fetch on stderr: row number, column, HTTP status, and no page.
    lines = [line for line in proc.stderr.splitlines() if "invalid: row" in line]
    assert len(lines) == 3, proc.stderr
    for number, status in ((2, "HTTP 404"), (3, "HTTP 200"), (4, "HTTP 200")):
        [line] = [x for x in lines if f"row {number}:" in x]
        assert "column 'photo'" in line and status in line
    assert "<html" not in proc.stderr and "Not Found" not in proc.stderr


async def test_url_fetch_is_capped_and_revalidated() -> None:
    data = image("PNG")
    etag = '"v1"'

    async def photo(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=data, content_type="image/png", headers={"ETag": etag})

    app = web.Application()
    app.router.add_get("/p.png", photo)
    host = TestServer(app, host="127.0.0.1")
    await host.start_server()
    url = str(host.make_url("/p.png"))
    try:
        async with RivyaClient("http://127.0.0.1:9", None) as client:
            first = await client.fetch_media(url, max_bytes=len(data))
            again = await client.fetch_media(url, max_bytes=len(data), etag=first.etag)
            with pytest.raises(TooLargeError) as caught:
                await client.fetch_media(url, max_bytes=len(data) - 1)
    finally:
        await host.close()
    assert first.status == 200 and first.body == data and first.etag == etag
    assert again.not_modified and again.body == b""
    found = from_error(url, caught.value)
    problems = fetched_violations(Catalog.default(), "qwen-image", "photo", found)
    assert [(v.field, v.rule) for v in problems] == [("photo", "max_bytes")]
    assert f"limit of {len(data) - 1} bytes" in problems[0].message
