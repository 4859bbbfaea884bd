"""``batchgen run``: lock the job, scan the manifest into the journal, check the cost, then drive
the engine to the end and write the output table from the journal.

The exit codes (``EXIT_*``) are defined in :mod:`batchgen.errors`; a usage error is raised as
UsageError before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import (
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STOPPED,
    EXIT_USAGE,
    AuthError,
    BatchgenError,
    UsageError,
)
from batchgen.job.catalog import Catalog
from batchgen.job.manifest import Manifest
from batchgen.job.settings import Settings
from batchgen.job.variants import VariantMatrix
from batchgen.pipeline import plan as P
from batchgen.pipeline.catalog_fetch import CatalogSource, load_catalog
from batchgen.pipeline.engine import Engine
from batchgen.pipeline.inflight import CreditGovernor, InFlight
from batchgen.pipeline.polling import PollScheduler
from batchgen.pipeline.prices import (
    PriceBook,
    PriceChange,
    apply_observed,
    describe_change,
    observed_prices,
    remember,
)
from batchgen.pipeline.progress import Reporter
from batchgen.pipeline.runstate import STOP_AUTH, STOP_BUDGET, STOP_SIGNAL, RunState
from batchgen.pipeline.scan import ScanResult, scan_manifest
from batchgen.pipeline.upload import Uploader
from batchgen.rivya.budget import RequestBudget
from batchgen.store import journal as J
from batchgen.store.lock import JobLock
from batchgen.store.output import write_output

if TYPE_CHECKING:
    from batchgen.rivya.client import RivyaClient


@dataclass
class RunResult:
    exit_code: int
    outcome: str
    summary: dict[str, Any]
    totals: J.ScanTotals | None = None  # of the scan at the end, when the run counted them


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
    from batchgen.rivya.client import RivyaClient  # here: a run with nothing to send never needs it
    from batchgen.rivya.share import AccountShare

    # Runs on this machine that drive the same account share its rate fairly (batchgen/rivya/share.py):
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
    settings: Settings,
    reporter: Reporter,
    *,
    catalog: Catalog | None = None,
    handle_signals: bool = False,
) -> RunResult:
    """Run a job to the end (or a stop). UsageError and LockHeld propagate to the caller.

    The one entry point of the CLI and the Python API. ``handle_signals`` (the CLI, in the main
    thread) turns SIGINT/SIGTERM into a clean stop; the library never touches signals.
    Without ``catalog``, the catalog comes from the service, its cache or the shipped copy
    (pipeline.catalog_fetch); prices the service charged in earlier runs replace the catalog's.
    """
    if catalog is None:
        catalog = await load_catalog(CatalogSource.of(settings), warn=reporter.warn)
    manifest = Manifest.open(settings, catalog)  # bad manifest or columns: exit 2 first
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
        earlier = observed_prices(journal, catalog)
        for change in earlier:
            reporter.warn(
                describe_change(change) + f", seen on {change.as_dict()['seen_at']}: priced at "
                f"{change.server_credits}"
            )
        catalog = apply_observed(catalog, earlier)
        reporter.catalog = catalog.origin.short(time.time())
        run_id = journal.start_run(os.getpid(), "run")
        try:
            # The scan is synchronous: the loop cannot see a signal (the CLI's handlers only).
            with _terminated_raises() if handle_signals else contextlib.nullcontext():
                scan = scan_manifest(settings, catalog, journal, run_id, manifest=manifest)
            for message in scan.invalid_messages:
                reporter.emit("invalid", message=message, error_code="invalid_input")
            more = scan.actions[P.INVALID] + scan.actions[P.DUPLICATE] - len(scan.invalid_messages)
            if more > 0:
                reporter.emit(
                    "invalid",
                    message=f"... and {more} more invalid rows: see error_field and "
                    f"error_message in {settings.output}",
                )
            if scan.actions[P.SUBMIT] or scan.actions[P.RESUME] or settings.download_target:
                async with api_endpoint(settings) as (base_url, api_key):
                    result = await _work(
                        settings,
                        reporter,
                        catalog,
                        journal,
                        run_id,
                        scan,
                        base_url,
                        api_key,
                        handle_signals,
                    )
            else:  # nothing to send: no client, not one request
                result = _completed(journal, scan)
            written = write_output(
                journal,
                settings.output,
                id_column=settings.id_column,
                passthrough=settings.passthrough,
                current_run=run_id,
                axes=VariantMatrix.of(settings).axes(),
            )
            output_error = None
            if settings.output_url is not None:
                output_error = await asyncio.to_thread(
                    publish, settings.output, settings.output_url
                )
                if output_error is not None:
                    reporter.emit(
                        "fatal",
                        message=f"{output_error}; the table is at {settings.output}: fix the"
                        f" storage access, then batchgen export --out {settings.output_url}",
                    )
                    result.exit_code = max(result.exit_code, EXIT_STOPPED)
            summary = summarize(journal, run_id, scan, reporter, started, result.totals)
            summary["catalog"] = catalog.origin.as_dict(time.time())
            changes = result.summary.get("price_changes")
            if changes or earlier:
                summary["price_changes"] = changes or [c.as_dict() for c in earlier]
            http = result.summary.get("http")
            if http:
                summary["http"] = http
                # Requests per second over the run: estimates of later runs start from it.
                if summary["wall_seconds"] > 0 and sum(http["requests"].values()) >= 20:
                    summary["request_rate"] = round(
                        sum(http["requests"].values()) / summary["wall_seconds"], 2
                    )
            if output_error is not None:
                summary["output_error"] = output_error
            summary.update(
                outcome=result.outcome,
                output=str(settings.output)
                if output_error
                else settings.output_url or str(settings.output),
                output_rows=written,
                exit_code=result.exit_code,
            )
            journal.finish_run(run_id, result.outcome, result.exit_code, summary)
        except BaseException as exc:
            # Every exit path closes the run in the journal: `status` never shows a run that
            # ended as "not finished".
            outcome, code = exit_of(exc)
            journal.finish_run(
                run_id,
                outcome,
                code,
                {"run_id": run_id, "outcome": outcome, "exit_code": code, "error": describe(exc)},
            )
            raise
        result.summary = summary
        return result


class Terminated(BaseException):
    """SIGTERM arrived while the run was in synchronous code (the manifest scan)."""


@contextmanager
def _terminated_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (the run is closed, exit 143)."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_of(exc: BaseException) -> tuple[str, int]:
    """The outcome and exit code of a run that ended with ``exc`` (as the CLI exits)."""
    if isinstance(exc, UsageError):
        return "usage_error", EXIT_USAGE
    if isinstance(exc, Terminated):
        return "interrupted", EXIT_SIGTERM
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted", EXIT_SIGINT
    if isinstance(exc, BatchgenError):
        return "error", EXIT_STOPPED
    return "error", EXIT_ROWS_FAILED


def describe(exc: BaseException) -> str:
    """One line about ``exc`` for the run's summary (our errors never hold the API key)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


