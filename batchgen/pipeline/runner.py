"""``batchgen run``: lock the job, scan the manifest into the journal, check the cost, then drive
the engine to the end and write the output table from the journal.

Exit codes (README.md): 0 every row succeeded; 1 some rows failed, were invalid or are unfinished;
2 bad usage (raised as UsageError before anything is sent); 3 the run stopped early (auth, credits,
not affordable); 4 another run of the job holds the lock; 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchgen import journal as J
from batchgen.catalog import Catalog
from batchgen.config import Settings
from batchgen.control import PollScheduler, RequestBudget
from batchgen.errors import AuthError, UsageError
from batchgen.lock import JobLock
from batchgen.manifest import Manifest
from batchgen.output import write_output
from batchgen.pipeline import plan as P
from batchgen.pipeline.engine import STOP_AUTH, STOP_CREDITS, STOP_SIGNAL, CreditGovernor, Engine
from batchgen.pipeline.upload import Uploader
from batchgen.progress import Reporter

if TYPE_CHECKING:
    from batchgen.client import RivyaClient
    from batchgen.pipeline.remote import UrlChecker

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


@dataclass
class ScanResult:
    """What the scan found: rows by decision, and the credits the rows to submit will reserve."""

    actions: Counter[str] = field(default_factory=Counter)
    cost_to_submit: int = 0
    cost_by_model: Counter[str] = field(default_factory=Counter)
    references: int = 0  # distinct reference files (or URLs) of the rows to submit
    invalid_messages: list[str] = field(default_factory=list)
    retried: int = 0  # rows that failed before and are sent again (--retry-failed, or changed)
    retried_cost: int = 0
    # The id the rows of this scan carry in the journal (``rows.seen_run``): the run's own id,
    # or the previous scan's when that costs fewer writes (see Journal.finish_scan).
    scan_id: int = 0

    @property
    def rows(self) -> int:
        return sum(self.actions.values())


@dataclass
class RunResult:
    exit_code: int
    outcome: str
    summary: dict[str, Any]
    totals: J.ScanTotals | None = None  # of the scan at the end, when the run counted them


def scan_manifest(
    settings: Settings,
    catalog: Catalog,
    journal: J.Journal | None,
    run_id: int,
    *,
    on_plans: Callable[[list[P.RowPlan]], None] | None = None,
    keep_invalid: int = 20,
    record: bool = True,
    remote: UrlChecker | None = None,
) -> ScanResult:
    """Plan every manifest row (streamed) against the journal; record the plans unless told not.

    Recording writes only what changed: a row the previous scan saw and whose journal row needs
    no change ("carried") is not written at all, so re-running a finished job of a million rows
    costs reads, not a rewrite of the journal.
    """
    manifest = Manifest.open(settings, catalog)
    planner = make_planner(settings, catalog, manifest, journal, remote=remote)
    result = ScanResult(scan_id=run_id)
    recorder = journal if record else None  # the journal the plans are written to, if any
    previous_scan = recorder.start_scan() if recorder is not None else None
    carried = 0
    distinct = P.KeySet()  # the references counted so far
    with closing(planner), closing(distinct):
        for batch in manifest.iter_raw_batches():
            plans = planner.plan_batch(batch)
            rows, extra, carried_keys, refs = [], [], [], []
            for plan in plans:
                result.actions[plan.action] += 1
                if plan.action == P.SUBMIT:
                    if plan.previous is not None and plan.previous["state"] == J.FAILED:
                        result.retried += 1
                        result.retried_cost += plan.cost
                    result.cost_to_submit += plan.cost
                    result.cost_by_model[plan.spec.model or ""] += plan.cost
                    if plan.ref is not None:
                        refs.append(plan.ref.sha256 or plan.ref.source)
                if (
                    plan.action in (P.INVALID, P.DUPLICATE)
                    and len(result.invalid_messages) < keep_invalid
                ):
                    result.invalid_messages.append(f"row {plan.spec.row_number}: {plan.reason}")
                if recorder is None:
                    continue
                if plan.action == P.DUPLICATE or (plan.action == P.INVALID and not plan.spec.key):
                    v = plan.violations[0]
                    extra.append(
                        {
                            "run_id": run_id,
                            "row_index": plan.spec.index,
                            "row_number": plan.spec.row_number,
                            "key": plan.spec.key,
                            "error_code": "duplicate_key"
                            if plan.action == P.DUPLICATE
                            else "invalid_input",
                            "error_field": v.field,
                            "error_message": plan.reason,
                            "passthrough": P.canonical_json(plan.spec.passthrough),
                        }
                    )
                    continue
                row = P.plan_to_row(plan, run_id)
                if (
                    len(row) == 2  # nothing to write but "seen"
                    and previous_scan is not None
                    and plan.previous is not None
                    and plan.previous["seen_run"] == previous_scan
                ):
                    carried_keys.append(row["key"])
                else:
                    rows.append(row)
            result.references += len(distinct.add_new(refs))
            if recorder is not None:
                with recorder.transaction():
                    recorder.upsert_rows(rows)
                    if extra:
                        recorder.add_extra_rows(extra)
                    recorder.carry(carried_keys)
                carried += len(carried_keys)
            if on_plans is not None:
                on_plans(plans)
    if recorder is not None:
        result.scan_id = recorder.finish_scan(run_id, previous_scan, carried)
    return result


def make_planner(
    settings: Settings,
    catalog: Catalog,
    manifest: Manifest,
    journal: J.Journal | None,
    *,
    fast: bool = True,
    remote: UrlChecker | None = None,
) -> P.Planner:
    """The planner of a scan; ``fast=False`` plans every row in full (what the fast path of a
    re-run must agree with); ``remote`` fetches and judges URL references (estimate)."""
    return P.Planner(
        catalog,
        base_dir=settings.manifest.parent,
        reference_column=settings.reference_column,
        prompt_field=(settings.prompt_column or "prompt") if not settings.template else "template",
        param_columns=settings.param_columns,
        id_column=settings.id_column,
        model_column=settings.model_column,
        journal=journal,
        retry_failed=settings.retry_failed,
        context=manifest.context() if fast else None,
        remote=remote,
    )


@asynccontextmanager
async def api_endpoint(settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    """The base URL and key to use: the real service, or an in-process simulator."""
    if not settings.simulate:
        yield settings.base_url, settings.api_key
        return
    from batchgen.sim import SimConfig, SimServer

    async with SimServer(SimConfig(**demo_sim_options())) as srv:
        yield srv.base_url, srv.api_key


def demo_sim_options() -> dict[str, Any]:
    """The embedded simulator's settings for ``--simulate``: quick, with a little realism."""
    return {"rate": 50.0, "latency": 1.5, "seed": 7}


