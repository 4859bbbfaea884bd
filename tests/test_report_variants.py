"""The report groups a product's variants in one card, with filters by style, aspect and
candidate, checked in Debian's chromium driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from jobkit import SAMPLE, cli, write_job
from test_report import chromium

from batchgen.sim import SimConfig, SimThread

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}


@pytest.fixture
def page() -> Iterator[Any]:
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


def variant_report(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE / "photos", tmp_path / "photos")
    rows = [
        {"sku": "M1", "title": "blue mug", "model": "qwen-image", "photo": "photos/mug.png"},
        {"sku": "S2", "title": "red sneaker", "model": "qwen2-image", "photo": ""},
        {"sku": "L3", "title": "", "model": "qwen2-image", "photo": ""},  # blank: invalid
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    job = write_job(
        tmp_path,
        {
            "job": {"id": "report-variants"},
            "manifest": {
                "path": "m.csv",
                "id_column": "sku",
                "model_column": "model",
                "reference_column": "photo",
            },
            "generation": {"model": "qwen-image"},
            "variants": {
                "aspect": ["1:1", "16:9"],
                "candidates": 2,
                "styles": {"white": "{title} on white", "kitchen": "{title} in a kitchen"},
            },
            "output": {"path": "out/results.csv", "download_dir": "img"},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )
    with SimThread(SimConfig(**FAST)) as srv:
        ran = cli("run", str(job), "-q", srv=srv)
        assert ran.returncode == 1, ran.stderr  # L3's tasks are invalid
        made = cli("report", str(job), "--out", str(tmp_path / "report.html"), srv=srv)
    assert made.returncode == 0, made.stderr
    assert "24 rows" in made.stderr  # 3 products x 8 variants: one entry per task
    return tmp_path / "report.html"


def strip_of(page: Any, key: str) -> list[str]:
    card = page.locator(f'article.card[data-key="{key}"]')
    return [
        str(v)
        for v in card.locator(".strip figure").evaluate_all("fs => fs.map(f => f.dataset.variant)")
    ]


def test_report_groups_variants_per_product_and_filters_them(tmp_path: Path, page: Any) -> None:
    report = variant_report(tmp_path)
    page.goto(report.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    # One card per product: its reference beside a strip of its eight results.
    assert page.locator("article.card").count() == 3
    assert page.locator("article.card.group").count() == 3
    assert strip_of(page, "M1") == [
        f"{s}/{a}/c{c}" for s in ("white", "kitchen") for a in ("1:1", "16:9") for c in (1, 2)
    ]
    mug = page.locator('article.card[data-key="M1"]')
    assert mug.locator(".pair > figure img").first.get_attribute("alt") == "reference"
    assert mug.locator(".strip figure img").count() == 8  # every result has a thumbnail
    assert page.locator('article.card[data-key="L3"]').get_attribute("class") == (
        "card invalid group"
    )
    assert page.locator('article.card[data-key="L3"] .strip figure img').count() == 0
    # The variant filters appear, and select tasks within each card.
    assert page.locator("#f-style").is_visible()
    page.select_option("#f-style", "kitchen")
    assert strip_of(page, "S2") == [
        "kitchen/1:1/c1",
        "kitchen/1:1/c2",
        "kitchen/16:9/c1",
        "kitchen/16:9/c2",
    ]
    page.select_option("#f-aspect", "16:9")
    page.select_option("#f-candidate", "2")
    assert strip_of(page, "M1") == ["kitchen/16:9/c2"]
    assert strip_of(page, "S2") == ["kitchen/16:9/c2"]
    assert page.url.endswith("#style=kitchen&aspect=16%3A9&candidate=2")
    # Status applies to tasks: the invalid product alone remains.
    page.select_option("#f-candidate", "")
    page.select_option("#f-status", "invalid")
    assert page.locator("article.card").count() == 1
    assert strip_of(page, "L3") == ["kitchen/16:9/c1", "kitchen/16:9/c2"]


def test_report_variant_filters_from_the_address(tmp_path: Path, page: Any) -> None:
    report = variant_report(tmp_path)
    page.goto(report.resolve().as_uri() + "#aspect=1:1&candidate=1&status=succeeded")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("article.card").count() == 2
    assert strip_of(page, "M1") == ["white/1:1/c1", "kitchen/1:1/c1"]
    page.goto(report.resolve().as_uri() + "#style=no-such-style")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("article.card").count() == 0
    assert "No rows match the filters: style no-such-style." in page.content()
