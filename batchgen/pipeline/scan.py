"""The scan: plan every manifest row against the journal, streamed in batches.

``run`` records the plans in the journal (what the engine then submits); ``estimate`` plans the
very same way without recording, so its figures are the run's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchgen.errors import UsageError
from batchgen.job.catalog import Catalog
from batchgen.job.manifest import Manifest
from batchgen.job.names import finish
from batchgen.job.settings import Settings
from batchgen.job.variants import VariantMatrix
from batchgen.pipeline import plan as P
from batchgen.store import journal as J
from batchgen.store.keyset import KeySet

if TYPE_CHECKING:
    from batchgen.pipeline.remote import UrlChecker


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
    manifest_rows: int = 0  # rows read (a row has one task per variant)
    # The id the rows of this scan carry in the journal (``rows.seen_run``): the run's own id,
    # or the previous scan's when that costs fewer writes (see Journal.finish_scan).
    scan_id: int = 0

    @property
    def rows(self) -> int:
        return sum(self.actions.values())


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
    manifest: Manifest | None = None,
) -> ScanResult:
    """Plan every manifest row (streamed) against the journal; record the plans unless told not.

    Recording writes only what changed: a row the previous scan saw and whose journal row needs
    no change ("carried") is not written at all, so re-running a finished job of a million rows
    costs reads, not a rewrite of the journal. ``manifest`` is the one the run already opened
    (a run opens its manifest once); without it the scan opens it.
    """
    if manifest is None:
        manifest = Manifest.open(settings, catalog)
    planner = make_planner(settings, catalog, manifest, journal, remote=remote)
    result = ScanResult(scan_id=run_id)
    recorder = journal if record else None  # the journal the plans are written to, if any
    previous_scan = recorder.start_scan() if recorder is not None else None
    carried = 0
    distinct = KeySet()  # the references counted so far
    taken_names = KeySet()  # the download names given so far (two tasks, one name: an error)
    names: list[tuple[str, P.RowPlan]] = []
    with closing(planner), closing(distinct), closing(taken_names):
        for batch in manifest.iter_raw_batches():
            plans = planner.plan_batch(batch)
            result.manifest_rows += len(batch)
            rows: list[dict[str, Any]] = []
            extra: list[dict[str, Any]] = []
            carried_keys: list[J.TaskRef] = []
            refs: list[str] = []
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
                    result.invalid_messages.append(f"{plan.where}: {plan.reason}")
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
                if plan.download_name is not None and plan.action != P.INVALID:
                    names.append((plan.download_name, plan))
                row = P.plan_to_row(plan, run_id)
                if (
                    len(row) == 3  # nothing to write but "seen"
                    and previous_scan is not None
                    and plan.previous is not None
                    and plan.previous["seen_run"] == previous_scan
                ):
                    carried_keys.append((row["key"], row["variant"]))
                else:
                    rows.append(row)
            result.references += len(distinct.add_new(refs))
            _check_names(names, taken_names, settings)
            names.clear()
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


def _check_names(names: list[tuple[str, P.RowPlan]], taken: KeySet, settings: Settings) -> None:
    """Download names must be unique: two tasks with one name is a usage error, found before
    anything is sent."""
    if not names:
        return
    seen: set[str] = set()
    clash = taken.present([n for n, _ in names])
    for name, plan in names:
        if name in clash or name in seen:
            where = settings.where("download_name")
            if settings.download_name is None:
                where = "output.download_name (default {key}/{variant}.{ext})"
            raise UsageError(
                f"two tasks get one download name {finish(name, 'ext')!r}"
                f" ({plan.where}, key {plan.row.key!r}, and an earlier one)",
                where,
                "put {key} and {variant} (or every variant axis) in the name template",
            )
        seen.add(name)
    taken.add(sorted(seen))


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
        job_id=settings.job_id,
        matrix=VariantMatrix.of(settings),
        download_name=settings.download_name,
        downloads=settings.download_dir is not None,
    )
