"""Preflight and planning: what each manifest row needs, decided offline.

``run`` and ``estimate`` share this module, so an estimate validates and prices rows exactly as a
run would. For every row it checks the catalog rules (model, prompt, params) and the reference
(exists, readable, kind and MIME by signature, size, count, and that an image decodes), computes
the content fingerprint and the credit cost, and compares with the journal to decide: submit,
resume polling, keep an earlier success, or record the row as invalid. (URL references are
fetched by a run when it submits; an estimate fetches them here, through ``remote``.)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.job import storage
from batchgen.job.catalog import Catalog, ReferenceInfo, Violation
from batchgen.job.filetypes import DECODABLE_IMAGES, image_problem, kind_of_mime, sniff_mime
from batchgen.job.manifest import RawRow, RowSpec
from batchgen.job.names import DEFAULT_VARIANT_NAME, NameTemplate, parse_download_name
from batchgen.job.references import is_url, resolve_reference
from batchgen.job.template import Template, parse_template
from batchgen.job.variants import EMPTY, Variant, VariantMatrix, seed_for
from batchgen.pipeline.remote import fetched_violations, size_cap
from batchgen.store import journal as J
from batchgen.store.keyset import KeySet

if TYPE_CHECKING:
    from batchgen.pipeline.remote import UrlChecker

# What a plan decides for a row.
SUBMIT = "submit"  # send (again): new, changed, never sent, blocked, or a deliberate retry
RESUME = "resume"  # a task exists and is not finished: poll it
KEEP = "keep"  # succeeded earlier with the same content
KEEP_FAILED = "keep_failed"  # failed earlier with the same content; --retry-failed resends it
INVALID = "invalid"  # broke a rule: recorded, never sent
DUPLICATE = "duplicate"  # the key was already used by an earlier row of the manifest

FINGERPRINT_VERSION = "2"
# What the fast path of a re-run reads of a journal row (Planner.plan_batch).
BRIEF_COLUMNS = "key, variant, variant_index, scan_digest, state, row_index, seen_run, epoch"
DIGEST_VERSION = "1"  # of the re-run digest (Planner.digest); a new one re-plans every row once
HEAD_BYTES = 64


@dataclass(frozen=True, slots=True)
class RefCheck:
    """A reference as checked offline. ``sha256`` is None for a URL (fetched at run time);
    ``damage`` is the decode check's verdict on an image (see ``filetypes.image_problem``)."""

    source: str
    path: Path | None
    url: str | None
    size: int | None
    mime_type: str | None
    kind: str | None
    sha256: str | None
    damage: tuple[str, str] | None = None


@dataclass(slots=True)
class RowPlan:
    """The decision for one manifest row.

    ``digest`` stands for the row's cells (and its reference file's identity on disk) in the
    scan's context; ``fast`` says the decision was taken from it alone (see
    :meth:`Planner.plan_batch`), so the row was never mapped, checked or fingerprinted.
    """

    row: RawRow
    action: str
    cost: int = 0
    fingerprint: str | None = None
    ref: RefCheck | None = None
    violations: list[Violation] = field(default_factory=list)
    previous: sqlite3.Row | None = None
    epoch: int = 0
    digest: bytes | None = None
    fast: bool = False
    variant: Variant = EMPTY
    # The task's own prompt and params (a style or a variant's params change the row's).
    prompt: str | None = None
    params: dict[str, Any] | None = None
    download_name: str | None = None

    @property
    def spec(self) -> RowSpec:
        return self.row.spec()

    @property
    def task(self) -> J.TaskRef:
        return (self.row.key, self.variant.id)

    @property
    def where(self) -> str:
        """``row N`` or ``row N, variant V``: where a message about this task points."""
        n = self.row.row_number
        return f"row {n}, variant {self.variant.id}" if self.variant.id else f"row {n}"

    @property
    def reason(self) -> str:
        if self.violations:
            return "; ".join(v.message for v in self.violations)
        if self.action == SUBMIT:
            prev = self.previous
            changed = prev is None or prev["fingerprint"] != self.fingerprint
            return "new or changed" if changed else "not finished"
        return {
            RESUME: "task in flight: poll it",
            KEEP: "succeeded earlier with the same content",
            KEEP_FAILED: "failed earlier with the same content (use --retry-failed)",
            DUPLICATE: "duplicate key",
        }.get(self.action, "")


