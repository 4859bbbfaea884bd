"""Where ``run``, ``estimate`` and ``models`` get the model catalog from.

In order: a file pinned with ``--catalog``; the cached live catalog while it is fresh
(``--catalog-max-age`` hours); ``GET /api/v1/models`` (no key, one request, a short timeout,
conditional on the cache's validators); and when that fails (offline, an error status, a
malformed answer) the last cache, however old, then the copy shipped with batchgen. Whatever is
used is said by the catalog's :class:`~batchgen.job.catalog.CatalogOrigin`; a fallback also gives
one warning line naming why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.errors import BatchgenError, UsageError
from batchgen.job.catalog import CACHE, LIVE, Catalog, CatalogError, CatalogOrigin
from batchgen.store.catalog_cache import CachedCatalog, CatalogCache

if TYPE_CHECKING:
    from batchgen.job.settings import Settings

FETCH_TIMEOUT = 5.0
"""Seconds the one GET /models may take (connect included) before the fallback is used."""


@dataclass(frozen=True)
class CatalogSource:
    """What decides the catalog: the service, a pinned file, the cache and its freshness."""

    base_url: str
    cache_dir: Path
    max_age_hours: float = 24.0
    pinned: Path | None = None
    pinned_where: str = "--catalog"
    simulate: bool = False

    @classmethod
    def of(cls, settings: Settings) -> CatalogSource:
        """The source a job's settings name."""
        return cls(
            base_url=settings.base_url,
            cache_dir=settings.cache_dir,
            max_age_hours=settings.catalog_max_age,
            pinned=settings.catalog,
            pinned_where=settings.where("catalog"),
            simulate=settings.simulate,
        )


def read_pinned(path: Path, where: str) -> Catalog:
    """The catalog file given by ``where``; UsageError saying what is wrong with it."""
    try:
        return Catalog.from_file(path)
    except FileNotFoundError:
        problem = "not found"
    except IsADirectoryError:
        problem = "is a folder"
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror}"
    except CatalogError as exc:
        problem = f"is not a model catalog: {exc}"
    raise UsageError(
        f"catalog file {path} {problem}",
        where,
        "give a file holding a GET /api/v1/models answer, e.g. saved with "
        "curl https://rivya.ai/api/v1/models",
    )


async def load_catalog(
    source: CatalogSource,
    *,
    warn: Callable[[str], None],
    refresh: bool = False,
    clock: Callable[[], float] = time.time,
) -> Catalog:
    """The catalog to use now (see the module docstring); ``refresh`` skips the fresh cache."""
    if source.pinned is not None:
        return read_pinned(source.pinned, source.pinned_where)
    if source.simulate:
        return Catalog.default()  # the in-process simulator serves the shipped catalog
    cache = CatalogCache(source.cache_dir)
    cached = cache.load(source.base_url)
    cached_catalog = _parse_cached(cached)
    now = clock()
    if (
        cached is not None
        and cached_catalog is not None
        and not refresh
        and 0 <= now - cached.fetched_at < source.max_age_hours * 3600  # (a future time: stale)
    ):
        return cached_catalog
    problem = await _fetch(source, cache, cached if cached_catalog is not None else None, clock)
    if isinstance(problem, Catalog):
        return problem
    fallback = cached_catalog if cached_catalog is not None else Catalog.default()
    warn(f"{problem}; using the {fallback.origin.describe(clock())}")
    return fallback


def load_catalog_sync(
    source: CatalogSource, *, warn: Callable[[str], None], refresh: bool = False
) -> Catalog:
    """:func:`load_catalog` for code outside an event loop (the CLI)."""
    return asyncio.run(load_catalog(source, warn=warn, refresh=refresh))


def _parse_cached(cached: CachedCatalog | None) -> Catalog | None:
    if cached is None:
        return None
    origin = CatalogOrigin(CACHE, cached.base_url, cached.fetched_at)
    try:
        return Catalog.parse(cached.payload, origin)
    except CatalogError:
        return None


async def _fetch(
    source: CatalogSource,
    cache: CatalogCache,
    cached: CachedCatalog | None,
    clock: Callable[[], float],
) -> Catalog | str:
    """The live catalog (saved to the cache), or why it could not be had."""
    from batchgen.rivya.client import RivyaClient
    from batchgen.rivya.retry import RetryPolicy

    url = source.base_url.rstrip("/") + "/api/v1/models"
    try:
        async with RivyaClient(
            source.base_url,
            None,
            retry=RetryPolicy.none(),
            timeout=FETCH_TIMEOUT,
            connect_timeout=FETCH_TIMEOUT,
            max_connections=1,
        ) as client:
            answer = await client.get_models(
                etag=cached.etag if cached else None,
                last_modified=cached.last_modified if cached else None,
            )
    except BatchgenError as exc:
        return f"could not fetch the model catalog from {url} ({exc})"
    fetched_at = clock()
    if answer.not_modified and cached is not None:
        payload = cached.payload
        etag = answer.etag or cached.etag
        last_modified = answer.last_modified or cached.last_modified
    else:
        try:
            payload = json.loads(answer.body)
            Catalog.parse(payload)
        except (ValueError, CatalogError) as exc:
            reason = "not JSON" if not isinstance(exc, CatalogError) else str(exc)
            return f"the model catalog from {url} is malformed ({reason})"
        etag, last_modified = answer.etag, answer.last_modified
    origin = CatalogOrigin(LIVE, source.base_url, fetched_at)
    catalog = Catalog.parse(payload, origin)
    # An unwritable cache folder costs one request per run, nothing else.
    with contextlib.suppress(OSError):
        cache.save(CachedCatalog(source.base_url, payload, fetched_at, etag, last_modified))
    return catalog
