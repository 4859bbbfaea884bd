"""``batchgen estimate`` (= ``run --dry-run``): exact cost before spending anything.

It plans the manifest through the very code ``run`` uses (pipeline.plan via scan_manifest), reads
the journal without writing it, and sends no POST of any kind: it reads the public model catalog
(``GET /models``, unless its cache is fresh; pipeline.catalog_fetch), with an API key the
balance (``GET /credits``); and for URL references, it GETs them
(pipeline.remote) and judges them as ``run`` will, unless told not to (``--no-fetch``: then the
total is said to be unverified).

Exit codes: 0 affordable and valid; 1 some rows invalid; 2 bad usage; 3 not affordable.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchgen.errors import EXIT_OK, EXIT_ROWS_FAILED, EXIT_STOPPED, BatchgenError, UsageError
from batchgen.job.catalog import Catalog
from batchgen.job.settings import Settings
from batchgen.job.variants import VariantMatrix
from batchgen.pipeline import plan as P
from batchgen.pipeline.catalog_fetch import CatalogSource, load_catalog_sync
from batchgen.pipeline.prices import apply_observed, observed_prices
from batchgen.pipeline.remote import UrlChecker
from batchgen.pipeline.scan import scan_manifest
from batchgen.store import journal as J
from batchgen.store.files import commit, temp_beside
from batchgen.store.keyset import KeySet
from batchgen.store.url_cache import UrlCache

# Stated defaults when the journal has no history of this job.
DEFAULT_RATE = 10.0  # requests/s assumed for an account whose limit we have not seen
DEFAULT_LATENCY = (5.0, 30.0)  # seconds from submit to done: (typical, slow)
POLLS_PER_ROW = (1.5, 3.0)

ROW_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("key", pa.string()),
        ("variant", pa.string()),  # only for a job with variants: one line per task
        ("model", pa.string()),
        ("decision", pa.string()),
        ("credits", pa.int64()),
        ("reason", pa.string()),
    ]
)
_DECISION = {
    P.SUBMIT: "would_submit",
    P.RESUME: "in_flight",
    P.KEEP: "skip",
    P.KEEP_FAILED: "skip",
    P.INVALID: "invalid",
    P.DUPLICATE: "invalid",
}


@dataclass
class Estimate:
    """The figures of an estimate (``--json`` prints this)."""

    job_id: str
    rows: int = 0  # manifest rows
    tasks: int = 0  # what is planned: one per row and variant (a row that owns no key: one)
    decisions: dict[str, int] = field(default_factory=dict)
    credits: int = 0
    credits_by_model: dict[str, int] = field(default_factory=dict)
    rows_by_model: dict[str, int] = field(default_factory=dict)  # tasks to submit, by model
    # Tasks to submit and their credits by variant axis and value: {"style": {"white": [n, c]}}.
    by_axis: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    unique_reference_files: int = 0
    reference_bytes: int = 0
    references_cached: int = 0
    remote_references: int = 0
    remote_downloaded: int = 0  # URL references whose bytes came down
    remote_not_modified: int = 0  # ... revalidated from the cache by a conditional GET
    unverified_rows: int = 0  # rows priced with a URL reference not fetched (--no-fetch)
    duration_seconds: tuple[float, float] = (0.0, 0.0)
    duration_basis: str = ""
    max_credits: int | None = None
    balance: int | None = None
    balance_error: str | None = None
    affordable: bool = True
    verdict: str = ""
    invalid_examples: list[str] = field(default_factory=list)
    # Which catalog priced the rows (source, location, fetched_at, age_seconds, description),
    # and the models the service charged differently in earlier runs (priced at its figure).
    catalog: dict[str, Any] = field(default_factory=dict)
    price_changes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _RowWriter:
    """Streams the per-row table (--out) as CSV or Parquet; with variants, one line per task,
    with its ``variant`` after the key."""

    def __init__(self, path: Path, variants: bool = False) -> None:
        self.schema = (
            ROW_SCHEMA if variants else ROW_SCHEMA.remove(ROW_SCHEMA.get_field_index("variant"))
        )
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise UsageError(
                "unsupported --out format", str(path), "use a .csv or .parquet file name"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, temp_beside(path)
        self.writer: Any = (
            pacsv.CSVWriter(str(self.tmp), self.schema)
            if suffix == ".csv"
            else pq.ParquetWriter(str(self.tmp), self.schema)
        )

    def write(self, plans: list[P.RowPlan]) -> None:
        cols: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        for p in plans:
            cols["row_number"].append(p.spec.row_number)
            cols["key"].append(p.spec.key)
            if "variant" in cols:
                cols["variant"].append(p.variant.id)
            cols["model"].append(p.spec.model)
            cols["decision"].append(_DECISION[p.action])
            cols["credits"].append(p.cost if p.action == P.SUBMIT else 0)
            cols["reason"].append(p.reason)
        self.writer.write_table(pa.table(cols, schema=self.schema))

    def close(self, complete: bool) -> None:
        """Close the table; a complete one replaces ``path`` (atomically), else it is dropped."""
        self.writer.close()
        if complete:
            commit(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def url_cache_path(journal: Path) -> Path:
    """Where estimates keep their verdicts on URL references: next to the journal."""
    return journal.with_name(journal.name.removesuffix(".sqlite") + ".urls.sqlite")


def estimate(
    settings: Settings,
    *,
    out: Path | None = None,
    catalog: Catalog | None = None,
    fetch: bool = True,
) -> Estimate:
    """Plan the job and price it; with ``fetch``, GET its URL references and judge them (the
    network here, with the catalog's one GET when ``catalog`` is not given; the balance is
    :func:`fetch_balance`)."""
    warnings: list[str] = []
    if catalog is None:
        catalog = load_catalog_sync(CatalogSource.of(settings), warn=warnings.append)
    journal = J.Journal(settings.journal, readonly=True) if settings.journal.exists() else None
    changes = observed_prices(journal, catalog)
    catalog = apply_observed(catalog, changes)
    distinct = KeySet()  # the references counted so far (on disk: any number of rows)
    files = remote = reference_bytes = cached = unverified = 0
    rows_by_model: Counter[str] = Counter()
    by_axis: dict[str, dict[str, list[int]]] = {}
    variants = not VariantMatrix.of(settings).empty
    writer = _RowWriter(out, variants) if out is not None else None
    checker = (
        UrlChecker(
            settings.base_url,
            UrlCache(url_cache_path(settings.journal)),
            concurrency=settings.download_concurrency,
        )
        if fetch
        else None
    )

    def on_plans(plans: list[P.RowPlan]) -> None:
        nonlocal files, remote, reference_bytes, cached, unverified
        sizes: dict[str, int] = {}
        urls: list[str] = []
        for p in plans:
            if p.action != P.SUBMIT:
                continue
            rows_by_model[p.spec.model or ""] += 1
            for axis, value in p.variant.axes:
                slot = by_axis.setdefault(axis, {}).setdefault(value, [0, 0])
                slot[0] += 1
                slot[1] += p.cost
            if p.ref is not None:
                if p.ref.sha256:
                    sizes[p.ref.sha256] = p.ref.size or 0
                else:
                    urls.append("url:" + p.ref.source)
                    unverified += checker is None
        new = distinct.add_new(list(sizes))
        files += len(new)
        reference_bytes += sum(sizes[sha] for sha in new)
        if journal is not None and new:
            cached += len(journal.cached_upload_shas(new))
        remote += len(distinct.add_new(urls))
        if writer is not None:
            writer.write(plans)

    complete = False
    try:
        scan = scan_manifest(
            settings, catalog, journal, 0, on_plans=on_plans, record=False, remote=checker
        )
        history = journal.durations(2000) if journal is not None else []
        rates = (
            [(r["summary"] or {}).get("request_rate") for r in journal.last_runs(10)]
            if journal is not None
            else []
        )
        complete = True
    finally:
        distinct.close()
        if checker is not None:
            checker.close()
        if writer is not None:
            writer.close(complete)
        if journal is not None:
            journal.close()
    est = Estimate(job_id=settings.job_id, max_credits=settings.max_credits)
    est.catalog = catalog.origin.as_dict(time.time())
    est.price_changes = [c.as_dict() for c in changes]
    est.warnings = warnings
    est.rows = scan.manifest_rows
    est.tasks = scan.rows
    est.by_axis = by_axis
    decisions: Counter[str] = Counter()
    for action, n in scan.actions.items():
        decisions[_DECISION[action]] += n
    est.decisions = dict(sorted(decisions.items()))
    est.credits = scan.cost_to_submit
    est.credits_by_model = dict(sorted(scan.cost_by_model.items()))
    est.rows_by_model = dict(sorted(rows_by_model.items()))
    est.unique_reference_files = files
    est.reference_bytes = reference_bytes
    est.references_cached = cached
    est.remote_references = remote
    est.unverified_rows = unverified
    if checker is not None:
        est.remote_downloaded = checker.downloaded
        est.remote_not_modified = checker.not_modified
    est.invalid_examples = scan.invalid_messages
    seen_rates = [r for r in rates if r]
    est.duration_seconds, est.duration_basis = duration_range(
        scan.actions[P.SUBMIT],
        files - cached + remote,
        [s for _, s in history],
        seen_rates,
        settings.rate,
    )
    return est


def duration_range(
    rows: int, uploads: int, latencies: list[float], rates: list[float], rate_cap: float | None
) -> tuple[tuple[float, float], str]:
    """A (low, high) wall-time range: requests over the request rate, plus task latency."""
    if rows == 0:
        return (0.0, 0.0), "nothing to submit"
    if rates:
        rate = statistics.median(rates)
        basis = f"request rate {rate:.1f}/s seen in past runs"
    else:
        rate = DEFAULT_RATE
        basis = f"no past runs: assumed {DEFAULT_RATE:g} requests/s"
    if rate_cap:
        rate = min(rate, rate_cap)
    if len(latencies) >= 5:
        q = statistics.quantiles(latencies, n=10)
        typical, slow = statistics.median(latencies), q[-1]
        basis += f", task latency median {typical:.1f}s / p90 {slow:.1f}s"
        basis += f" from {len(latencies)} past tasks"
    else:
        typical, slow = DEFAULT_LATENCY
        basis += f", assumed task latency {typical:g}-{slow:g}s"
    low = (rows * (1 + POLLS_PER_ROW[0]) + uploads) / rate + typical
    high = (rows * (1 + POLLS_PER_ROW[1]) + uploads) / rate + slow
    return (round(low, 1), round(high, 1)), basis


async def fetch_balance(settings: Settings) -> int:
    """The live balance: the only request an estimate makes (a GET)."""
    from batchgen.rivya.client import RivyaClient

    async with RivyaClient(settings.base_url, settings.api_key) as client:
        return await client.get_credits()


def judge(est: Estimate) -> int:
    """Set the verdict and return the exit code."""
    problems = []
    if est.max_credits is not None and est.credits > est.max_credits:
        problems.append(f"needs {est.credits} credits, over --max-credits {est.max_credits}")
    if est.balance is not None and est.credits > est.balance:
        problems.append(f"needs {est.credits} credits, the balance is {est.balance}")
    est.affordable = not problems
    invalid = est.decisions.get("invalid", 0)
    if problems:
        est.verdict = "NOT affordable: " + "; ".join(problems)
        return EXIT_STOPPED
    if est.balance is None:
        basis = (
            "no API key: balance not checked"
            if est.balance_error is None
            else f"balance not checked ({est.balance_error})"
        )
        est.verdict = (
            f"affordable within the cap ({basis})"
            if est.max_credits is not None
            else f"cost known ({basis})"
        )
    else:
        est.verdict = f"affordable: balance {est.balance} covers {est.credits}"
    if est.unverified_rows:
        est.verdict += (
            f"; total unverified: {est.unverified_rows} rows have URL references not fetched"
            " (--no-fetch)"
        )
    if invalid:
        unit = "tasks" if est.tasks != est.rows else "rows"
        est.verdict += f"; {invalid} invalid {unit} will not be sent"
        return EXIT_ROWS_FAILED
    return EXIT_OK


def render(est: Estimate) -> str:
    """The readable table printed on stdout."""
    lo, hi = est.duration_seconds
    counted = "rows" if not est.by_axis and est.tasks == est.rows else "tasks"
    head = f"Estimate for job {est.job_id}: {est.rows} rows"
    lines = [head + (f", {est.tasks} tasks" if counted == "tasks" else "")]
    for name in ("would_submit", "in_flight", "skip", "invalid"):
        lines.append(f"  {name:<14}{est.decisions.get(name, 0):>10}")
    lines.append("")
    lines.append(f"  {'model':<20}{counted:>8}{'credits':>10}")
    for model, credits in est.credits_by_model.items():
        lines.append(f"  {model:<20}{est.rows_by_model.get(model, 0):>8}{credits:>10}")
    total = f"  {'total':<20}{est.decisions.get('would_submit', 0):>8}{est.credits:>10}"
    lines.append(total + ("  (unverified)" if est.unverified_rows else ""))
    for axis, values in est.by_axis.items():
        lines.append("")
        lines.append(f"  {axis:<20}{'tasks':>8}{'credits':>10}")
        for value, (n, credits) in values.items():
            lines.append(f"  {value:<20}{n:>8}{credits:>10}")
    lines.append("")
    lines.append(
        f"  uploads: {est.unique_reference_files} unique local files, "
        f"{est.reference_bytes:,} bytes, "
        f"{est.references_cached} already uploaded; {est.remote_references} remote URLs"
    )
    if est.unverified_rows:
        lines.append(
            f"  unverified: {est.unverified_rows} rows have URL references not fetched"
            " (--no-fetch): they are priced as if their references were valid"
        )
    elif est.remote_downloaded or est.remote_not_modified:
        lines.append(
            f"  URL references checked: {est.remote_downloaded} downloaded, "
            f"{est.remote_not_modified} unchanged since the last estimate"
        )
    lines.append(f"  duration: {_hms(lo)} to {_hms(hi)} ({est.duration_basis})")
    if est.catalog:
        lines.append(f"  catalog: {est.catalog['description']}")
    for change in est.price_changes:
        lines.append(
            f"  price changed: {change['model']} costs {change['server_credits']} credits per task"
            f" (the service reserved it on {change['seen_at']}; the catalog says "
            f"{change['catalog_credits']}): priced at {change['server_credits']}"
        )
    if est.max_credits is not None:
        lines.append(f"  --max-credits: {est.max_credits}")
    if est.balance is not None:
        lines.append(f"  balance: {est.balance}")
    for example in est.invalid_examples:
        lines.append(f"  invalid {example}")
    lines.append(est.verdict)
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def run_estimate(
    settings: Settings,
    *,
    as_json: bool,
    out: Path | None,
    fetch: bool = True,
    catalog: Catalog | None = None,
) -> int:
    """The CLI's estimate: print the table (or JSON) and return the exit code."""
    import click

    est = estimate(settings, out=out, fetch=fetch, catalog=catalog)
    for warning in est.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if settings.api_key is not None and not settings.simulate:
        try:
            est.balance = asyncio.run(fetch_balance(settings))
        except BatchgenError as exc:
            est.balance_error = str(exc)
    code = judge(est)
    if as_json:
        click.echo(json.dumps(asdict(est), indent=2))
    else:
        click.echo(render(est))
    return code