async def _work(
    settings: Settings,
    reporter: Reporter,
    catalog: Catalog,
    journal: J.Journal,
    run_id: int,
    scan: ScanResult,
    base_url: str,
    api_key: Any,
    handle_signals: bool = False,
) -> RunResult:
    async with make_client(settings, base_url, api_key) as client:
        changes: list[PriceChange] = []
        result = await _drive(
            settings, reporter, catalog, journal, run_id, scan, client, changes, handle_signals
        )
        result.summary["http"] = client.stats.snapshot()
        if changes:
            result.summary["price_changes"] = [c.as_dict() for c in changes]
        return result


async def _drive(
    settings: Settings,
    reporter: Reporter,
    catalog: Catalog,
    journal: J.Journal,
    run_id: int,
    scan: ScanResult,
    client: RivyaClient,
    changes: list[PriceChange],
    handle_signals: bool = False,
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
            journal.block_unsent(
                scan.scan_id, "not_affordable", f"the run needs {need} credits; {limit}"
            )
            return RunResult(EXIT_STOPPED, "not_affordable", {})
    inflight = InFlight()
    scheduler = PollScheduler(
        first=settings.poll_first, interval=settings.poll_interval, table=inflight.tasks
    )
    for model, seconds in journal.durations(500):
        scheduler.observe(model or "", seconds)
    uploader = Uploader(
        client,
        journal,
        catalog,
        base_dir=settings.base_dir,
        concurrency=settings.upload_concurrency,
        column=settings.reference_column or "reference",
        on_upload=lambda up: reporter.emit("uploaded", sha256=up.sha256, file_id=up.file_id),
    )
    downloader = None
    if settings.download_target is not None:
        from batchgen.pipeline.download import Downloader

        downloader = Downloader(
            client,
            journal,
            settings.download_target,
            concurrency=settings.download_concurrency,
            emit=reporter.emit,
        )
        reporter.watch_downloads(lambda: downloader.pending if downloader is not None else 0)

    def on_change(change: PriceChange) -> None:
        changes.append(change)
        remember(journal, change)
        reporter.warn(
            describe_change(change) + f": the rest of the run uses {change.server_credits}"
        )

    prices = PriceBook(
        catalog, strict=settings.max_credits is not None, on_change=on_change, clock=time.time
    )
    engine = Engine(
        job_id=settings.job_id,
        run_id=run_id,
        journal=journal,
        client=client,
        uploader=uploader,
        scheduler=scheduler,
        inflight=inflight,
        governor=CreditGovernor(settings.max_credits, inflight),
        state=RunState(),
        max_tasks_in_flight=settings.max_tasks_in_flight,
        max_polls_in_flight=settings.max_requests_in_flight,
        task_timeout=settings.task_timeout,
        emit=reporter.emit,
        on_success=downloader.enqueue if downloader is not None else None,
        prices=prices,
    )
    reporter.begin(to_submit, to_resume, uploads=scan.references)
    got_signal: list[int] = []
    with _signals(engine, got_signal) if handle_signals else contextlib.nullcontext():
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
                await downloader.drain(until=lambda: not engine.state.polling)
        finally:
            if downloader is not None:
                await downloader.close()
            reporter.close()
    if got_signal:
        exit_code = EXIT_SIGINT if got_signal[0] == signal.SIGINT else EXIT_SIGTERM
        return RunResult(exit_code, "interrupted", {})
    state = engine.state
    if state.stopped_early:
        reason = state.reason or STOP_AUTH
        if reason == STOP_BUDGET:
            journal.block_unsent(
                scan.scan_id, STOP_BUDGET, "not submitted: --max-credits would be exceeded"
            )
            reporter.emit(
                "stop",
                message="--max-credits reached: the remaining rows are blocked;"
                " raise the cap and run again",
            )
            return RunResult(EXIT_STOPPED, reason, {})
        code = getattr(state.error, "code", None) or reason
        journal.block_unsent(scan.scan_id, code, "not submitted: the run stopped early")
        if reason == STOP_AUTH:
            reporter.emit("fatal", message=f"{state.error} (fix {settings.api_key_source})")
        else:
            reporter.emit(
                "fatal",
                message="insufficient credits: top up, then run the same command again to continue",
            )
        return RunResult(EXIT_STOPPED, reason, {})
    return _completed(journal, scan)


def publish(local: Path, url: str) -> str | None:
    """Upload the output table written at ``local`` to its object-store URL; the reason it
    failed, or None."""
    from batchgen.errors import BatchgenError
    from batchgen.job import storage

    try:
        storage.upload(local, url)
    except BatchgenError as exc:
        return str(exc)
    return None


def _completed(journal: J.Journal, scan: ScanResult) -> RunResult:
    """A run that went to the end: exit 0 when every row of the scan succeeded, else 1."""
    totals = journal.totals(scan.scan_id)
    ok = totals.by_state.get(J.SUCCEEDED, 0) == totals.rows
    return RunResult(EXIT_OK if ok else EXIT_ROWS_FAILED, "completed", {}, totals)


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
    generated, charged = journal.run_results(run_id)
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
        "generated_this_run": generated,
        "kept": scan.actions[P.KEEP],
        "credits_reserved": totals.reserved,
        "credits_charged": totals.charged,
        "credits_charged_this_run": charged,
        "errors": dict(sorted(totals.errors.items())),
        "wall_seconds": round(time.monotonic() - started, 2),
        **({"downloads": downloads} if downloads else {}),
        # A job with variants counts tasks (``rows`` above); how many manifest rows they are:
        **(
            {"manifest_rows": scan.manifest_rows, "tasks": totals.rows}
            if scan.manifest_rows != scan.rows
            else {}
        ),
    }
