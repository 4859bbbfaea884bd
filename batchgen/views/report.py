"""``batchgen report``: one self-contained HTML file to look at a job's results, offline.

It reads the journal read-only (safe while a run is going on) and writes, atomically:

- a summary: rows by status, credits by model, error codes with counts, downloads, task durations
  and the last runs with their timings;
- a gallery of cards, one per manifest row: the reference thumbnail beside the result thumbnail,
  the row key, prompt, model, credits, task id, and the error of a failed or invalid row; filters
  by status and model, and a text search, in inline JavaScript. A row with variants is one card:
  its reference beside a strip of its variants' results, with filters by style, aspect and
  candidate besides.

Thumbnails are small WebP (or JPEG) data URIs made with Pillow: references from the manifest's
local files (relative to its folder), results from the downloaded files, or fetched from the
result URL when the result was not downloaded and the URL still answers; otherwise a placeholder
says why. Cards are streamed into the file in chunks and rendered a page at a time, so a report
of tens of thousands of rows stays usable. Nothing in the page loads anything from outside.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import html
import io
import json
import os
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from PIL import Image, features

from batchgen.errors import BatchgenError, TransportError, UsageError
from batchgen.job.catalog import Catalog
from batchgen.job.references import is_url, resolve_reference
from batchgen.job.settings import Settings
from batchgen.pipeline.download import DEFAULT_MAX_BYTES
from batchgen.rivya.client import RivyaClient
from batchgen.rivya.retry import RetryPolicy
from batchgen.store import journal as J
from batchgen.store.files import replacing
from batchgen.views.report_page import DEFAULT_THUMB, HEAD, PAGE_SIZE, TAIL
from batchgen.views.status import open_journal, running_pid

CHUNK = 250
"""Cards made and written at a time."""
PROMPT_CHARS = 600
FETCH_CONCURRENCY = 8
UNREACHABLE_AFTER = 4
"""Failed fetches in a row from one host (with no success) before its other URLs are skipped."""
_WEBP = features.check("webp")


@dataclass(slots=True)
class ReportStats:
    """What went into a report."""

    rows: int = 0
    thumbs: int = 0
    fetched: int = 0
    placeholders: int = 0
    bytes: int = 0
    seconds: float = 0.0


def thumbnail(source: Path | bytes, px: int = DEFAULT_THUMB) -> str:
    """A ``data:`` URI of a small WebP (JPEG without WebP support) of an image file or bytes.

    Raises OSError (or a Pillow error) when the source cannot be read or decoded.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        img.draft("RGB", (px * 2, px * 2))  # JPEG: decode at a reduced scale, much faster
        img.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=2.0)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
        else:
            flat = img.convert("RGB")
    buf = io.BytesIO()
    if _WEBP:
        flat.save(buf, "WEBP", quality=60, method=2)
        mime = "image/webp"
    else:
        flat.save(buf, "JPEG", quality=70, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _try_thumb(source: Path | bytes, px: int) -> str | None:
    try:
        return thumbnail(source, px)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


# -- summary ---------------------------------------------------------------------------------


def collect_summary(journal: J.Journal, scan: int) -> dict[str, Any]:
    """The report's summary figures, from the journal (JSON-able)."""
    by_model = journal.by_model(scan)
    durations = journal.scan_durations(scan)
    timings = []
    for model, values in sorted(durations.items()):
        values.sort()
        timings.append(
            {
                "model": model,
                "tasks": len(values),
                "median_s": round(statistics.median(values), 2),
                "p90_s": round(values[min(len(values) - 1, int(len(values) * 0.9))], 2),
                "max_s": round(values[-1], 2),
            }
        )
    runs = []
    for r in journal.last_runs(10):
        summary = r["summary"] or {}
        runs.append(
            {
                "id": r["id"],
                "mode": r["mode"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
                "wall_seconds": summary.get("wall_seconds"),
                "outcome": r["outcome"],
                "exit_code": r["exit_code"],
            }
        )
    totals = journal.totals(scan)
    errors = dict(totals.errors)
    if totals.downloads["failed"]:
        errors["download_error"] = totals.downloads["failed"]
    return {
        "by_status": dict(sorted(totals.by_state.items())),
        "credits": {"reserved": totals.reserved, "charged": totals.charged},
        "by_model": by_model,
        "errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "downloads": totals.downloads,
        "task_seconds": timings,
        "runs": runs,
    }


def _table(head: list[str], rows: list[list[Any]], nums: frozenset[int] = frozenset()) -> str:
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="num"' if i in nums else ""
        return f"<{tag}{cls}>{html.escape('' if v is None else str(v))}</{tag}>"

    out = ["<table><tr>", *(cell("th", i, h) for i, h in enumerate(head)), "</tr>"]
    for row in rows or [["none", *([""] * (len(head) - 1))]]:
        out += ["<tr>", *(cell("td", i, v) for i, v in enumerate(row)), "</tr>"]
    out.append("</table>")
    return "".join(out)


def summary_html(s: dict[str, Any]) -> str:
    """The summary part of the page (every value escaped)."""
    by_status = s["by_status"]
    total = sum(by_status.values())
    tiles = [("rows", total)] + [(k, v) for k, v in by_status.items()]
    tiles += [("credits charged", s["credits"]["charged"])]
    if s["downloads"]["downloaded"] or s["downloads"]["failed"]:
        tiles += [("downloaded", s["downloads"]["downloaded"])]
    tile_html = "".join(
        f'<div class="tile"><b>{html.escape(str(v))}</b><span>{html.escape(k)}</span></div>'
        for k, v in tiles
    )
    panels = [
        (
            "Rows by status",
            _table(["status", "rows"], [[k, v] for k, v in by_status.items()], frozenset({1})),
        ),
        (
            "Credits by model",
            _table(
                ["model", "rows", "succeeded", "credits"],
                [
                    [m["model"] or "(none)", m["rows"], m["succeeded"], m["charged"]]
                    for m in s["by_model"]
                ],
                frozenset({1, 2, 3}),
            ),
        ),
        (
            "Errors",
            _table(["code", "rows"], [[k, v] for k, v in s["errors"].items()], frozenset({1})),
        ),
        (
            "Run timings",
            _table(
                ["run", "started (UTC)", "seconds", "outcome", "exit"],
                [
                    [
                        r["id"],
                        (r["started_at"] or "")[:19].replace("T", " "),
                        r["wall_seconds"],
                        r["outcome"] or "(running or killed)",
                        r["exit_code"],
                    ]
                    for r in s["runs"]
                ],
                frozenset({0, 2, 4}),
            )
            + _table(
                ["task time by model", "tasks", "median s", "p90 s", "max s"],
                [
                    [t["model"], t["tasks"], t["median_s"], t["p90_s"], t["max_s"]]
                    for t in s["task_seconds"]
                ],
                frozenset({1, 2, 3, 4}),
            ),
        ),
    ]
    panel_html = "".join(
        f'<section class="panel"><h2>{html.escape(t)}</h2>{body}</section>' for t, body in panels
    )
    return f'<div class="tiles">{tile_html}</div><div class="panels">{panel_html}</div>'


# -- cards -----------------------------------------------------------------------------------


def _records(journal: J.Journal, scan: int) -> Iterator[dict[str, Any]]:
    """Rows of the scan and its key-less extra rows, in manifest order."""
    rows = ((r["row_index"], 0, dict(r)) for r in journal.iter_scan(scan))
    extra = (
        (r["row_index"], 1, {**dict(r), "state": J.INVALID, "final_credits": 0})
        for r in journal.iter_extra(scan)
    )
    for _, _, rec in heapq.merge(rows, extra, key=lambda t: (t[0], t[1])):
        yield rec


def _groups(records: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Records grouped by product: a row's variant tasks together, any other record alone."""
    group: list[dict[str, Any]] = []
    for rec in records:
        if group and (
            not rec.get("variant")
            or (rec["key"], rec["row_index"]) != (group[0]["key"], group[0]["row_index"])
        ):
            yield group
            group = []
        group.append(rec)
        if not rec.get("variant"):
            yield group
            group = []
    if group:
        yield group


def _error(rec: dict[str, Any]) -> str | None:
    if rec["state"] == J.SUCCEEDED or not rec.get("error_code"):
        return None
    field = f" [{rec['error_field']}]" if rec.get("error_field") else ""
    return f"{rec['error_code']}{field}: {rec.get('error_message') or ''}".strip()


class _Builder:
    """Makes the cards of a report, chunk by chunk (thumbnails in threads, fetches async)."""

    def __init__(self, settings: Settings, out: Path, px: int, client: RivyaClient | None) -> None:
        self.base = settings.manifest.parent
        self.out_dir = out.parent.resolve()
        self.px = px
        self.client = client
        self.pool = ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2)))
        self.ref_index: dict[str, int | str] = {}
        self.thumbs = 0
        self.stats = ReportStats()
        self.host_failures: dict[str, int] = {}
        self.host_ok: set[str] = set()
        self.fetch_slots = asyncio.Semaphore(FETCH_CONCURRENCY)
        self.pending_thumbs: list[str] = []
        self.catalog = Catalog.default()

    async def thumb(self, source: Path | bytes) -> str | None:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, _try_thumb, source, self.px
        )

    async def fetch(self, url: str) -> tuple[bytes | None, str]:
        """The bytes at ``url``, or None and why not."""
        if self.client is None:
            return None, "not downloaded"
        host = url.split("/")[2] if url.count("/") >= 2 else url
        if host not in self.host_ok and self.host_failures.get(host, 0) >= UNREACHABLE_AFTER:
            return None, "not downloaded; URL not reachable"
        async with self.fetch_slots:
            try:
                data, _ = await self.client.fetch(url, max_bytes=DEFAULT_MAX_BYTES)
            except BatchgenError as exc:
                if isinstance(exc, TransportError):
                    self.host_failures[host] = self.host_failures.get(host, 0) + 1
                reason = (
                    "URL expired"
                    if getattr(exc, "status", 0) in (403, 404, 410)
                    else "URL not reachable"
                )
                return None, f"not downloaded; {reason}"
        self.host_ok.add(host)
        self.stats.fetched += 1
        return data, ""

    async def reference(self, cell: str | None) -> tuple[int, str]:
        if not cell:
            return -1, "no reference"
        if cell in self.ref_index:
            got = self.ref_index[cell]
            return (got, "") if isinstance(got, int) else (-1, got)
        if is_url(cell):
            data, why = await self.fetch(cell)
            uri = await self.thumb(data) if data is not None else None
            why = (
                why.replace("not downloaded; ", "reference ")
                if data is None
                else "reference unreadable"
            )
        else:
            uri = await self.thumb(resolve_reference(cell, self.base))
            why = "reference missing or unreadable"
        result: int | str = why if uri is None else self._add(uri)
        self.ref_index[cell] = result
        return (result, "") if isinstance(result, int) else (-1, result)

    async def result(self, rec: dict[str, Any]) -> tuple[str | None, str, str | None]:
        state = rec["state"]
        if state != J.SUCCEEDED:
            return (
                None,
                {J.FAILED: "failed", J.INVALID: "invalid: not sent"}.get(state, "not finished"),
                None,
            )
        path = rec.get("download_path")
        if path and not rec.get("download_error") and os.path.exists(path):
            uri = await self.thumb(Path(path))
            href = os.path.relpath(Path(path).resolve(), self.out_dir).replace(os.sep, "/")
            return uri, "" if uri else "downloaded file unreadable", href
        if not rec.get("primary_url"):
            return None, "no result URL", None
        data, why = await self.fetch(rec["primary_url"])
        if data is None:
            return None, why, None
        uri = await self.thumb(data)
        return uri, "" if uri else "result unreadable", None

    def _add(self, uri: str) -> int:
        self.pending_thumbs.append(uri)
        self.thumbs += 1
        return self.thumbs - 1

    async def card(self, rec: dict[str, Any]) -> dict[str, Any]:
        r, rx = await self.reference(rec.get("reference"))
        uri, ix, href = await self.result(rec)
        i = self._add(uri) if uri else -1
        if i < 0:
            self.stats.placeholders += 1
        prompt = rec.get("prompt") or ""
        card: dict[str, Any] = {
            "k": rec.get("key") or "",
            "n": rec["row_number"],
            "s": rec["state"],
            "m": rec.get("model") or "",
            "p": prompt[:PROMPT_CHARS] + ("…" if len(prompt) > PROMPT_CHARS else ""),
            "c": rec.get("final_credits") or 0,
            "t": rec.get("task_id") or "",
            "r": r,
            "i": i,
        }
        for name, value in (("rx", rx), ("ix", ix), ("h", href), ("e", _error(rec))):
            if value:
                card[name] = value
        if rec["state"] == J.SUCCEEDED and rec.get("download_error"):
            card["w"] = f"download failed: {rec['download_error']}"
        return card

    def _aspect(self, rec: dict[str, Any], axes: dict[str, str]) -> str:
        """The task's portable aspect: its ``aspect`` axis, else what its params make."""
        if axes.get("aspect"):
            return axes["aspect"]
        try:
            params = json.loads(rec.get("params") or "{}")
        except ValueError:
            params = {}
        return self.catalog.image_target(rec.get("model") or "", params)[0]

    async def group_card(self, recs: list[dict[str, Any]]) -> dict[str, Any]:
        """One product with variants: its reference, and a strip of its tasks' results."""
        if len(recs) == 1 and not recs[0].get("variant"):
            return await self.card(recs[0])
        first = recs[0]
        r, rx = await self.reference(first.get("reference"))
        strip = []
        for rec in recs:
            uri, ix, href = await self.result(rec)
            i = self._add(uri) if uri else -1
            if i < 0:
                self.stats.placeholders += 1
            axes = json.loads(rec.get("axes") or "{}")
            prompt = rec.get("prompt") or ""
            item: dict[str, Any] = {
                "id": rec["variant"],
                "s": rec["state"],
                "c": rec.get("final_credits") or 0,
                "t": rec.get("task_id") or "",
                "i": i,
                "st": axes.get("style", ""),
                "a": self._aspect(rec, axes),
                "cd": axes.get("candidate", ""),
                "p": prompt[:PROMPT_CHARS] + ("…" if len(prompt) > PROMPT_CHARS else ""),
            }
            for name, value in (("ix", ix), ("h", href), ("e", _error(rec))):
                if value:
                    item[name] = value
            if rec["state"] == J.SUCCEEDED and rec.get("download_error"):
                item["w"] = f"download failed: {rec['download_error']}"
            strip.append(item)
        card: dict[str, Any] = {
            "k": first.get("key") or "",
            "n": first["row_number"],
            "m": first.get("model") or "",
            "r": r,
            "v": strip,
        }
        if rx:
            card["rx"] = rx
        return card

    async def chunk(
        self, groups: list[list[dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        self.pending_thumbs = []
        # Each new reference once (many rows may share one), then the cards concurrently.
        cells = {g[0].get("reference") for g in groups} - set(self.ref_index)
        await asyncio.gather(*(self.reference(cell) for cell in cells if cell))
        cards = await asyncio.gather(*(self.group_card(g) for g in groups))
        return list(cards), self.pending_thumbs


def _js(value: Any) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


async def write_report(
    settings: Settings,
    out: Path,
    *,
    thumb_px: int = DEFAULT_THUMB,
    fetch: bool = True,
    fetch_timeout: float = 10.0,
) -> ReportStats:
    """Write the job's HTML report to ``out`` (atomically) and return what went into it."""
    started = time.monotonic()
    out = Path(out)
    with open_journal(settings) as journal:
        scan = journal.last_scan_run()
        if scan is None:
            raise UsageError(
                "the journal has no scan of the manifest yet",
                str(settings.journal),
                "run the job first",
            )
        summary = collect_summary(journal, scan)
        pid = running_pid(settings.journal)
        job_id = journal.get_meta("job_id") or settings.job_id
        sub = f"journal {settings.journal} · scan of run {scan} · made {J.now_iso()}"
        if pid:
            sub += f" · a run (pid {pid}) is still going on: this is a snapshot"
        title = f"batchgen report: {job_id}"
        client = None
        if fetch:
            client = RivyaClient(
                settings.base_url,
                settings.api_key,
                retry=RetryPolicy.none(),
                timeout=fetch_timeout,
                connect_timeout=min(3.0, fetch_timeout),
                max_connections=FETCH_CONCURRENCY,
            )
        builder = _Builder(settings, out, thumb_px, client)
        try:
            with replacing(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                fh.write(
                    HEAD.format(
                        title=html.escape(title),
                        subtitle=html.escape(sub),
                        summary=summary_html(summary),
                    )
                )
                await _write_cards(fh, builder, _records(journal, scan))
                fh.write(TAIL % {"page": PAGE_SIZE})
        finally:
            builder.pool.shutdown()
            if client is not None:
                await client.close()
    stats = builder.stats
    stats.thumbs = builder.thumbs
    stats.bytes = out.stat().st_size
    stats.seconds = round(time.monotonic() - started, 2)
    return stats


async def _write_cards(fh: TextIO, builder: _Builder, records: Iterator[dict[str, Any]]) -> None:
    batch: list[list[dict[str, Any]]] = []
    tasks = 0

    async def flush() -> None:
        nonlocal tasks
        cards, thumbs = await builder.chunk(batch)
        fh.write(f"<script>P({_js(cards)},{_js(thumbs)})</script>\n")
        builder.stats.rows += tasks  # tasks (one per row without variants)
        batch.clear()
        tasks = 0

    for group in _groups(records):
        batch.append(group)
        tasks += len(group)
        if tasks >= CHUNK:
            await flush()
    if batch:
        await flush()


__all__ = ["ReportStats", "collect_summary", "summary_html", "thumbnail", "write_report"]
