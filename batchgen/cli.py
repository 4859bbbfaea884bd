"""The command line: a thin click shell over the pipeline.

Data goes to stdout; progress, logs and warnings to stderr. Errors read
``Error: <what> (<where>): <how to fix>``. Exit codes are listed in README.md.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import click

from batchgen.errors import EXIT_LOCKED, EXIT_USAGE, BatchgenError, UsageError
from batchgen.job.catalog import Catalog
from batchgen.job.settings import Settings, resolve_settings
from batchgen.job.settings_table import DEFAULTS, DOC_BY_FIELD, SETTINGS_DOC
from batchgen.pipeline.progress import Reporter
from batchgen.store.lock import LockHeld
from batchgen.views.report_page import DEFAULT_THUMB

# Run flags come from the settings table, so the table, --help and README cannot drift apart:
# every flag's help ends with the table's default (tests/test_docs.py compares them, value by
# value). dry_run and retry_failed are added by the commands that have them, with their own text.
_SKIP_FLAGS = {"dry_run", "retry_failed"}
_BOOL_FIELDS = {"allow_partial", "retry_failed", "dry_run", "simulate", "quiet"}
_SHORT_FLAGS = {"quiet": "-q"}


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def setting_help(name: str, text: str | None = None) -> str:
    """Help of setting ``name``'s flag: ``text`` (default: its meaning), default, variable."""
    doc = DOC_BY_FIELD[name]
    env = f" [env: {doc.env}]" if doc.env else ""
    return f"{text or doc.meaning} Default: {doc.default}.{env}"


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per setting that has a flag (see settings_doc.SETTINGS_DOC)."""
    for doc in reversed(SETTINGS_DOC):
        if not doc.flag or not doc.flag.startswith("--") or doc.field in _SKIP_FLAGS:
            continue
        flag = doc.flag.split()[0]
        names = [n for n in (_SHORT_FLAGS.get(doc.field), flag) if n]
        if doc.field in _BOOL_FIELDS:
            option = click.option(
                *names, doc.field, is_flag=True, default=None, help=setting_help(doc.field)
            )
        elif doc.field in ("params", "variants"):
            option = click.option(
                *names,
                doc.field,
                multiple=True,
                metavar="KEY=VALUE" if doc.field == "params" else "KEY=V1,V2",
                help=setting_help(doc.field, doc.meaning + " Repeatable."),
            )
        else:
            option = click.option(
                *names, doc.field, default=None, metavar="VALUE", help=setting_help(doc.field)
            )
        func = option(func)
    return func


def resolve(
    job: str | None,
    flags: dict[str, Any],
    *,
    catalog: Catalog | None = None,
    check_models: bool = False,
) -> Settings:
    """Settings from the job file, flags and environment; a user's mistake exits 2 with one line.

    Model ids and param keys are checked against ``catalog`` only with ``check_models``."""
    params = flags.pop("params", None)
    if params:
        table = {}
        for item in params:
            if "=" not in item:
                _fail(
                    f"--param expects KEY=VALUE (--param {item}): write e.g. --param output_format=jpeg"
                )
            k, v = item.split("=", 1)
            table[k.strip()] = v.strip()
        flags["params"] = table
    if job is not None and not Path(job).exists():
        _fail(
            f"job file not found ({job}): give the path of a .toml job file, e.g. jobs/sample.toml"
        )
    try:
        return resolve_settings(
            Path(job) if job else None,
            flags,
            os.environ,
            catalog=catalog,
            check_models=check_models,
        )
    except UsageError as exc:
        _fail(str(exc))
        raise AssertionError from exc  # unreachable


def resolve_with_catalog(
    job: str | None, flags: dict[str, Any], warn: Callable[[str], None] | None = None
) -> tuple[Settings, Catalog]:
    """Settings checked against the catalog the job's settings name (pinned file, fresh cache,
    the service's ``GET /models``, then the fallbacks): one request at most."""
    from batchgen.job.manifest import Manifest
    from batchgen.pipeline.catalog_fetch import CatalogSource, load_catalog_sync

    first = resolve(job, dict(flags))
    try:
        # A missing manifest or column is told before any request, the catalog's included.
        Manifest.open(first, Catalog.default())
        catalog = load_catalog_sync(CatalogSource.of(first), warn=warn or make_reporter(first).warn)
    except UsageError as exc:
        _fail(str(exc))
        raise AssertionError from exc  # unreachable
    return resolve(job, flags, catalog=catalog, check_models=True), catalog