def make_client(settings: Settings, base_url: str, api_key: Any) -> RivyaClient:
    from batchgen.client import RivyaClient  # here: a run with nothing to send never needs it
    from batchgen.share import AccountShare

    # Runs on this machine that drive the same account share its rate fairly (batchgen/share.py):
    # the folder is named by a keyed digest of the URL and key, never the key itself.
    key = api_key.reveal() if hasattr(api_key, "reveal") else str(api_key)
    budget = RequestBudget(
        max_in_flight=settings.max_requests_in_flight,
        max_rate=settings.rate,
        share=AccountShare.for_account(base_url, key),
    )
    return RivyaClient(
        base_url, api_key, budget=budget, max_connections=settings.max_requests_in_flight + 8
    )


async def run_job(
    settings: Settings, reporter: Reporter, *, catalog: Catalog | None = None
) -> RunResult:
    """Run a job to the end (or a stop). UsageError and LockHeld propagate to the CLI."""
    catalog = catalog or Catalog.default()
    Manifest.open(settings, catalog)  # bad manifest or columns: exit 2 before anything else
    if settings.api_key is None and not settings.simulate:
        raise UsageError(
            "no API key",
            settings.api_key_source,
            "set RIVYA_API_KEY or --api-key-file, or try the simulator with --simulate",
        )
    started = time.monotonic()
    with JobLock(settings.journal) as lock, J.Journal(settings.journal) as journal:
        if lock.previous_pid:
            reporter.emit(
                "lock_taken_over",
                message=f"a previous run (pid {lock.previous_pid}) ended without finishing;"
                " resuming its journal",
            )
        journal.set_meta("job_id", settings.job_id)
        run_id = journal.start_run(os.getpid(), "run")
        scan = scan_manifest(settings, catalog, journal, run_id)
        for message in scan.invalid_messages:
            reporter.emit("invalid", message=message, error_code="invalid_input")
        more = scan.actions[P.INVALID] + scan.actions[P.DUPLICATE] - len(scan.invalid_messages)
        if more > 0:
            reporter.emit(
                "invalid",
                message=f"... and {more} more invalid rows: see error_field and "
                f"error_message in {settings.output}",
            )
        if scan.actions[P.SUBMIT] or scan.actions[P.RESUME] or settings.download_dir:
            async with api_endpoint(settings) as (base_url, api_key):
                result = await _work(
                    settings, reporter, catalog, journal, run_id, scan, base_url, api_key
                )
        else:  # nothing to send: no client, not one request
            result = _completed(journal, scan)
        written = write_output(
            journal,
            settings.output,
            id_column=settings.id_column,
            passthrough=settings.passthrough,
            current_run=run_id,
        )
        summary = summarize(journal, run_id, scan, reporter, started, result.totals)
        http = result.summary.get("http")
        if http:
            summary["http"] = http
            # Requests per second over the run: estimates of later runs start from it.
            if summary["wall_seconds"] > 0 and sum(http["requests"].values()) >= 20:
                summary["request_rate"] = round(
                    sum(http["requests"].values()) / summary["wall_seconds"], 2
                )
        summary.update(
            outcome=result.outcome,
            output=str(settings.output),
            output_rows=written,
            exit_code=result.exit_code,
        )
        journal.finish_run(run_id, result.outcome, result.exit_code, summary)
        result.summary = summary
        return result


