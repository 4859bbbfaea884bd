"""URL references: fetched, then judged like local files, the same way by ``estimate`` and ``run``.

``run`` fetches a URL reference when it submits a row that needs it (:mod:`.upload`);
``estimate`` fetches the URL references of the rows it would submit before it prices them
(:class:`UrlChecker`: GETs only, a few at a time, each capped at the model's reference size, and
nothing sent to the Rivya API). Both judge the answer with :func:`fetched_violations`: a URL that
cannot be fetched, or whose bytes break the model's reference rules (type by signature, size, an
image that does not decode), makes the row invalid. So an estimate's invalid rows and credits
are the run's.

An estimate keeps the verdicts of the URLs it fetched in a small SQLite file next to the journal
(:class:`UrlCache`), with the answer's ``ETag``/``Last-Modified``: the next estimate sends a
conditional GET and downloads again only what changed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from batchgen.errors import ApiError, BatchgenError, TooLargeError
from batchgen.job.catalog import Catalog, ReferenceInfo, Violation
from batchgen.job.filetypes import image_problem, kind_of_mime, sniff_mime
from batchgen.store.url_cache import Fetched, UrlCache

if TYPE_CHECKING:
    from batchgen.rivya.client import RivyaClient

DEFAULT_MAX_BYTES = 10_000_000
"""Size cap of a URL reference when the model states none."""


def size_cap(catalog: Catalog, model: str | None) -> int:
    """The most bytes to fetch of a reference of ``model``: its reference size limit."""
    spec = catalog.get(model) if model else None
    return spec.reference.max_bytes if spec and spec.reference else DEFAULT_MAX_BYTES


def from_bytes(url: str, data: bytes, *, status: int, content_type: str | None) -> Fetched:
    """Judge fetched bytes as a local file is judged: signature, size, decode check."""
    mime = sniff_mime(data[:64])
    return Fetched(
        url,
        status=status,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        mime=mime,
        damage=image_problem(data, mime),
    )


def from_error(url: str, exc: BatchgenError) -> Fetched:
    """What a failed fetch says about the URL: its HTTP status, never the page it served."""
    if isinstance(exc, TooLargeError):
        return Fetched(url, too_large=exc.limit)
    if isinstance(exc, ApiError):
        code = "" if exc.code.startswith("http_") else f" {exc.code}"
        return Fetched(url, status=exc.status, failure=f"HTTP {exc.status}{code}")
    return Fetched(url, failure=str(exc)[:200])


def fetched_violations(
    catalog: Catalog, model: str, column: str, found: Fetched
) -> list[Violation]:
    """The rules a fetched URL reference breaks for ``model``, addressed to ``column``."""
    where = f"column '{column}'"
    if found.failure is not None:
        return [
            Violation(
                column,
                "reference_unavailable",
                f"{where}: cannot fetch {found.url}: {found.failure}; correct the URL or make it"
                " answer (reference_unavailable)",
            )
        ]
    if found.too_large is not None:
        return [
            Violation(
                column,
                "max_bytes",
                f"{where}: {found.url} is larger than {model}'s limit of {found.too_large} bytes"
                " (max_bytes)",
            )
        ]
    kind = (kind_of_mime(found.mime) if found.mime else None) or "image"
    info = ReferenceInfo(kind, found.mime, found.size, None, found.damage)
    served = f"{found.url} (HTTP {found.status}, {found.content_type or 'no Content-Type'})"
    return [
        Violation(column, v.rule, f"{where}: {served}: {v.message.removeprefix('reference: ')}")
        for v in catalog.validate_references(model, [info])
    ]


class UrlChecker:
    """Fetches and judges the URL references of an estimate's rows to submit.

    Synchronous to its caller (the scan), it runs its own event loop: ``concurrency`` GETs at
    a time, each URL once per estimate, revalidated from the :class:`UrlCache` when it has
    validators. The client it uses holds no API key: nothing goes to the Rivya API.
    """

    MEMO = 65536  # verdicts kept in memory, by (URL, size cap)

    def __init__(self, base_url: str, cache: UrlCache | None, *, concurrency: int = 8) -> None:
        self.base_url = base_url
        self.cache = cache
        self.concurrency = max(1, concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None  # made when a URL is to be fetched
        self._client: RivyaClient | None = None
        self._memo: OrderedDict[tuple[str, int], Fetched] = OrderedDict()
        self.downloaded = 0  # URLs whose bytes came down
        self.not_modified = 0  # URLs the cache answered after a conditional GET

    def check(self, wanted: Mapping[str, int]) -> dict[str, Fetched]:
        """The verdict on each URL of ``wanted`` (URL -> size cap)."""
        todo = {url: cap for url, cap in wanted.items() if (url, cap) not in self._memo}
        if todo:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            found = self._loop.run_until_complete(self._fetch_all(todo))
            for url, cap in todo.items():
                self._memo[(url, cap)] = found[url]
                if len(self._memo) > self.MEMO:
                    self._memo.popitem(last=False)
        return {url: self._memo[(url, cap)] for url, cap in wanted.items()}

    async def _fetch_all(self, todo: Mapping[str, int]) -> dict[str, Fetched]:
        if self._client is None:
            from batchgen.rivya.client import RivyaClient

            self._client = RivyaClient(self.base_url, None)
        client = self._client
        slots = asyncio.Semaphore(self.concurrency)

        async def one(url: str, cap: int) -> Fetched:
            async with slots:
                return await self._fetch(client, url, cap)

        results = await asyncio.gather(*(one(url, cap) for url, cap in todo.items()))
        return dict(zip(todo, results, strict=True))

    async def _fetch(self, client: RivyaClient, url: str, cap: int) -> Fetched:
        cached = self.cache.get(url) if self.cache is not None else None
        etag, modified, verdict = cached if cached is not None else (None, None, None)
        try:
            media = await client.fetch_media(url, max_bytes=cap, etag=etag, last_modified=modified)
        except BatchgenError as exc:
            return from_error(url, exc)
        if media.not_modified and verdict is not None:
            self.not_modified += 1
            return verdict
        self.downloaded += 1
        found = await asyncio.to_thread(
            from_bytes, url, media.body, status=media.status, content_type=media.content_type
        )
        if self.cache is not None and (media.etag or media.last_modified):
            self.cache.put(found, media.etag, media.last_modified)
        return found

    def close(self) -> None:
        """Close the client, the loop and the cache."""
        if self._loop is not None:
            if self._client is not None:
                self._loop.run_until_complete(self._client.close())
                self._client = None
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()
            self._loop = None
        if self.cache is not None:
            self.cache.close()
