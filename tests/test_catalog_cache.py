"""The catalog cache (a file, no HTTP) and the loader's choices when the service cannot answer."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import OFFLINE_URL

from batchgen.job.catalog import Catalog
from batchgen.pipeline.catalog_fetch import CatalogSource, load_catalog
from batchgen.store.catalog_cache import CachedCatalog, CatalogCache


def entry(fetched_at: float, credits: int = 4) -> CachedCatalog:
    payload = Catalog.default().to_api()
    payload["data"][0]["base_credits"] = credits
    return CachedCatalog(OFFLINE_URL, payload, fetched_at, '"v1"', None)


def test_round_trip_and_one_file_per_service(tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path)
    cache.save(entry(123.0))
    assert cache.load(OFFLINE_URL) == entry(123.0)
    assert cache.load("http://127.0.0.1:10") is None
    assert cache.path(OFFLINE_URL) != cache.path("http://127.0.0.1:10")
    assert cache.path(OFFLINE_URL + "/") == cache.path(OFFLINE_URL)


def test_an_unreadable_cache_is_no_cache(tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path)
    for text in ("{not json", "[]", '{"payload": {}, "fetched_at": "yesterday"}'):
        cache.path(OFFLINE_URL).write_text(text, encoding="utf-8")
        assert cache.load(OFFLINE_URL) is None


async def test_a_fresh_cache_is_used_without_a_request(tmp_path: Path) -> None:
    CatalogCache(tmp_path).save(entry(time.time() - 60, credits=9))
    said: list[str] = []
    source = CatalogSource(OFFLINE_URL, tmp_path, max_age_hours=1)
    catalog = await load_catalog(source, warn=said.append)
    assert said == []  # nothing was asked, so nothing failed
    assert catalog.origin.source == "cache" and catalog.cost("qwen-image", {}) == 9


async def test_offline_a_stale_cache_then_the_shipped_copy(tmp_path: Path) -> None:
    cache = CatalogCache(tmp_path)
    cache.save(entry(time.time() - 7200, credits=9))
    said: list[str] = []
    source = CatalogSource(OFFLINE_URL, tmp_path, max_age_hours=1)
    catalog = await load_catalog(source, warn=said.append)
    assert catalog.origin.source == "cache" and catalog.cost("qwen-image", {}) == 9
    assert len(said) == 1 and "could not fetch the model catalog" in said[0]
    assert said[0].endswith(f"using the cached catalog of {OFFLINE_URL} (fetched 2.0 h ago)")
    cache.path(OFFLINE_URL).write_text("{broken", encoding="utf-8")
    said.clear()
    catalog = await load_catalog(source, warn=said.append)
    assert catalog.origin.source == "shipped" and catalog.cost("qwen-image", {}) == 4
    assert len(said) == 1 and said[0].endswith(
        "using the shipped catalog (the copy in this batchgen)"
    )


async def test_a_cache_from_the_future_is_not_trusted(tmp_path: Path) -> None:
    CatalogCache(tmp_path).save(entry(time.time() + 86400))
    said: list[str] = []
    await load_catalog(CatalogSource(OFFLINE_URL, tmp_path), warn=said.append)
    assert len(said) == 1  # it asked the service (and was refused)