async def _work(
    settings: Settings,
    reporter: Reporter,
    catalog: Catalog,
    journal: J.Journal,
    run_id: int,
    scan: ScanResult,
    base_url: str,
    api_key: Any,
) -> RunResult:
    async with make_client(settings, base_url, api_key) as client:
        result = await _drive(settings, reporter, catalog, journal, run_id, scan, client)
        result.summary["http"] = client.stats.snapshot()
        return result


async def _drive(
    settings: Settings,
    reporter: Reporter,
    catalog: Catalog,
    journal: J.Journal,
    run_id: int,
    scan: ScanResult,
    client: RivyaClient,
) -> RunResult:
    to_submit = scan.actions[P.SUBMIT]
    to_resume = scan.actions[P.RESUME]
    if to_submit:
        try:
            balance = await client.get_credits()
        except AuthError as exc:
            reporter.emit(
                "fatal", message=f"{exc.code}: {exc.message} (fix {settings.api_key_source})"
            )
            return RunResult(EXIT_STOPPED, "auth_error", {})
        need = scan.cost_to_submit
        cap = settings.max_credits
        reporter.emit(
            "run_start",
            message=f"{to_submit} rows to submit ({need} credits), {to_resume} to resume;"
            f" balance {balance}",
        )
        if settings.retry_failed and scan.retried:
            reporter.emit(
                "run_start",
                message=f"--retry-failed: {scan.retried} rows that failed before are resubmitted"
                f" as new tasks ({scan.retried_cost} credits)",
            )
        if not settings.allow_partial and (need > balance or (cap is not None and need > cap)):
            limit = f"the balance is {balance}" if need > balance else f"--max-credits is {cap}"
            reporter.emit(
                "stop",
                message=f"this run needs {need} credits and {limit}: top up, raise the cap,"
                " or pass --allow-partial",
            )
            _block_rest(
                journal, scan.scan_id, "not_affordable", f"the run needs {need} credits; {limit}"
            )
            return RunResult(EXIT_STOPPED, "not_affordable", {})
    scheduler = PollScheduler(first=settings.poll_first, interval=settings.poll_interval)
    for model, seconds in journal.durations(500):
        scheduler.observe(model or "", seconds)
    uploader = Uploader(
        client,
        journal,
        catalog,
        base_dir=settings.manifest.parent,
        concurrency=settings.upload_concurrency,
        column=settings.reference_column or "reference",
        on_upload=lambda up: reporter.emit("uploaded", sha256=up.sha256, file_id=up.file_id),
    )
    downloader = None
    if settings.download_dir is not None:
        from batchgen.download import Downloader

        downloader = Downloader(
            client,
            journal,
            settings.download_dir,
            concurrency=settings.download_concurrency,
            emit=reporter.emit,
        )
        reporter.watch_downloads(lambda: downloader.pending if downloader is not None else 0)
    engine = Engine(
        job_id=settings.job_id,
        run_id=run_id,
        journal=journal,
        client=client,
        uploader=uploader,
        scheduler=scheduler,
        governor=CreditGovernor(settings.max_credits),
        max_tasks_in_flight=settings.max_tasks_in_flight,
        max_polls_in_flight=settings.max_requests_in_flight,
        task_timeout=settings.task_timeout,
        emit=reporter.emit,
        on_success=downloader.enqueue if downloader is not None else None,
    )
    reporter.begin(to_submit, to_resume, uploads=scan.references)
    got_signal: list[int] = []
    with _signals(engine, got_signal):
        try:
            if downloader is not None:  # results of earlier runs not on disk yet
                downloader.start()
                downloader.feed(journal.iter_scan(scan.scan_id, states=(J.SUCCEEDED,)))
            # The scan counted the rows in each state: skip the queries that would find none.
            await engine.run(
                journal.iter_scan(scan.scan_id, states=J.IN_FLIGHT) if to_resume else iter(()),
                journal.iter_scan(scan.scan_id, states=J.TO_SUBMIT) if to_submit else iter(()),
            )
            if downloader is not None:
                await downloader.drain(until=lambda: engine.aborted)
        finally:
            if downloader is not None:
                await downloader.close()
            reporter.close()
    if got_signal:
        exit_code = EXIT_SIGINT if got_signal[0] == signal.SIGINT else EXIT_SIGTERM
        return RunResult(exit_code, "interrupted", {})
    if engine.stop_reason in (STOP_AUTH, STOP_CREDITS):
        code = getattr(engine.stop_error, "code", engine.stop_reason)
        _block_rest(journal, scan.scan_id, code, "not submitted: the run stopped early")
        if engine.stop_reason == STOP_AUTH:
            reporter.emit("fatal", message=f"{engine.stop_error} (fix {settings.api_key_source})")
        else:
            reporter.emit(
                "fatal",
                message="insufficient credits: top up, then run the same command again to continue",
            )
        return RunResult(EXIT_STOPPED, engine.stop_reason, {})
    if reporter.errors.get("budget_reached"):
        reporter.emit(
            "stop",
            message="--max-credits reached: the remaining rows are blocked;"
            " raise the cap and run again",
        )
        return RunResult(EXIT_STOPPED, "budget_reached", {})
    return _completed(journal, scan)


