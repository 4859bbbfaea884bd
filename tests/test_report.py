"""``batchgen report``: content, offline-ness, and rendering in a real headless browser."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jobkit import cli, copy_sample, product_rows, run, settings_for, simple_job
from PIL import Image

from batchgen.job.settings import resolve_settings
from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.store import journal as J
from batchgen.views.report import collect_summary, write_report

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 3}
OK_GREEN = (0x1B, 0x7F, 0x4B)
HOSTILE_KEY = '<img src=x onerror="document.title=1">'


def chromium() -> str:
    """The browser, or skip (outside CI only) with the reason."""
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI is set: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI is not set")
    return path


def browse(
    page: Path, tmp: Path, *args: str, fragment: str = ""
) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--window-size=1280,1600",
        "--virtual-time-budget=3000",
        *args,
        page.resolve().as_uri() + fragment,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def cards_in(dom: str) -> list[str]:
    return re.findall(r'<article class="card (\w+)"', dom)


def assert_offline(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", text)
    assert "@import" not in text and "url(" not in text


async def test_sample_report_summary_and_cards(tmp_path: Path) -> None:
    job = copy_sample(tmp_path)
    async with SimServer(SimConfig(**FAST)) as srv:
        await run(job, srv)  # the sample job downloads into out/sample/images
        settings = settings_for(job, srv)
        stats = await write_report(settings, tmp_path / "report.html")
    with J.Journal(settings.journal, readonly=True) as journal:
        summary = collect_summary(journal, int(journal.last_scan_run() or 0))
    assert summary["by_status"] == {"invalid": 2, "succeeded": 18}
    assert sum(m["charged"] for m in summary["by_model"]) == 88
    assert summary["errors"] == {"invalid_input": 2}
    assert summary["downloads"]["downloaded"] == 18
    assert summary["runs"][0]["outcome"] == "completed"
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert_offline(text)
    assert stats.rows == 20 and stats.fetched == 0  # every result came from disk
    # 18 results + 4 distinct reference photos; the broken photo and rows without one: placeholders
    assert stats.thumbs == 22
    assert text.count('"s":"succeeded"') == 18 and text.count('"s":"invalid"') == 2
    assert "reference missing or unreadable" in text and "no reference" in text


async def test_results_not_downloaded_are_fetched_or_shown_as_placeholders(tmp_path: Path) -> None:
    rows = product_rows(4)
    rows[0]["id"] = HOSTILE_KEY
    rows[1]["prompt"] = "a </script><script>alert(1)</script> lamp"
    job = simple_job(tmp_path, rows)
    async with SimServer(SimConfig(**FAST)) as srv:
        await run(job, srv)
        settings = settings_for(job, srv)
        live = await write_report(settings, tmp_path / "live.html")
    gone = await write_report(settings, tmp_path / "gone.html")  # the simulator is closed now
    offline = await write_report(settings, tmp_path / "offline.html", fetch=False)
    assert live.fetched == 4 and live.placeholders == 0
    assert gone.fetched == 0 and gone.placeholders == 4
    assert offline.placeholders == 4
    text = (tmp_path / "gone.html").read_text(encoding="utf-8")
    assert text.count("not downloaded; URL not reachable") == 4
    assert "</script><script>alert" not in text and HOSTILE_KEY not in text
    assert_offline(text)


def synthetic_job(tmp_path: Path, n: int, *, fail: bool = True) -> Path:
    """A job whose journal holds ``n`` rows (a third failed, unless not ``fail``), results on
    disk, no API needed."""
    job = simple_job(tmp_path, product_rows(2))
    settings = resolve_settings(job, {}, {})
    images = tmp_path / "images"
    images.mkdir()
    colours = ["#d1495b", "#edae49", "#00798c", "#30638e", "#66a182"]
    with J.Journal(settings.journal) as journal:
        run_id = journal.start_run(0, "run")
        rows = []
        for i in range(n):
            failed = fail and i % 3 == 2
            path = None
            if not failed:
                path = images / f"r{i}.png"
                buf = io.BytesIO()
                Image.new("RGB", (64, 64), colours[i % len(colours)]).save(buf, "PNG")
                path.write_bytes(buf.getvalue())
            rows.append(
                {
                    "key": HOSTILE_KEY if i == 0 else f"sku-{i:05d}",
                    "row_index": i,
                    "row_number": i + 1,
                    "seen_run": run_id,
                    "model": "qwen-image" if i % 2 else "qwen2-image",
                    "prompt": f"studio photo of product {i}",
                    "state": J.FAILED if failed else J.SUCCEEDED,
                    "task_id": f"task_{i:08d}",
                    "final_credits": 0 if failed else 4,
                    "error_code": "generation_failed" if failed else None,
                    "error_message": "the generation failed" if failed else None,
                    "download_path": str(path) if path else None,
                }
            )
        journal.upsert_rows(rows)
        journal.set_meta("last_scan_run", str(run_id))
        journal.finish_run(run_id, "completed", 1, {"wall_seconds": 12.5})
    return job


def test_report_in_a_headless_browser_shows_the_cards(tmp_path: Path) -> None:
    chromium()
    job = copy_sample(tmp_path)
    with SimThread(SimConfig(**FAST)) as srv:
        ran = cli("run", str(job), "-q", srv=srv)
        assert ran.returncode == 1, ran.stderr  # two invalid rows in the sample
        made = cli("report", str(job), "--out", str(tmp_path / "report.html"), srv=srv)
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stderr and "20 rows" in made.stderr
    shot = tmp_path / "shot.png"
    proc = browse(tmp_path / "report.html", tmp_path, f"--screenshot={shot}")
    assert shot.exists(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
        gallery = img.convert("RGB").crop((0, 500, 1280, 1600))
    colours = gallery.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200, "the gallery area looks blank"
    background = max(colours)[1]
    busy = sum(n for n, c in colours if c != background)
    assert busy > 0.3 * gallery.width * gallery.height
    green = sum(
        n for n, c in colours if all(abs(a - b) < 12 for a, b in zip(c, OK_GREEN, strict=True))
    )
    assert green > 2000, "no 'succeeded' card borders or badges on screen"
    dom = browse(tmp_path / "report.html", tmp_path, "--dump-dom").stdout
    assert 'data-ready="1"' in dom
    assert sorted(set(cards_in(dom))) == ["invalid", "succeeded"] and len(cards_in(dom)) == 20
    assert dom.count('src="data:image/') == 22


def test_big_report_pages_and_filters_in_the_browser(tmp_path: Path) -> None:
    chromium()
    job = synthetic_job(tmp_path, 450)
    made = cli("report", str(job), "--out", str(tmp_path / "big.html"))
    assert made.returncode == 0, made.stderr
    page = tmp_path / "big.html"
    first = browse(page, tmp_path, "--dump-dom").stdout
    assert len(cards_in(first)) == 200  # one page of cards, not 450
    assert "page 1 of 3" in first
    # The hostile key is shown as text, never as markup.
    assert "&lt;img src=x onerror=" in first and "<img src=x" not in first
    last = browse(page, tmp_path, "--dump-dom", fragment="#page=3").stdout
    assert len(cards_in(last)) == 50
    failed = browse(page, tmp_path, "--dump-dom", fragment="#status=failed").stdout
    assert set(cards_in(failed)) == {"failed"} and len(cards_in(failed)) == 150
    assert "generation_failed" in failed
    model = browse(
        page, tmp_path, "--dump-dom", fragment="#model=qwen-image&status=succeeded"
    ).stdout
    assert len(cards_in(model)) == 150 and set(cards_in(model)) == {"succeeded"}


def test_address_filters_matching_no_row_show_no_card(tmp_path: Path) -> None:
    chromium()
    job = synthetic_job(tmp_path, 12, fail=False)
    made = cli("report", str(job), "--out", str(tmp_path / "ok.html"))
    assert made.returncode == 0, made.stderr
    page = tmp_path / "ok.html"
    every = browse(page, tmp_path, "--dump-dom").stdout
    assert len(cards_in(every)) == 12 and set(cards_in(every)) == {"succeeded"}
    for fragment, described in [
        ("#status=failed", "status failed"),
        ("#model=no-such-model", "model no-such-model"),
        ("#status=succeeded&model=no-such-model", "status succeeded, model no-such-model"),
    ]:
        dom = browse(page, tmp_path, "--dump-dom", fragment=fragment).stdout
        assert 'data-ready="1"' in dom, fragment
        assert cards_in(dom) == [], fragment
        assert f"No rows match the filters: {described}." in dom, fragment
        assert "0 of 12 rows" in dom, fragment