def make_reporter(settings: Settings) -> Reporter:
    return Reporter(
        mode=settings.progress,
        log_format=settings.log_format,
        quiet=settings.quiet,
        status_interval=settings.status_interval,
    )


class _Commands(click.Group):
    """The commands; ``sim`` is imported when it is used or listed, as it pulls in aiohttp's
    server, which no other command needs at start."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {"sim": ("batchgen.sim.cli", "sim_command")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="batchgen")
def main() -> None:
    """Batch image generation through the Rivya Public API v1.

    \b
    Example:
      batchgen run jobs/sample.toml --simulate
    """


@main.command()
@click.argument("job", required=False)
@settings_options
@click.option(
    "--dry-run",
    "dry_run",
    is_flag=True,
    default=None,
    help=setting_help("dry_run", "Same as `batchgen estimate`: validate and price, send nothing."),
)
@click.option(
    "--retry-failed",
    "retry_failed",
    is_flag=True,
    default=None,
    help=setting_help(
        "retry_failed", "Resubmit rows that failed in earlier runs (new tasks: costs credits)."
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--download",
    "download_alias",
    default=None,
    metavar="DIR",
    help="Same as --download-dir: save each result image into DIR right after it succeeds.",
)
def run(job: str | None, as_json: bool, download_alias: str | None, **flags: Any) -> None:
    """Run a job: manifest in, results table out, resumable at any point.

    \b
    Example:
      batchgen run jobs/sample.toml --simulate
      RIVYA_API_KEY=rvya_sk_... batchgen run jobs/catalog.toml --max-credits 5000
    """
    if download_alias is not None and flags.get("download_dir") is None:
        flags["download_dir"] = download_alias
    settings, catalog = resolve_with_catalog(job, flags)
    if settings.dry_run:
        from batchgen.views.estimate import run_estimate

        sys.exit(run_estimate(settings, as_json=as_json, out=None, catalog=catalog))
    from batchgen.pipeline.runner import Terminated, run_job

    reporter = make_reporter(settings)
    try:
        result = asyncio.run(run_job(settings, reporter, catalog=catalog))
    except LockHeld as exc:
        _fail(str(exc), EXIT_LOCKED)
        return
    except UsageError as exc:
        _fail(str(exc))
        return
    except BatchgenError as exc:
        _fail(str(exc), 3)
        return
    except Terminated:
        sys.exit(143)  # the journal and the run's record are closed
    except KeyboardInterrupt:
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2, sort_keys=True))
    elif not settings.quiet:
        click.echo(format_summary(result.summary), err=True)
    sys.exit(result.exit_code)


@main.command()
@click.argument("job", required=False)
@settings_options
@click.option(
    "--retry-failed",
    "retry_failed",
    is_flag=True,
    default=None,
    help=setting_help("retry_failed", "Price resubmitting rows that failed before."),
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON on stdout.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a per-row table (.csv or .parquet): would_submit / skip / invalid, credits, reason.",
)
@click.option(
    "--no-fetch",
    "no_fetch",
    is_flag=True,
    help="Do not GET URL references to check them: the total is then unverified.",
)
def estimate(
    job: str | None, as_json: bool, out: Path | None, no_fetch: bool, **flags: Any
) -> None:
    """Price a job exactly and find every invalid row, spending nothing.

    Sends no POST: no upload, no task. GETs the model catalog (public, no key; not while the
    cached one is fresh) and URL references (capped at the model's size limit, cached next to
    the journal), checking them as a run will, unless --no-fetch; with an API key it also reads
    the balance. Nothing else leaves the machine.
    Exit 0 affordable and valid, 1 some rows invalid, 3 not affordable, 2 bad usage.

    \b
    Example:
      batchgen estimate jobs/sample.toml --max-credits 100
    """
    from batchgen.views.estimate import run_estimate

    settings, catalog = resolve_with_catalog(job, flags)
    try:
        sys.exit(
            run_estimate(settings, as_json=as_json, out=out, fetch=not no_fetch, catalog=catalog)
        )
    except UsageError as exc:
        _fail(str(exc))


def _journal_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--journal",
        "journal",
        default=None,
        metavar="PATH",
        help="The job's journal (default: from the job file).",
    )(func)
    return click.option(
        "--output",
        "output",
        default=None,
        metavar="PATH",
        help="The job's output table (default: from the job file).",
    )(func)


@main.command()
@click.argument("job", required=False)
@_journal_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def status(job: str | None, as_json: bool, **flags: Any) -> None:
    """Show a job's rows by state, credits, and its last runs (safe during a run).

    \b
    Example:
      batchgen status jobs/sample.toml --json
    """
    from batchgen.views.status import format_status, job_status

    settings = resolve(job, flags)
    try:
        s = job_status(settings)
    except UsageError as exc:
        _fail(str(exc))
        return
    click.echo(json.dumps(s, indent=2) if as_json else format_status(s))


@main.command()
@click.argument("job", required=False)
@_journal_options
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File to write (.csv or .parquet).",
)
def export(job: str | None, out: Path, **flags: Any) -> None:
    """Write the output table from the journal, at any time (even mid-run).

    \b
    Example:
      batchgen export jobs/sample.toml --out results.parquet
    """
    from batchgen.views.status import export as do_export

    settings = resolve(job, flags)
    try:
        n = do_export(settings, out)
    except UsageError as exc:
        _fail(str(exc))
        return
    click.echo(f"wrote {n} rows to {out}", err=True)


@main.command()
@click.argument("job", required=False)
@_journal_options
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="HTML file to write.",
)
@click.option(
    "--thumb-size",
    "thumb_size",
    type=click.IntRange(32, 512),
    default=DEFAULT_THUMB,
    show_default=True,
    help="Thumbnail size, pixels.",
)
@click.option(
    "--no-fetch", "no_fetch", is_flag=True, help="Never fetch the URLs of results not downloaded."
)
def report(job: str | None, out: Path, thumb_size: int, no_fetch: bool, **flags: Any) -> None:
    """Write a self-contained HTML report: summary and a filterable gallery (safe during a run).

    \b
    Example:
      batchgen report jobs/sample.toml --out report.html
    """
    from batchgen.views.report import write_report

    settings = resolve(job, flags)
    try:
        stats = asyncio.run(write_report(settings, out, thumb_px=thumb_size, fetch=not no_fetch))
    except UsageError as exc:
        _fail(str(exc))
        return
    click.echo(
        f"wrote {out}: {stats.rows} rows, {stats.thumbs} thumbnails, "
        f"{stats.placeholders} placeholders, {stats.bytes / 1e6:.1f} MB in {stats.seconds:.1f}s",
        err=True,
    )


@main.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON on stdout.")
@click.option(
    "--refresh", is_flag=True, help="Ask the service now, even if the cached catalog is fresh."
)
@click.option(
    "--catalog",
    "catalog_file",
    default=None,
    metavar="FILE",
    envvar="BATCHGEN_CATALOG",
    help="Show this catalog file instead. [env: BATCHGEN_CATALOG]",
)
@click.option(
    "--base-url",
    default=DEFAULTS["base_url"],
    metavar="URL",
    envvar=["BATCHGEN_BASE_URL", "RIVYA_BASE_URL"],
    help=f"API base URL. Default: {DEFAULTS['base_url']}. [env: BATCHGEN_BASE_URL, RIVYA_BASE_URL]",
)
@click.option(
    "--catalog-max-age",
    type=click.FloatRange(min=0),
    default=DEFAULTS["catalog_max_age"],
    envvar="BATCHGEN_CATALOG_MAX_AGE",
    help=setting_help("catalog_max_age"),
)
@click.option(
    "--cache-dir",
    default=None,
    metavar="DIR",
    envvar="BATCHGEN_CACHE_DIR",
    help=setting_help("cache_dir"),
)
def models(
    model: str | None,
    as_json: bool,
    refresh: bool,
    catalog_file: str | None,
    base_url: str,
    catalog_max_age: float,
    cache_dir: str | None,
) -> None:
    """List the models: credits, billing, prompt limit, params and reference rules.

    The catalog is the one run and estimate use: the service's GET /api/v1/models (no key),
    cached for --catalog-max-age hours, else the last cache, else the copy shipped with batchgen.
    Name a model to see all of its params.

    \b
    Example:
      batchgen models
      batchgen models qwen2-image --json
    """
    from batchgen.job.settings import default_cache_dir
    from batchgen.pipeline.catalog_fetch import CatalogSource, load_catalog_sync
    from batchgen.views.models import models_json, render_model, render_table

    base = base_url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        _fail(f"base URL {base!r} is not an http(s) URL (--base-url): use e.g. https://rivya.ai")
    source = CatalogSource(
        base_url=base,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else default_cache_dir(),
        max_age_hours=catalog_max_age,
        pinned=Path(catalog_file).expanduser() if catalog_file else None,
    )
    try:
        catalog = load_catalog_sync(
            source, warn=lambda m: click.echo(f"Warning: {m}", err=True), refresh=refresh
        )
    except UsageError as exc:
        _fail(str(exc))
        return
    if model is not None and catalog.get(model) is None:
        import difflib

        close = difflib.get_close_matches(model, catalog.ids(), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        _fail(
            f"unknown model {model!r} (batchgen models {model}): {hint}"
            f"models are: {', '.join(catalog.ids())}"
        )
    if as_json:
        click.echo(json.dumps(models_json(catalog, model), indent=2))
    elif model is not None:
        click.echo(render_model(catalog, model))
    else:
        click.echo(render_table(catalog))


def format_summary(s: dict[str, Any]) -> str:
    """The end-of-run summary, for people."""
    counted = f"{s.get('rows', 0)} rows"
    if s.get("tasks") is not None:
        counted = f"{s.get('manifest_rows', 0)} rows, {s['tasks']} tasks"
    lines = [
        f"batchgen: {s.get('outcome', '?')} in {s.get('wall_seconds', 0):.1f}s, {counted}",
        "  by status: " + ", ".join(f"{k} {v}" for k, v in s.get("by_status", {}).items()),
        f"  generated this run {s.get('generated_this_run', 0)}, kept from earlier runs {s.get('kept', 0)}",
        f"  credits: reserved {s.get('credits_reserved', 0)}, charged {s.get('credits_charged', 0)} "
        f"({s.get('credits_charged_this_run', 0)} this run)",
    ]
    if s.get("errors"):
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in s["errors"].items()))
    if s.get("downloads"):
        d = s["downloads"]
        lines.append(
            f"  downloads: {d['downloaded']} on disk ({d['bytes'] / 1e6:.1f} MB), "
            f"{d['failed']} failed, {d['missing']} missing ({d.get('this_run', 0)} this run)"
        )
    if s.get("catalog"):
        lines.append(f"  catalog: {s['catalog']['description']}")
    for change in s.get("price_changes") or []:
        lines.append(
            f"  price: {change['model']} reserved {change['server_credits']} credits per task"
            f" by the service, {change['catalog_credits']} in the catalog"
        )
    lines.append(f"  output: {s.get('output')}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