def _completed(journal: J.Journal, scan: ScanResult) -> RunResult:
    """A run that went to the end: exit 0 when every row of the scan succeeded, else 1."""
    totals = journal.totals(scan.scan_id)
    ok = totals.by_state.get(J.SUCCEEDED, 0) == totals.rows
    return RunResult(EXIT_OK if ok else EXIT_ROWS_FAILED, "completed", {}, totals)


def _block_rest(journal: J.Journal, scan_id: int, code: str, message: str) -> None:
    journal.db.execute(
        "UPDATE rows SET state = ?, error_code = ?, error_message = ?, updated_at = ? "
        "WHERE seen_run = ? AND state IN ('pending', 'ready')",
        (J.BLOCKED, code, message, J.now_iso(), scan_id),
    )


class _signals:
    """SIGINT/SIGTERM: stop, keep the journal, write the output; a second SIGINT exits at once."""

    def __init__(self, engine: Engine, got: list[int]) -> None:
        self.engine = engine
        self.got = got
        self.loop = asyncio.get_running_loop()

    def __enter__(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._on, sig)

    def _on(self, sig: int) -> None:
        if self.got and sig == signal.SIGINT:
            os._exit(EXIT_SIGINT)  # every state change is already committed
        self.got.append(sig)
        self.engine.abort(STOP_SIGNAL)

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.remove_signal_handler(sig)


def summarize(
    journal: J.Journal,
    run_id: int,
    scan: ScanResult,
    reporter: Reporter,
    started: float,
    totals: J.ScanTotals | None = None,
) -> dict[str, Any]:
    totals = totals or journal.totals(scan.scan_id)
    downloads: dict[str, int] = dict(totals.downloads)
    done, failed = reporter.counts["downloaded"], reporter.counts["download_failed"]
    if done or failed or downloads["downloaded"] or downloads["failed"]:
        downloads.update(this_run=done, failed_this_run=failed)
    else:
        downloads = {}
    return {
        "run_id": run_id,
        "rows": totals.rows,
        "by_status": dict(sorted(totals.by_state.items())),
        "generated_this_run": reporter.counts["succeeded"],
        "kept": scan.actions[P.KEEP],
        "credits_reserved": totals.reserved,
        "credits_charged": totals.charged,
        "credits_charged_this_run": reporter.credits,
        "errors": dict(sorted(totals.errors.items())),
        "wall_seconds": round(time.monotonic() - started, 2),
        **({"downloads": downloads} if downloads else {}),
    }