# Built once: json.dumps with non-default options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one serialisation used for fingerprints, keys and request bodies."""
    if not value and isinstance(value, dict):
        return "{}"  # most rows have no pass-through or params: skip the encoder
    return _CANONICAL.encode(value)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(
    model: str | None,
    prompt: str | None,
    params: Mapping[str, Any],
    ref_identity: str | None,
    variant: str = "",
) -> str:
    """Content fingerprint: model, prompt, params, the reference's bytes (or URL) and the
    variant id (only when there is one, so a job without variants keeps its fingerprints).

    Fields are joined by a separator that none of them can hold unescaped (the prompt, params and
    reference go in as JSON), which is cheaper than one JSON document per row on a re-run of a
    million rows.
    """
    fields = [
        FINGERPRINT_VERSION,
        _CANONICAL.encode(model),
        _CANONICAL.encode(prompt),
        canonical_json(dict(params)),
        _CANONICAL.encode(ref_identity),
    ]
    if variant:
        fields.append(_CANONICAL.encode(variant))
    return _sha("\x1f".join(fields))


def client_request_id(key: str, variant: str = "") -> str:
    """The caller's trace id, derived from the task (row key, and ``#variant`` when there is
    one) and kept within 128 characters."""
    text = f"{key}#{variant}" if variant else key
    if len(text) <= 128 and text.isprintable():
        return text
    return text[:100].encode("ascii", "replace").decode() + "~" + _sha(text)[:24]


def idempotency_key(job_id: str, key: str, epoch: int, body_json: str, variant: str = "") -> str:
    """Deterministic Idempotency-Key: (job, row key, variant, retry epoch, canonical body); the
    empty variant leaves the variant out, so a job without variants keeps its keys."""
    if variant:
        return "bg1-" + _sha("\0".join((job_id, key, variant, str(epoch), body_json)))
    return "bg1-" + _sha("\0".join((job_id, key, str(epoch), body_json)))


def variant_of(row: Mapping[str, Any]) -> str:
    """The variant id of a journal row (a dict or sqlite3.Row), ``""`` when it has none."""
    try:
        return str(row["variant"] or "")
    except (KeyError, IndexError):
        return ""


