"""Result downloads: fetch each succeeded row's image soon after success, before its URL expires.

:class:`Downloader` runs a few workers (its own concurrency limit: the media host is not the API)
over a queue of row keys. Keys come from the engine right after a success (:meth:`enqueue`) and
from the journal's succeeded rows whose download is missing, stale or failed (:meth:`feed`, for
resumes and re-runs). For each key a worker reads the row from the journal, skips it when the
result is already on disk, fetches ``primary_url`` through ``client.fetch`` (the only code that
speaks HTTP), checks the bytes decode as the declared format with Pillow, writes the file
atomically (temporary file, then rename) and commits ``download_path/_bytes/_sha256`` to the
journal. A failed download is retried; when the URL answers 403/404/410 the task is polled once
for a fresh URL. After the last attempt the error goes to ``download_error``; the row keeps its URL
and stays succeeded.

File names come from :func:`safe_name`: ``<sanitised key>-<12 hex of sha256(raw key)>.<ext>``, so
no key can escape the folder and keys that differ only in unsafe characters never collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import re
import sqlite3
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from batchgen.errors import ApiError, BatchgenError
from batchgen.rivya import retry as R
from batchgen.store import files
from batchgen.store import journal as J

if TYPE_CHECKING:
    from batchgen.rivya.client import RivyaClient

DEFAULT_MAX_BYTES = 50_000_000
"""Largest result accepted, bytes (the API's largest upload limit; images are far smaller)."""
DEFAULT_ATTEMPTS = 3
"""Download attempts per result, the first included (each may hold the client's own retries)."""
DEFAULT_RETRY_DELAY = 1.0
"""Base of the backoff between attempts (rivya/retry.py: capped exponential, full jitter)."""
DEFAULT_TIMEOUT = 120.0
"""Seconds one attempt may take, retries inside the client included."""
NAME_CHARS = 80
"""Characters of the sanitised key kept in a file name."""
HASH_CHARS = 12

EXPIRED_STATUSES = frozenset({403, 404, 410})
"""Answers that may mean "this URL expired": poll the task once for a fresh one."""

# Pillow format <-> MIME type and extension of the formats the API can return.
FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
_DECLARED = {
    "png": "PNG",
    "image/png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "webp": "WEBP",
    "image/webp": "WEBP",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DownloadError(BatchgenError):
    """One attempt to download a result failed (bad bytes, wrong format)."""


def safe_name(key: str, ext: str) -> str:
    """A file name for row ``key``: ASCII letters, digits, ``._-`` only, never hidden, never a path.

    The sanitised key is for people; the hash of the raw key makes the name unique per key.
    """
    text = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._-")[:NAME_CHARS].rstrip("._-") or "row"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{text}-{digest}.{ext.lstrip('.')}"


def declared_format(content_type: str | None, params: Mapping[str, Any], url: str) -> str | None:
    """The Pillow format the result should have: from Content-Type, else the row's
    ``output_format`` param, else the URL's suffix; None when nothing says."""
    if content_type and content_type.startswith("image/"):
        return _DECLARED.get(content_type)
    fmt = params.get("output_format") or params.get("outputFormat")
    if isinstance(fmt, str) and fmt.lower() in _DECLARED:
        return _DECLARED[fmt.lower()]
    suffix = url.split("?", 1)[0].rsplit("/", 1)[-1]
    return _DECLARED.get(suffix.rsplit(".", 1)[-1].lower()) if "." in suffix else None


def check_image(data: bytes, declared: str | None) -> str:
    """Decode ``data`` fully; return its Pillow format. Raises DownloadError when it is not a
    whole image of a supported format, or not the declared one."""
    if not data:
        raise DownloadError("empty body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or "?"
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise DownloadError(f"not a whole image ({type(exc).__name__}: {exc})"[:300]) from None
    if fmt not in FORMATS:
        raise DownloadError(f"unsupported image format {fmt}")
    if declared is not None and fmt != declared:
        raise DownloadError(f"declared {declared} but the bytes are {fmt}")
    return fmt


def write_atomic(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` atomically (:mod:`batchgen.store.files`)."""
    return files.write_atomic(folder / name, data)


def needs_download(row: Mapping[str, Any] | sqlite3.Row) -> bool:
    """A succeeded row whose current result is not on disk (never downloaded, stale, failed)."""
    if row["state"] != J.SUCCEEDED or not row["primary_url"]:
        return False
    if row["download_error"] or not row["download_path"]:
        return True
    if row["download_task_id"] != row["task_id"]:
        return True
    return not os.path.exists(row["download_path"])


@dataclass(frozen=True, slots=True)
class Saved:
    """A result on disk."""

    path: Path
    size: int
    sha256: str
    fmt: str


def _save(
    folder: Path, key: str, data: bytes, declared: str | None, name: str | None = None
) -> Saved:
    """Check and write one result: named by the task's ``download_name`` (a relative path from
    ``output.download_name``, already made safe) or, without one, by :func:`safe_name`."""
    fmt = check_image(data, declared)
    ext = FORMATS[fmt][1]
    if name:
        from batchgen.job.names import finish

        relative = Path(finish(name, ext))
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        path = write_atomic((folder / relative).parent, relative.name, data)
    else:
        path = write_atomic(folder, safe_name(key, ext), data)
    return Saved(path, len(data), hashlib.sha256(data).hexdigest(), fmt)


class Downloader:
    """Downloads results of succeeded rows into ``folder``; see the module docstring.

    Use: :meth:`start`, then :meth:`enqueue` (sync: the engine's ``on_success``) and
    :meth:`feed`, then :meth:`drain` to wait for everything, and :meth:`close` in a ``finally``.
    """

    def __init__(
        self,
        client: RivyaClient,
        journal: J.Journal,
        folder: Path,
        *,
        concurrency: int = 8,
        max_bytes: int = DEFAULT_MAX_BYTES,
        attempts: int = DEFAULT_ATTEMPTS,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        timeout: float = DEFAULT_TIMEOUT,
        emit: Callable[..., None] | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.folder = Path(folder)
        self.concurrency = max(1, concurrency)
        self.max_bytes = max_bytes
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        # Waits between attempts come from the one retry policy (rivya/retry.py), as for API calls.
        self.policy = R.RetryPolicy(max_attempts=self.attempts, base_delay=retry_delay)
        self._rng = random.Random()
        self.timeout = timeout
        self.emit = emit or (lambda *a, **k: None)
        self.downloaded = 0
        self.failed = 0
        self.bytes = 0
        self._queue: asyncio.Queue[J.TaskRef | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._active: set[J.TaskRef] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._feeders: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (inside a running loop)."""
        if not self._workers:
            self._workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]

    def enqueue(self, fields: Mapping[str, Any]) -> None:
        """Queue one succeeded task (``fields["key"]``, ``fields["variant"]``); the engine's
        ``on_success`` hook."""
        self._queue.put_nowait((str(fields["key"]), str(fields.get("variant") or "")))

    def feed(self, rows: Iterable[Mapping[str, Any] | sqlite3.Row]) -> None:
        """Queue the rows among ``rows`` that :func:`needs_download`, read lazily, a few at a
        time (the journal of a big job is never held in memory)."""
        self._feeders.append(asyncio.create_task(self._feed(rows)))

    async def drain(self, *, until: Callable[[], bool] = lambda: False) -> None:
        """Wait until every queued and fed row is done, or ``until()`` turns true."""
        while not until():
            pending = [t for t in self._feeders if not t.done()]
            if not pending and self._queue.empty() and not self._active:
                return
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop the workers and feeders (what is unfinished is picked up by the next run)."""
        for task in [*self._feeders, *self._workers]:
            task.cancel()
        await asyncio.gather(*self._feeders, *self._workers, return_exceptions=True)
        self._feeders.clear()
        self._workers.clear()

    @property
    def pending(self) -> int:
        """Downloads queued or under way (rows the feeders have not read yet are not counted)."""
        return self._queue.qsize() + len(self._active)

    # -- internals ------------------------------------------------------------------------------

    async def _feed(self, rows: Iterable[Mapping[str, Any] | sqlite3.Row]) -> None:
        high = self.concurrency * 4
        for n, row in enumerate(rows):
            if n % 500 == 499:
                await asyncio.sleep(0)
            if not needs_download(row):
                continue
            while self._queue.qsize() >= high:
                self._room.clear()
                await self._room.wait()
            self._queue.put_nowait((str(row["key"]), _variant(row)))

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._room.set()
            if key is None or key in self._active:
                continue  # another worker holds this key; it re-checks the row when done
            self._active.add(key)
            try:
                await self._one(key)
            finally:
                self._active.discard(key)

    async def _one(self, task: J.TaskRef) -> None:
        row = self.journal.get_row(task)
        if row is None or not needs_download(row):
            return
        key = task[0]
        name = row["download_name"]
        task_id, url = row["task_id"], row["primary_url"]
        params = json.loads(row["params"] or "{}")
        error = "not attempted"
        refreshed = False
        for attempt in range(1, self.attempts + 1):
            try:
                async with asyncio.timeout(self.timeout):
                    data, ctype = await self.client.fetch(url, max_bytes=self.max_bytes)
                saved = await asyncio.to_thread(
                    _save, self.folder, key, data, declared_format(ctype, params, url), name
                )
            except (BatchgenError, TimeoutError, OSError) as exc:
                error = _describe(exc, self.timeout)
                if isinstance(exc, ApiError) and exc.status in EXPIRED_STATUSES and not refreshed:
                    refreshed = True
                    fresh = await self._fresh_url(task, task_id, url)
                    if fresh is not None:
                        url = fresh
                        continue
                if attempt < self.attempts:
                    after = exc.retry_after if isinstance(exc, ApiError) else None
                    await asyncio.sleep(
                        R.retry_delay(attempt, after, policy=self.policy, rng=self._rng)
                    )
                continue
            self.journal.update_row(
                task,
                download_path=str(saved.path),
                download_bytes=saved.size,
                download_sha256=saved.sha256,
                download_error=None,
                download_task_id=task_id,
            )
            self.downloaded += 1
            self.bytes += saved.size
            self.emit("downloaded", key=key, path=str(saved.path), bytes=saved.size)
            return
        self.journal.update_row(
            task,
            download_path=None,
            download_bytes=None,
            download_sha256=None,
            download_error=error[:500],
            download_task_id=task_id,
        )
        self.failed += 1
        self.emit("download_failed", key=key, task_id=task_id, message=error)

    async def _fresh_url(self, key: J.TaskRef, task_id: str | None, url: str) -> str | None:
        """Poll the task for a new result URL (signed URLs expire); commit it when it changed."""
        if not task_id:
            return None
        with contextlib.suppress(BatchgenError):
            task = await self.client.get_generation(task_id)
            if task.status == J.SUCCEEDED and task.primary_url and task.primary_url != url:
                urls = list(task.urls) or [task.primary_url]
                self.journal.update_row(key, primary_url=task.primary_url, urls=json.dumps(urls))
                return task.primary_url
        return None


def _variant(row: Mapping[str, Any] | sqlite3.Row) -> str:
    try:
        return str(row["variant"] or "")
    except (KeyError, IndexError):
        return ""


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, ApiError):
        return f"{exc.code} (HTTP {exc.status}): {exc.message}"
    return str(exc) or type(exc).__name__


__all__ = [
    "Downloader",
    "check_image",
    "declared_format",
    "needs_download",
    "safe_name",
    "write_atomic",
]
