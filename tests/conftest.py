"""Generic fixtures for every test: isolation from the environment, and a running simulator."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

OFFLINE_URL = "http://127.0.0.1:9"
"""A loopback address where nothing listens (the discard port): connections are refused."""


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clear BATCHGEN_*/RIVYA_* variables, cache under tmp_path, run inside tmp_path."""
    for name in list(os.environ):
        if name.startswith(("BATCHGEN_", "RIVYA_")):
            monkeypatch.delenv(name, raising=False)
    # The live catalog's cache: never the user's ~/.cache, whichever way a test resolves it.
    monkeypatch.setenv("BATCHGEN_CACHE_DIR", str(tmp_path / "cache" / "batchgen"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # A test that names no server never leaves the machine: nothing listens on this port, so the
    # catalog's GET /models is refused at once and the shipped catalog is used.
    monkeypatch.setenv("RIVYA_BASE_URL", OFFLINE_URL)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def sim() -> AsyncIterator[Any]:
    """A running simulator (``SimServer``) on 127.0.0.1 with short latencies and no rate limit."""
    from batchgen.sim import SimConfig, SimServer

    config = SimConfig(rate=None, latency=0.05, queue_time=0.0, seed=1)
    async with SimServer(config) as server:
        yield server