def request_body(row: Mapping[str, Any], references: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The canonical POST /generations body of a journal row."""
    params = dict(json.loads(row["params"]))
    if references:
        params["referenceMediaItems"] = [dict(r) for r in references]
    body: dict[str, Any] = {
        "model": row["model"],
        "client_request_id": client_request_id(row["key"], variant_of(row)),
    }
    if row["prompt"] is not None:
        body["prompt"] = row["prompt"]
    if params:
        body["params"] = params
    return body


Verdict = tuple[str, str] | None  # a decode check's (rule, detail), None when the image decodes


class ReferenceChecker:
    """Checks reference cells on disk; remembers the files hashed last (by path, size, mtime)
    and the decode verdicts of the last files by content (sha256), so each unique image is
    decoded once per scan. ``accepted(sha256)`` says the service already took those bytes (the
    journal's upload cache): they are not decoded again."""

    CACHE_SIZE = 4096  # files: rows that share a photo are usually near each other
    VERDICTS = 65536  # decode verdicts kept, by sha256

    def __init__(self, base_dir: Path, accepted: Callable[[str], bool] | None = None) -> None:
        self.base_dir = base_dir
        self.accepted = accepted
        self._cache: OrderedDict[tuple[str, int, int], tuple[str, str | None]] = OrderedDict()
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self.decoded = 0  # images decoded (for tests and benchmarks)

    def verdict(self, sha: str, mime: str | None, source: Path | bytes) -> Verdict:
        """The decode check of the bytes ``sha``, from the cache or by decoding ``source``."""
        if sha in self._verdicts:
            self._verdicts.move_to_end(sha)
            return self._verdicts[sha]
        found: Verdict = None
        if mime in DECODABLE_IMAGES and not (self.accepted is not None and self.accepted(sha)):
            found = image_problem(source, mime)
            self.decoded += 1
        self._verdicts[sha] = found
        if len(self._verdicts) > self.VERDICTS:
            self._verdicts.popitem(last=False)
        return found

    def check(self, cell: str, column: str) -> tuple[RefCheck | None, Violation | None]:
        if is_url(cell) or storage.is_store_url(cell):
            # Known by its URL, fetched (and judged) when its row is sent or estimated.
            return RefCheck(cell, None, cell, None, None, "image", None), None
        if "://" in cell:
            return None, Violation(
                column,
                "scheme",
                f"column '{column}': '{cell}' is neither a local path nor an http(s), s3://,"
                " gs:// or az:// URL",
            )
        path = resolve_reference(cell, self.base_dir)
        try:
            st = path.stat()
            if not path.is_file():
                return None, Violation(
                    column, "not_a_file", f"column '{column}': {path} is not a file"
                )
            cache_key = (str(path), st.st_size, st.st_mtime_ns)
            cached = self._cache.get(cache_key)
            if cached is not None:
                self._cache.move_to_end(cache_key)
            else:
                digest = hashlib.sha256()
                with path.open("rb") as fh:
                    head = fh.read(HEAD_BYTES)
                    digest.update(head)
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
                cached = (digest.hexdigest(), sniff_mime(head))
                self._cache[cache_key] = cached
                if len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        except FileNotFoundError:
            return None, Violation(
                column,
                "missing_file",
                f"column '{column}': reference file {path} does not exist"
                " (paths are relative to the manifest)",
            )
        except OSError as exc:
            return None, Violation(
                column, "unreadable", f"column '{column}': cannot read {path}: {exc.strerror}"
            )
        sha, mime = cached
        damage = self.verdict(sha, mime, path)
        kind = kind_of_mime(mime) if mime else None
        return RefCheck(cell, path, None, st.st_size, mime, kind, sha, damage), None


class Planner:
    """Plans manifest rows batch by batch against the catalog and (optionally) a journal.

    Each row expands into its tasks, one per variant of its model (the empty variant alone for a
    job without ``[variants]``); a plan is one task's decision.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        base_dir: Path,
        reference_column: str | None,
        prompt_field: str,
        param_columns: Mapping[str, str],
        journal: J.Journal | None = None,
        retry_failed: bool = False,
        context: str | None = None,
        remote: UrlChecker | None = None,
        id_column: str = "id",
        model_column: str | None = None,
        job_id: str = "",
        matrix: VariantMatrix | None = None,
        download_name: str | None = None,
        downloads: bool = True,
    ) -> None:
        self.catalog = catalog
        self.remote = remote  # fetches URL references (estimate); a run fetches when it submits
        self.base_dir = base_dir
        self.refs = ReferenceChecker(
            base_dir,
            accepted=(lambda sha: journal.get_upload(sha) is not None) if journal else None,
        )
        self.reference_column = reference_column or "reference"
        self.prompt_field = prompt_field
        self.param_columns = dict(param_columns)
        self.id_column = id_column
        self.model_column = model_column or "model"
        self.journal = journal
        self.retry_failed = retry_failed
        self.job_id = job_id
        self.matrix = matrix or VariantMatrix({}, {})
        if download_name is None and not self.matrix.empty:
            download_name = DEFAULT_VARIANT_NAME
        # Names matter only to a job that downloads; they are checked (unique) when it does.
        self.names: NameTemplate | None = (
            parse_download_name(download_name, "output.download_name")
            if download_name and downloads
            else None
        )
        self._styles: dict[str, Template] = {}
        self.keys = KeySet()  # the keys of earlier batches, to find duplicates
        self._digest_base = None
        if context is not None and journal is not None:
            seed = "\x1e".join((DIGEST_VERSION, FINGERPRINT_VERSION, str(base_dir), context))
            self._digest_base = hashlib.blake2b(seed.encode(), digest_size=16)

    def _column_of(self, fld: str) -> str:
        if fld.startswith("params."):
            key = fld.split(".", 1)[1]
            return self.param_columns.get(key, key)
        if fld in ("reference", "referenceMediaItems") or fld.startswith("reference"):
            return self.reference_column
        if fld == "prompt":
            return self.prompt_field
        if fld == "model":
            return self.model_column
        return fld

    def _located(self, v: Violation, row: RawRow | None = None) -> Violation:
        """The violation re-addressed to the manifest column that holds the value, or to the
        job-file setting when a param's value is the job's default (its cell is blank)."""
        column = self._column_of(v.field)
        message = v.message
        head, sep, rest = message.partition(": ")
        if sep and (head == v.field or head.startswith(("params.", "prompt", "model"))):
            message = rest
        if row is not None and v.field.startswith("params."):
            setting = row.param_default(v.field.split(".", 1)[1], column)
            if setting is not None:
                return Violation(setting, v.rule, f"{setting} (job default): {message}")
        if not message.startswith("column '"):
            message = f"column '{column}': {message}"
        return Violation(column, v.rule, message)

    def _variants(self, row: RawRow) -> tuple[Variant, ...]:
        """The row's variants (its model's, when variants differ by model)."""
        if not self.matrix.varies_by_model:
            return self.matrix.for_model(None)
        return self.matrix.for_model(row.spec().model)

    def task_digest(self, digest: bytes | None, variant: Variant) -> bytes | None:
        """A task's re-run digest: its row's, and (with variants or a download name) what the
        variant and the name template change, so editing one style re-plans only its tasks."""
        if digest is None or (not variant.id and self.names is None):
            return digest
        h = hashlib.blake2b(digest, digest_size=16)
        h.update(variant.definition.encode("utf-8", "surrogatepass"))
        if self.names is not None:
            h.update(b"\x1e" + self.names.text.encode("utf-8", "surrogatepass"))
        return h.digest()

    def plan_batch(self, rows: Sequence[RawRow]) -> list[RowPlan]:
        """Plan a batch of rows (manifest order, then variant order), with one journal query
        for all of them.

        The fast path of a re-run: a row whose digest (its cells in this scan's context, and its
        reference file's size, times and inode) equals the one recorded for each of its tasks
        when their current fingerprints were computed maps to those same fingerprints, so earlier
        successes are kept (or, without ``--retry-failed``, earlier failures) without mapping the
        row again.
        """
        journal = self.journal
        keys = [r.key for r in rows if r.key]
        earlier = set(keys) - self.keys.add_new(keys)
        taken = set(earlier)  # keys owned by an earlier row: grows in manifest order below
        if journal is None:
            return self._fetched([p for row in rows for p in self._plan_row(row, {}, taken, None)])
        brief: dict[str, dict[str, Any]] = {}
        for (key, vid), r in journal.get_tasks(keys, BRIEF_COLUMNS).items():
            brief.setdefault(key, {})[vid] = r
        # First pass: the digest of every row, and which rows the fast path decides. Only the
        # first row of a key can be kept; a later one is a duplicate, found by _plan in order.
        claimed: set[str] = set()
        decided: list[tuple[RawRow, bytes | None, tuple[Variant, ...] | None]] = []
        wide: list[str] = []
        for row in rows:
            key = row.key
            digest = self.digest(row)
            tasks = brief.get(key) if key else None
            fast: tuple[Variant, ...] | None = None
            if tasks:
                if digest is not None and key not in claimed and key not in earlier:
                    variants = self._variants(row)
                    if all(self._keeps(tasks.get(v.id), digest, v) for v in variants):
                        fast = variants
                if fast is None:
                    wide.append(key)
            claimed.add(key)
            decided.append((row, digest, fast))
        previous: dict[str, dict[str, sqlite3.Row]] = {}
        if wide:
            for (key, vid), r in journal.get_tasks(wide).items():
                previous.setdefault(key, {})[vid] = r
        plans = []
        for row, digest, fast in decided:
            if fast is None:
                plans.extend(self._plan_row(row, previous.get(row.key, {}), taken, digest))
                continue
            taken.add(row.key)
            for variant in fast:
                prev = brief[row.key][variant.id]
                action = KEEP if prev["state"] == J.SUCCEEDED else KEEP_FAILED
                plan = RowPlan(
                    row, action, previous=prev, epoch=prev["epoch"], fast=True, variant=variant
                )
                plan.digest = prev["scan_digest"]  # equal to task_digest: _keeps checked it
                plans.append(plan)
        return self._fetched(plans)

    def _keeps(self, prev: sqlite3.Row | None, digest: bytes, variant: Variant) -> bool:
        """True when the fast path keeps the task ``prev`` of ``variant`` as it is."""
        if prev is None or prev["scan_digest"] != self.task_digest(digest, variant):
            return False
        state = prev["state"]
        return bool(state == J.SUCCEEDED or (state == J.FAILED and not self.retry_failed))

    def _fetched(self, plans: list[RowPlan]) -> list[RowPlan]:
        """The plans, once the URL references of the rows to submit are fetched and judged
        (only with a ``remote`` checker)."""
        if self.remote is None:
            return plans
        todo = [p for p in plans if p.action == SUBMIT and p.ref is not None and p.ref.url]
        if not todo:
            return plans
        caps: dict[str, int] = {}
        for p in todo:
            assert p.ref is not None and p.ref.url is not None
            caps[p.ref.url] = max(caps.get(p.ref.url, 0), size_cap(self.catalog, p.spec.model))
        found = self.remote.check(caps)
        for p in todo:
            assert p.ref is not None and p.ref.url is not None and p.spec.model is not None
            problems = fetched_violations(
                self.catalog, p.spec.model, self.reference_column, found[p.ref.url]
            )
            if problems:
                p.action, p.violations, p.cost = INVALID, problems, 0
        return plans

    def digest(self, row: RawRow) -> bytes | None:
        """The row's digest, or None when it has none (no journal, a reading problem, or a
        reference file that cannot be looked at)."""
        if self._digest_base is None or row.problems:
            return None
        h = self._digest_base.copy()
        h.update(row.text().encode("utf-8", "surrogatepass"))
        cell = row.reference
        if cell and "://" not in cell:
            path = resolve_reference(cell, self.base_dir)
            try:
                st = path.stat()
            except OSError:
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            h.update(
                f"\x1e{path}\x1f{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:"
                f"{st.st_ctime_ns}".encode("utf-8", "surrogatepass")
            )
        return h.digest()

    def close(self) -> None:
        self.keys.close()

    def _plan_row(
        self,
        row: RawRow,
        previous: Mapping[str, sqlite3.Row],
        taken: set[str],
        digest: bytes | None,
    ) -> list[RowPlan]:
        """The plans of one row's tasks; one plan for a row that owns no key."""
        if row.problems:  # the line could not be read: it has no cells, no key, no request
            return [RowPlan(row, INVALID, violations=list(row.problems))]
        spec = row.spec()
        if spec.key and spec.key in taken:
            column = self.id_column
            return [
                RowPlan(
                    row,
                    DUPLICATE,
                    violations=[
                        Violation(
                            column,
                            "duplicate_key",
                            f"column '{column}': key '{spec.key}' already used by an earlier row;"
                            " keys must be unique",
                        )
                    ],
                )
            ]
        if spec.key:
            taken.add(spec.key)
        violations = [self._located(v) for v in spec.problems]
        ref: RefCheck | None = None
        if spec.reference:
            ref, problem = self.refs.check(spec.reference, self.reference_column)
            if problem is not None:
                violations.append(problem)
        if not spec.key:
            return [RowPlan(row, INVALID, ref=ref, violations=violations)]
        variants = self.matrix.for_model(spec.model)
        cells: dict[str, str] | None = None
        if self.names is not None or any(v.template for v in variants):
            cells = dict(zip(row.names, row.values, strict=False))
        plans = []
        for variant in variants:
            plan = self._plan(row, spec, ref, list(violations), variant, previous, cells)
            plan.digest = self.task_digest(digest, variant)
            plans.append(plan)
        return plans

    def _request(
        self, spec: RowSpec, variant: Variant, cells: Mapping[str, str] | None
    ) -> tuple[str | None, dict[str, Any], list[Violation]]:
        """The task's prompt and params: the row's, changed by its variant's style, params,
        aspect and candidate seed; and what is wrong with them before the catalog checks."""
        prompt, params = spec.prompt, spec.params
        problems: list[Violation] = []
        if variant.template is not None and variant.style is not None:
            template = self._styles.get(variant.template)
            if template is None:
                template = parse_template(variant.template, f"variants.styles.{variant.style}")
                self._styles[variant.template] = template
            cells = cells or {}
            for column in template.columns:
                if not cells.get(column, "").strip():
                    problems.append(
                        Violation(
                            column,
                            "blank",
                            f"column '{column}': blank, but style '{variant.style}' uses it",
                        )
                    )
            prompt = template.render(cells)
        model = spec.model
        spec_model = self.catalog.get(model) if model is not None else None
        if model is None or spec_model is None:
            return prompt, params, problems
        if variant.params or variant.aspect or spec.aspect or variant.candidate is not None:
            params = dict(params)
        if variant.params:
            params.update(self.catalog.normalize_params(model, dict(variant.params)))
        aspect = variant.aspect or spec.aspect
        if aspect:
            options = self.catalog.aspects(model)
            hit = options.get(aspect)
            if hit is None:
                where = "variants.aspect" if variant.aspect else self.param_columns.get("aspect")
                where = where or "generation.params.aspect"
                problems.append(
                    Violation(
                        where,
                        "aspect_unsupported",
                        f"{where}: model {model!r} cannot make aspect {aspect}; its aspects are"
                        f" {', '.join(options) or 'none (it has no size param)'}",
                    )
                )
            else:
                params[hit[0]] = hit[1]
        if variant.candidate is not None and "seed" in spec_model.params:
            params["seed"] = seed_for(self.job_id, spec.key, variant.id, variant.candidate)
        return prompt, params, problems

    def _task_located(self, v: Violation, row: RawRow, variant: Variant) -> Violation:
        """A catalog violation of a task: named after the variant's setting when the variant
        gave the value (its style's prompt, its param), else as :meth:`_located` does."""
        if variant.style is not None and v.field == "prompt":
            return _renamed(v, f"variants.styles.{variant.style}")
        keys = {k for k, _ in variant.params}
        if v.field.startswith("params.") and v.field.split(".", 1)[1] in keys:
            return _renamed(v, f"variants.{v.field.split('.', 1)[1]}")
        return self._located(v, row)

    def _name(
        self,
        spec: RowSpec,
        variant: Variant,
        cells: Mapping[str, str] | None,
    ) -> str | None:
        if self.names is None:
            return None
        values = dict(cells or {})
        values.update(variant.axes)
        values["key"] = spec.key
        values["variant"] = variant.id or "default"
        return self.names.render(values)

    def _plan(
        self,
        row: RawRow,
        spec: RowSpec,
        ref: RefCheck | None,
        violations: list[Violation],
        variant: Variant,
        previous: Mapping[str, sqlite3.Row],
        cells: Mapping[str, str] | None,
    ) -> RowPlan:
        prev = previous.get(variant.id)
        prompt, params, problems = self._request(spec, variant, cells)
        violations.extend(problems)
        name = self._name(spec, variant, cells)
        if prev is not None and prev["state"] == J.SUCCEEDED and not violations and spec.model:
            # Fast path of a re-run: the same content already succeeded, whatever the catalog
            # says today, so there is nothing to validate or price.
            fp = fingerprint(spec.model, prompt, params, _identity(ref), variant.id)
            if fp == prev["fingerprint"]:
                return RowPlan(
                    row,
                    KEEP,
                    fingerprint=fp,
                    ref=ref,
                    previous=prev,
                    epoch=prev["epoch"],
                    variant=variant,
                    prompt=prompt,
                    params=params,
                    download_name=name,
                )
        # A blank key or model is among the row's own problems, named after its column.
        if spec.model and (not violations or self.catalog.get(spec.model) is not None):
            refs = []
            if ref is not None and ref.url is None:
                refs.append(
                    ReferenceInfo(
                        kind=ref.kind or "unknown",
                        mime_type=ref.mime_type,
                        size=ref.size or 0,
                        name=ref.path.name if ref.path else None,
                        damage=ref.damage,
                    )
                )
            elif ref is not None:
                refs.append(ReferenceInfo(kind="image", mime_type=None, size=0, name=ref.url))
            found = self.catalog.validate(spec.model, prompt, params, refs)
            rules = {v.rule for v in found}
            for v in found:
                if (
                    ref is not None
                    and ref.url is not None
                    and v.rule in ("mime", "max_bytes", "kind")
                ):
                    continue  # a URL's bytes are checked when it is fetched
                if (
                    v.rule == "kind"
                    and "mime" in rules
                    and ref is not None
                    and ref.mime_type is None
                ):
                    continue  # unrecognised content: the mime violation says it all
                violations.append(self._task_located(v, row, variant))
        plan = RowPlan(
            row,
            INVALID,
            ref=ref,
            violations=violations,
            previous=prev,
            variant=variant,
            prompt=prompt,
            params=params,
            download_name=name,
        )
        if violations:
            return plan
        assert spec.model is not None
        plan.action = SUBMIT
        plan.cost = self.catalog.cost(spec.model, params)
        if self.journal is None:
            return plan  # nothing to compare with or to record: no fingerprint needed
        plan.fingerprint = fp = fingerprint(spec.model, prompt, params, _identity(ref), variant.id)
        if prev is None:
            return plan
        plan.epoch = int(prev["epoch"])
        if prev["fingerprint"] != fp:
            if prev["fingerprint"] is not None:
                plan.epoch += 1  # changed content: a deliberate new task
            return plan
        state = prev["state"]
        if state == J.SUCCEEDED:
            plan.action = KEEP
        elif state in J.IN_FLIGHT and prev["task_id"]:
            plan.action = RESUME
        elif state == J.FAILED:
            if self.retry_failed:
                plan.epoch += 1  # the same key would replay the failed task
            else:
                plan.action = KEEP_FAILED
        return plan


def _identity(ref: RefCheck | None) -> str | None:
    """What stands for a reference in the fingerprint: its bytes' sha256, or its URL."""
    return (ref.sha256 or ref.url) if ref is not None else None


def plan_to_row(plan: RowPlan, run_id: int) -> dict[str, Any]:
    """The journal row a plan writes (the scan's only write)."""
    prev = plan.previous
    variant = plan.variant
    ident = {"key": plan.row.key, "variant": variant.id}
    if plan.fast:
        assert prev is not None
        if prev["row_index"] == plan.row.index and prev["variant_index"] == variant.index:
            return {**ident, "seen_run": run_id}  # the common re-run
        return {
            **ident,
            "row_index": plan.row.index,
            "row_number": plan.row.row_number,
            "variant_index": variant.index,
            "seen_run": run_id,
        }
    spec = plan.spec
    passthrough = canonical_json(spec.passthrough)
    same_place = (
        prev is not None
        and prev["row_index"] == spec.index
        and prev["variant_index"] == variant.index
    )
    if (
        plan.action in (KEEP, KEEP_FAILED, RESUME)
        and prev is not None
        and same_place
        and prev["passthrough"] == passthrough
    ):
        if prev["download_name"] != plan.download_name:
            return {
                **ident,
                "seen_run": run_id,
                "scan_digest": plan.digest,
                "download_name": plan.download_name,
            }
        if prev["scan_digest"] == plan.digest:
            return {**ident, "seen_run": run_id}  # only mark it seen
        return {**ident, "seen_run": run_id, "scan_digest": plan.digest}
    if (
        plan.action == INVALID
        and prev is not None
        and prev["state"] == J.INVALID
        and plan.digest is not None
        and prev["scan_digest"] == plan.digest
        and same_place
        and prev["error_message"] == plan.reason
    ):
        return {**ident, "seen_run": run_id}  # the same cells broke the same rules
    base: dict[str, Any] = {
        **ident,
        "variant_index": variant.index,
        "axes": variant.axes_json if variant.id else "{}",
        "row_index": spec.index,
        "row_number": spec.row_number,
        "seen_run": run_id,
        "passthrough": passthrough,
        "scan_digest": plan.digest,
        "download_name": plan.download_name,
    }
    if plan.action in (KEEP, KEEP_FAILED, RESUME):
        return base
    params = plan.params if plan.params is not None else spec.params
    base.update(
        model=spec.model,
        prompt=plan.prompt if plan.params is not None else spec.prompt,
        params=canonical_json(params),
        reference=spec.reference,
        reference_sha256=plan.ref.sha256 if plan.ref else None,
        fingerprint=plan.fingerprint,
        epoch=plan.epoch,
        cost=plan.cost,
        task_id=None,
        idempotency_key=None,
        reserved_credits=0,
        final_credits=0,
        primary_url=None,
        urls=None,
        request_id=None,
        submitted_at=None,
        finished_at=None,
        generated_run=None,
        duration_s=None,
        download_path=None,
        download_bytes=None,
        download_sha256=None,
        download_error=None,
    )
    if plan.action == INVALID:
        first = plan.violations[0]
        base.update(
            state=J.INVALID,
            error_code="invalid_input",
            error_field=first.field,
            error_message=plan.reason,
        )
    else:
        prev_state = plan.previous["state"] if plan.previous is not None else None
        unchanged = plan.previous is not None and plan.previous["fingerprint"] == plan.fingerprint
        keep_error = unchanged and prev_state in (J.READY, J.BLOCKED, J.PENDING)
        base["state"] = J.READY if (unchanged and prev_state == J.READY) else J.PENDING
        if not keep_error:
            base.update(error_code=None, error_field=None, error_message=None)
    return base


def _renamed(v: Violation, where: str) -> Violation:
    """``v`` addressed to ``where`` (its message's own prefix replaced by it)."""
    _head, sep, rest = v.message.partition(": ")
    return Violation(where, v.rule, f"{where}: {rest if sep else v.message}")
