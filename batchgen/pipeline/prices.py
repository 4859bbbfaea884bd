"""Prices: the catalog predicts them, the service's ``reserved_credits`` decide them.

:class:`PriceBook` is what the engine asks before it reserves credits for a row. The first task
of each model is a probe while a credit cap is set: the next rows of that model wait for its
answer, so a price raised on the server can never carry several rows past ``--max-credits`` at
the catalog's figure. When the server's reservation differs from the catalog, the book warns
once per model, uses the server's figure for the rest of the run, and the journal remembers it
(:func:`remember`), so the next ``estimate`` and ``run`` price the model that way
(:func:`observed_prices`) until a catalog fetched later says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from batchgen.job.catalog import Catalog
from batchgen.store import journal as J

META_KEY = "observed_prices"


@dataclass(frozen=True)
class PriceChange:
    """A model whose server price differed from the catalog's."""

    model: str
    catalog_credits: int
    server_credits: int
    seen_at: float  # epoch seconds
    catalog: str  # which catalog said catalog_credits

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "catalog_credits": self.catalog_credits,
            "server_credits": self.server_credits,
            "seen_at": datetime.fromtimestamp(self.seen_at, UTC).isoformat(timespec="seconds"),
            "catalog": self.catalog,
        }


class PriceBook:
    """One run's prices per model: the catalog's until the server says otherwise."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        strict: bool,
        on_change: Callable[[PriceChange], None],
        clock: Callable[[], float],
    ) -> None:
        self.catalog = catalog
        self.strict = strict
        self.on_change = on_change
        self.clock = clock
        self.server: dict[str, int] = {}  # model -> credits the server reserved
        self._probes: dict[str, asyncio.Event] = {}
        self._warned: set[str] = set()

    def catalog_price(self, model: str, planned: int) -> int:
        spec = self.catalog.get(model)
        return spec.base_credits if spec is not None else planned

    async def cost(self, model: str, planned: int) -> int:
        """Credits to reserve for the next row of ``model`` (``planned``: its plan's cost).

        While strict, a model the server has not priced yet has one row in flight at a time;
        that row's caller must then call :meth:`observe` or :meth:`release`.
        """
        if self.strict:
            while model not in self.server and model in self._probes:
                await self._probes[model].wait()
            if model not in self.server:
                self._probes[model] = asyncio.Event()
        return self.server.get(model, planned)

    def observe(self, model: str, reserved: int) -> None:
        """The server reserved ``reserved`` credits for a task of ``model``."""
        self.server[model] = reserved
        self.release(model)
        price = self.catalog_price(model, reserved)
        if reserved != price and model not in self._warned:
            self._warned.add(model)
            describe = self.catalog.origin.describe(self.clock())
            self.on_change(PriceChange(model, price, reserved, self.clock(), describe))

    def release(self, model: str) -> None:
        """The probe of ``model`` ended (answered or not): let the next row go."""
        event = self._probes.pop(model, None)
        if event is not None:
            event.set()


def remember(journal: J.Journal, change: PriceChange) -> None:
    """Keep ``change`` in the journal for later estimates and runs."""
    seen = _load(journal)
    seen[change.model] = change.as_dict() | {"seen_at_epoch": change.seen_at}
    journal.set_meta(META_KEY, json.dumps(seen, sort_keys=True))


def observed_prices(journal: J.Journal | None, catalog: Catalog) -> list[PriceChange]:
    """Prices the server charged that this catalog does not state, observed after it was
    fetched (a catalog fetched later is newer news; a shipped or pinned one never is)."""
    if journal is None:
        return []
    fetched = catalog.origin.fetched_at
    out = []
    for model, item in sorted(_load(journal).items()):
        spec = catalog.get(model)
        try:
            credits, seen = int(item["server_credits"]), float(item["seen_at_epoch"])
        except (KeyError, TypeError, ValueError):
            continue
        if spec is None or spec.base_credits == credits:
            continue
        if fetched is not None and fetched > seen:
            continue
        out.append(PriceChange(model, spec.base_credits, credits, seen, str(item.get("catalog"))))
    return out


def apply_observed(catalog: Catalog, changes: list[PriceChange]) -> Catalog:
    """``catalog`` with the observed server prices in place of its own."""
    if not changes:
        return catalog
    return catalog.with_prices({c.model: c.server_credits for c in changes})


def describe_change(change: PriceChange) -> str:
    """One line about a price change, for warnings and the estimate."""
    return (
        f"{change.model}: the service reserved {change.server_credits} credits per task, "
        f"the catalog says {change.catalog_credits} ({change.catalog})"
    )


def _load(journal: J.Journal) -> dict[str, Mapping[str, Any]]:
    try:
        raw = journal.get_meta(META_KEY)
    except sqlite3.Error:  # a read-only journal of an older version may lack the table
        return {}
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
