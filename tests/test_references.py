"""Reference images are checked as the service sees them: decoded, not only sniffed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from jobkit import cli, product_rows, read_output, run, settings_for, simple_job
from PIL import Image

from batchgen.catalog import Catalog, ReferenceInfo
from batchgen.client import RivyaClient
from batchgen.errors import ValidationFailedError
from batchgen.filetypes import image_problem
from batchgen.manifest import Manifest
from batchgen.pipeline.runner import make_planner
from batchgen.sim import SimConfig, SimServer

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
            from batchgen import journal as J

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
