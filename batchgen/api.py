"""The Python API: :func:`run`, :func:`arun`, :func:`estimate` and :func:`status`.

The same settings as the job file, as keywords named after the first column of the settings
table (``output``, ``max_credits``, ``id_column``, ``params``, ...), with the same validation:
flag-level keywords win over the environment, which wins over the job file. A user's mistake
raises :class:`~batchgen.errors.UsageError` before anything is sent; a row's problem is in the
result table, never raised.

Works from any thread and inside a running event loop (a notebook): the run gets an event loop
of its own, in a helper thread when the calling thread already runs one. Signal handlers are
the CLI's business; the library installs none, and prints nothing (events go to the
``batchgen`` logger).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from batchgen.errors import UsageError
from batchgen.job.coerce import suggest

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from batchgen.job.catalog import Catalog
    from batchgen.job.settings import Settings

T = TypeVar("T")

# Settings every keyword may name; ``dry_run`` is estimate(), and a table is not a keyword.
_NOT_KEYWORDS = frozenset({"manifest_table", "manifest"})


@dataclass(frozen=True)
class Result:
    """What a run gives back: the output table, the ``--json`` summary and the exit code.

    ``exit_code`` is the CLI's (README, "Exit codes"): 0 every row succeeded, 1 some rows failed,
    were invalid or are unfinished, 3 the run stopped early, 4 another run holds the job's lock.
    """

    table: pa.Table = field(repr=False)
    summary: dict[str, Any]
    exit_code: int

    @property
    def ok(self) -> bool:
        """Every row succeeded."""
        return self.exit_code == 0

    def to_pandas(self) -> pd.DataFrame:
        """The output table as a pandas DataFrame (integer columns as nullable ``Int64``)."""
        frame: pd.DataFrame = self.table.to_pandas()
        return frame


@dataclass(frozen=True)
class EstimateResult:
    """What an estimate gives back: the ``estimate --json`` figures and the exit code
    (0 affordable and valid, 1 some rows invalid, 3 not affordable)."""

    summary: dict[str, Any]
    exit_code: int

    @property
    def credits(self) -> int:
        """Credits the rows to submit would reserve."""
        return int(self.summary["credits"])


def _valid_keywords() -> list[str]:
    from batchgen.job.settings import _FLAG_NAMES

    return sorted(_FLAG_NAMES - _NOT_KEYWORDS)


def _as_table(manifest: Any) -> pa.Table | None:
    """A DataFrame or Arrow table as an Arrow table; None for a path."""
    import pyarrow as pa

    if isinstance(manifest, pa.Table):
        return manifest
    if isinstance(manifest, pa.RecordBatch):
        return pa.Table.from_batches([manifest])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return None
    if isinstance(manifest, pd.DataFrame):
        frame = manifest.rename(columns=str)
        # A named index (df.set_index("sku")) stays a column; a plain RangeIndex is dropped.
        return pa.Table.from_pandas(frame, preserve_index=None)
    return None


def resolve(
    job: str | os.PathLike[str] | None,
    *,
    manifest: Any = None,
    env: Mapping[str, str] | None = None,
    keywords: Mapping[str, Any],
    function: str = "run",
    catalog: Catalog | None = None,
    check_models: bool = False,
) -> Settings:
    """Settings from a job file, a manifest (path, URL, DataFrame or Arrow table), keywords and
    the environment (``os.environ`` unless ``env`` is given). Model ids and param keys are
    checked against ``catalog`` only with ``check_models`` (see :func:`resolve_with_catalog`)."""
    from batchgen.job.settings import resolve_settings

    valid = _valid_keywords()
    for name in keywords:
        if name not in valid:
            raise UsageError(
                f"unknown setting {name!r}",
                f"batchgen.{function}({name}=...)",
                suggest(name, valid, "settings are"),
            )
    flags: dict[str, Any] = {k: v for k, v in keywords.items() if v is not None}
    if manifest is not None:
        table = _as_table(manifest)
        if table is not None:
            flags["manifest_table"] = table
        elif isinstance(manifest, str | os.PathLike):
            if str(manifest) == "-":
                raise UsageError(
                    "the Python API does not read standard input",
                    f"batchgen.{function}(manifest='-')",
                    "pass a path, a URL, a pandas.DataFrame or a pyarrow.Table",
                )
            flags["manifest"] = os.fspath(manifest)
        else:
            raise UsageError(
                f"manifest must be a path, a URL, a pandas.DataFrame or a pyarrow.Table, not"
                f" {type(manifest).__name__}",
                f"batchgen.{function}(manifest=...)",
                "pass one of those",
            )
    if job is not None and not Path(job).exists():
        raise UsageError(
            "job file not found",
            str(job),
            "give the path of a .toml job file, e.g. jobs/sample.toml",
        )
    return resolve_settings(
        Path(job) if job is not None else None,
        flags,
        os.environ if env is None else env,
        keywords=True,
        catalog=catalog,
        check_models=check_models,
    )


def resolve_with_catalog(
    job: str | os.PathLike[str] | None,
    *,
    manifest: Any = None,
    env: Mapping[str, str] | None = None,
    keywords: Mapping[str, Any],
    function: str = "run",
) -> tuple[Settings, Catalog]:
    """Settings checked against the catalog the CLI would use (pinned file, fresh cache, the
    service's ``GET /models``, then the fallbacks, each said as a ``warning`` event), after the
    manifest's columns are checked. Runs an event loop: call it from a thread without one."""
    from batchgen.job.catalog import Catalog
    from batchgen.job.manifest import Manifest
    from batchgen.pipeline.catalog_fetch import CatalogSource, load_catalog_sync
    from batchgen.pipeline.progress import log_event

    given = {"manifest": manifest, "env": env, "keywords": keywords, "function": function}
    first = resolve(job, **given)
    Manifest.open(first, Catalog.default())  # a missing file or column: before any request
    catalog = load_catalog_sync(
        CatalogSource.of(first), warn=lambda m: log_event("warning", {"message": m})
    )
    return resolve(job, **given, catalog=catalog, check_models=True), catalog


def _in_own_loop(func: Callable[[], T]) -> T:
    """Call ``func`` (which runs event loops of its own) here, or in a helper thread when this
    thread already runs an event loop (Jupyter, an async framework)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if not running:  # (called outside the except block: the run must not see its exception)
        return func()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchgen") as pool:
        return pool.submit(func).result()


def _run_settings(settings: Settings, catalog: Catalog) -> Result:
    from batchgen.errors import EXIT_LOCKED
    from batchgen.job.variants import VariantMatrix
    from batchgen.pipeline.progress import Reporter
    from batchgen.pipeline.runner import run_job
    from batchgen.store import journal as J
    from batchgen.store.lock import LockHeld
    from batchgen.store.output import output_table

    reporter = Reporter(
        mode=settings.progress if settings.progress == "bar" else "lines",
        quiet=settings.quiet,
        status_interval=settings.status_interval,
        job_id=settings.job_id,
    )
    try:
        outcome = asyncio.run(run_job(settings, reporter, catalog=catalog))
    except LockHeld as exc:
        summary = {"outcome": "locked", "message": str(exc), "exit_code": EXIT_LOCKED}
        run_id, code = None, EXIT_LOCKED
    else:
        summary, run_id, code = outcome.summary, outcome.summary.get("run_id"), outcome.exit_code
    with J.Journal(settings.journal, readonly=True) as journal:
        table = output_table(
            journal,
            id_column=settings.id_column,
            passthrough=settings.passthrough,
            current_run=run_id,
            axes=VariantMatrix.of(settings).axes(),
        )
    return Result(table=table, summary=summary, exit_code=code)


def run(
    job: str | os.PathLike[str] | None = None,
    *,
    manifest: Any = None,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Result:
    """Run a job to the end and return its :class:`Result`.

    ``job`` is a job file (optional); ``manifest`` a path, a URL (``s3://...``), a
    ``pandas.DataFrame`` or a ``pyarrow.Table`` (read in batches of ``batch_size`` rows). Every
    other setting is a keyword (``model="qwen-image"``, ``output="out/results.parquet"``,
    ``max_credits=500``, ``simulate=True`` for an in-process simulator). Raises
    :class:`~batchgen.errors.UsageError` for a mistake in the settings or the manifest's
    columns, before anything is sent.

    Example::

        result = batchgen.run(manifest=df, job_id="spring", model="qwen-image", simulate=True)
        result.to_pandas()
    """
    if settings.get("dry_run"):
        raise UsageError(
            "dry_run is not a keyword of run()",
            "batchgen.run(dry_run=...)",
            "call estimate() instead",
        )

    def go() -> Result:
        resolved, catalog = resolve_with_catalog(
            job, manifest=manifest, env=env, keywords=settings, function="run"
        )
        return _run_settings(resolved, catalog)

    return _in_own_loop(go)


async def arun(
    job: str | os.PathLike[str] | None = None,
    *,
    manifest: Any = None,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Result:
    """:func:`run` for async code: the job runs in a worker thread with its own event loop, so
    the caller's loop stays free. The same arguments and result.

    Cancelling the awaiting task does not stop the run in its thread (it goes on to the end, and
    the journal keeps everything); stop a job with ``max_credits`` or from the CLI with Ctrl-C.
    """
    return await asyncio.to_thread(run, job, manifest=manifest, env=env, **settings)


def estimate(
    job: str | os.PathLike[str] | None = None,
    *,
    manifest: Any = None,
    env: Mapping[str, str] | None = None,
    fetch: bool = True,
    out: str | os.PathLike[str] | None = None,
    **settings: Any,
) -> EstimateResult:
    """Price a job exactly and find every invalid row, spending nothing (``batchgen estimate``).

    ``fetch=False`` skips GETting URL references; ``out`` writes the per-row plan table.
    """
    from dataclasses import asdict

    from batchgen.views.estimate import price

    def go() -> EstimateResult:
        resolved, catalog = resolve_with_catalog(
            job, manifest=manifest, env=env, keywords=settings, function="estimate"
        )
        path = Path(out) if out is not None else None
        est, code = price(resolved, out=path, fetch=fetch, catalog=catalog)
        return EstimateResult(summary=asdict(est), exit_code=code)

    return _in_own_loop(go)


def status(
    job: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A job's rows by state, credits and last runs, as ``batchgen status --json`` (safe while
    a run is going on). Raises UsageError when the job has never run."""
    from batchgen.views.status import job_status

    resolved = resolve(job, env=env, keywords=settings, function="status")
    return job_status(resolved)
