"""Variants: one manifest row, several tasks.

A job's ``[variants]`` table is a matrix: named prompt ``styles`` (templates over the row's
columns), param axes (``image_size = ["1:1", "16:9"]``, or the portable ``aspect``), and
``candidates = N``. Each manifest row expands into one task per combination, in a stable order
(style, then the param axes as the job file lists them, then the candidate). A task is
identified by (row key, variant id); the variant id is readable and stable: its axis values joined
by ``/`` (``white/16:9/c2``). A job without ``[variants]`` has one task per row, of the empty
variant ``""``, whose keys and fingerprints are those of a job before variants existed.

``[variants_by_model."<model>"]`` replaces axes (or styles, or candidates) for rows of one
model. ``--variant KEY=V1,V2`` (or ``BATCHGEN_VARIANT="KEY=V1,V2;KEY2=..."``) replaces one axis
for a run; ``--variant style=white`` keeps only the named styles.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchgen.errors import UsageError
from batchgen.job.coerce import suggest
from batchgen.job.template import parse_template

if TYPE_CHECKING:
    from batchgen.job.catalog import Catalog

STYLE = "style"
CANDIDATE = "candidate"
ASPECT = "aspect"
STYLES_KEY = "styles"
CANDIDATES_KEY = "candidates"
PORTABLE_ASPECTS = ("1:1", "4:3", "3:4", "16:9", "9:16")
MAX_CANDIDATES = 100
MAX_VARIANTS = 10_000
"""Tasks one row may expand into (the output orders them by their index below this)."""
SEED_LIMIT = 2**31 - 1
_ASPECT_RE = re.compile(r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$")


@dataclass(frozen=True, slots=True)
class Variant:
    """One combination of the matrix: its id, position and what it changes in a request."""

    id: str
    index: int
    axes: tuple[tuple[str, str], ...] = ()  # (axis, value as shown), in axis order
    style: str | None = None
    template: str | None = None  # the style's prompt template
    params: tuple[tuple[str, Any], ...] = ()
    aspect: str | None = None
    candidate: int | None = None

    @property
    def axes_json(self) -> str:
        return json.dumps(dict(self.axes), ensure_ascii=False, sort_keys=True)

    @property
    def definition(self) -> str:
        """What the variant changes in a request: part of the task's re-run digest, so that
        editing one style re-plans only that style's tasks."""
        return json.dumps(
            [self.id, self.template, list(self.params), self.aspect, self.candidate],
            ensure_ascii=False,
            sort_keys=True,
        )


EMPTY = Variant("", 0)
"""The one variant of a job without ``[variants]``."""


def seed_for(job_id: str, key: str, variant_id: str, candidate: int) -> int:
    """The deterministic seed of one candidate: from (job, row key, variant, candidate)."""
    text = "\0".join(("seed1", job_id, key, variant_id, str(candidate)))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % SEED_LIMIT


def _component(value: str) -> str:
    """One axis value in a variant id: ``/`` and ``%`` escaped so ids never collide."""
    return value.replace("%", "%25").replace("/", "%2F")


# --------------------------------------------------------------------------- settings


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return None


def _values(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        text = _scalar_text(item)
        if text is None:
            raise UsageError(
                f"variant value {item!r} is not a plain value",
                where,
                'give a list of text or numbers, e.g. ["1:1", "16:9"]',
            )
        if text in out:
            raise UsageError(f"variant value {text!r} is listed twice", where, "list it once")
        out.append(text)
    if not out:
        raise UsageError("variant axis has no values", where, "list at least one value")
    return out


def _table(
    raw: Any,
    where: str,
    catalog: Catalog | None,
    models: Sequence[str],
    *,
    partial: bool,
) -> dict[str, Any]:
    """One ``[variants]`` table checked and normalized: {"styles", "axes", "candidates"}.

    Without a catalog only its shape is checked (a first pass, before the catalog is known);
    a model whose params the catalog does not know takes any param key."""
    if not isinstance(raw, Mapping):
        raise UsageError("variants must be a table", where, "see README.md, Variants")
    all_params = (
        sorted({k for m in catalog.ids() for k in _params_of(catalog, m)}) if catalog else []
    )
    out: dict[str, Any] = {"axes": {}}
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key == STYLES_KEY:
            if not isinstance(value, Mapping) or not value:
                raise UsageError(
                    "variants.styles must be a table of named prompt templates",
                    here,
                    'write e.g. white = "{title} on a seamless white background"',
                )
            styles: dict[str, str] = {}
            for name, template in value.items():
                at = f"{here}.{name}"
                if not isinstance(template, str) or not template.strip():
                    raise UsageError("a style must be a non-blank prompt template", at, "quote it")
                if not name.strip() or "/" in name:
                    raise UsageError(
                        f"style name {name!r} is blank or holds '/'", at, "rename the style"
                    )
                parse_template(template, at)
                styles[name] = template
            out["styles"] = styles
        elif key == CANDIDATES_KEY:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise UsageError("candidates must be a whole number", here, "give e.g. 3")
            try:
                number = int(str(value).strip())
            except ValueError:
                raise UsageError("candidates must be a whole number", here, "give e.g. 3") from None
            if not 1 <= number <= MAX_CANDIDATES:
                raise UsageError(
                    f"candidates must be between 1 and {MAX_CANDIDATES}, not {number}",
                    here,
                    "give e.g. 3",
                )
            out["candidates"] = number
        elif key == ASPECT:
            values = _values(value, here)
            for v in values:
                if not _ASPECT_RE.match(v):
                    raise UsageError(
                        f"aspect {v!r} is not W:H",
                        here,
                        f"use portable aspects such as {', '.join(PORTABLE_ASPECTS)}",
                    )
            out["axes"][key] = values
        else:
            known = sorted({k for m in models for k in _params_of(catalog, m)}) if partial else []
            unchecked = catalog is None or (partial and not _params_known(catalog, models[0]))
            if not unchecked and (
                (partial and key not in known) or (not partial and key not in all_params)
            ):
                choices = [*(known if partial else all_params), ASPECT, STYLES_KEY, CANDIDATES_KEY]
                what = (
                    f"model {models[0]!r} has no param {key!r}"
                    if partial
                    else f"variant axis {key!r} is not a param of any model"
                )
                raise UsageError(what, here, suggest(key, choices, "variant keys are"))
            values = _values(value, here)
            for model in models:
                _check_options(catalog, model, key, values, here)
            out["axes"][key] = values
    if not partial:
        out.setdefault("styles", {})
        out.setdefault("candidates", 1)
    return out


def _params_of(catalog: Catalog | None, model_id: str) -> Mapping[str, Any]:
    spec = catalog.get(model_id) if catalog is not None else None
    return spec.params if spec is not None else {}


def _params_known(catalog: Catalog, model_id: str) -> bool:
    spec = catalog.get(model_id)
    return spec is not None and spec.params_known


def _check_options(
    catalog: Catalog | None, model: str, key: str, values: list[str], where: str
) -> None:
    if catalog is None:
        return
    spec = _params_of(catalog, model).get(key)
    if spec is None or not spec.options:
        return
    for value in values:
        got = catalog.normalize_params(model, {key: value}).get(key)
        if got not in spec.options:
            raise UsageError(
                f"{value!r} is not an option of {key} for model {model!r}",
                where,
                f"use one of {', '.join(spec.options)}"
                + (", or aspect = [...] for a portable aspect" if key in _SIZE_KEYS else ""),
            )


_SIZE_KEYS = ("image_size", "aspect_ratio", "aspectRatio", "imageSize")


def parse_flag_items(items: Sequence[str], where: str) -> dict[str, Any]:
    """``KEY=V1,V2`` items of ``--variant`` (or ``BATCHGEN_VARIANT``) as a variants table."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError(
                f"{where} expects KEY=V1,V2, got {item!r}",
                where,
                "write e.g. --variant image_size=1:1,16:9",
            )
        values = [v.strip() for v in value.split(",") if v.strip()]
        if key == CANDIDATES_KEY:
            out[key] = values[0] if len(values) == 1 else value
        elif key == STYLE:
            out[STYLE] = values
        else:
            out[key] = values
    return out


def resolve_variants(
    job_table: Any,
    job_by_model: Any,
    flag_table: Mapping[str, Any] | None,
    *,
    shown: str,
    flag_where: str,
    catalog: Catalog | None,
    default_model: str | None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The job's matrix and its per-model overrides, checked against ``catalog`` (None: their
    shape only); UsageError names the key."""
    known_default = catalog is not None and default_model and catalog.get(default_model)
    models = [default_model] if default_model and known_default else []
    base: dict[str, Any] = {"styles": {}, "axes": {}, "candidates": 1}
    if job_table is not None:
        base = _table(job_table, f"{shown}: variants", catalog, models, partial=False)
    by_model: dict[str, dict[str, Any]] = {}
    if job_by_model is not None:
        if not isinstance(job_by_model, Mapping):
            raise UsageError(
                "variants_by_model must be a table per model",
                f"{shown}: variants_by_model",
                'write [variants_by_model."qwen2-image"]',
            )
        for model_id, table in job_by_model.items():
            where = f'{shown}: variants_by_model."{model_id}"'
            if catalog is not None and catalog.get(model_id) is None:
                raise UsageError(
                    f"unknown model {model_id!r}", where, suggest(model_id, catalog.ids(), "models")
                )
            by_model[model_id] = _table(table, where, catalog, [model_id], partial=True)
    if flag_table:
        chosen = flag_table.get(STYLE)
        rest = {k: v for k, v in flag_table.items() if k != STYLE}
        if rest:
            extra = _table(rest, flag_where, catalog, models, partial=False)
            base["axes"].update(extra["axes"])
            if CANDIDATES_KEY in rest:
                base["candidates"] = extra["candidates"]
        if chosen is not None:
            styles = base["styles"]
            unknown = [s for s in chosen if s not in styles]
            if unknown:
                raise UsageError(
                    f"no style named {unknown[0]!r}",
                    flag_where,
                    suggest(unknown[0], list(styles) or ["(no styles)"], "styles of the job are"),
                )
            base["styles"] = {s: styles[s] for s in chosen}
    total = _count(base)
    for table in by_model.values():
        total = max(total, _count({**base, **table, "axes": {**base["axes"], **table["axes"]}}))
    if total > MAX_VARIANTS:
        raise UsageError(
            f"the variants make {total} tasks per row, more than {MAX_VARIANTS}",
            f"{shown}: variants",
            "use fewer values",
        )
    return base, by_model


def _count(table: Mapping[str, Any]) -> int:
    n = max(1, len(table.get("styles") or {})) * int(table.get("candidates") or 1)
    for values in table["axes"].values():
        n *= len(values)
    return n


# --------------------------------------------------------------------------- the matrix


class VariantMatrix:
    """The variants of each model, built once per model from the resolved settings."""

    def __init__(self, base: Mapping[str, Any], by_model: Mapping[str, Mapping[str, Any]]) -> None:
        self.base = base
        self.by_model = by_model
        self._cache: dict[str | None, tuple[Variant, ...]] = {}

    @classmethod
    def of(cls, settings: Any) -> VariantMatrix:
        return cls(getattr(settings, "variants", None) or {}, settings.variants_by_model or {})

    @property
    def empty(self) -> bool:
        """True when every row has exactly the empty variant (no ``[variants]``)."""
        tables = [self.base, *self.by_model.values()]
        return not any(
            t.get("styles") or t.get("axes") or int(t.get("candidates") or 1) > 1 for t in tables
        )

    @property
    def varies_by_model(self) -> bool:
        return bool(self.by_model)

    def axes(self) -> list[str]:
        """Every axis any model's variants have, in order: style, params, candidate."""
        names: list[str] = []
        tables = [self.base, *self.by_model.values()]
        if any(t.get("styles") for t in tables):
            names.append(STYLE)
        for t in tables:
            names.extend(k for k in (t.get("axes") or {}) if k not in names)
        if any(int(t.get("candidates") or 1) > 1 for t in tables):
            names.append(CANDIDATE)
        return names

    def styles(self) -> dict[str, str]:
        """Every style template, by ``variants.styles.<name>`` key (for column checks)."""
        out = {f"variants.styles.{n}": t for n, t in (self.base.get("styles") or {}).items()}
        for model, table in self.by_model.items():
            for name, template in (table.get("styles") or {}).items():
                out[f'variants_by_model."{model}".styles.{name}'] = template
        return out

    def for_model(self, model: str | None) -> tuple[Variant, ...]:
        """The variants of a row of ``model``, in order (the empty variant alone when none)."""
        found = self._cache.get(model)
        if found is not None:
            return found
        table: dict[str, Any] = dict(self.base)
        override = self.by_model.get(model or "")
        if override:
            table["axes"] = {**(self.base.get("axes") or {}), **(override.get("axes") or {})}
            for k in ("styles", "candidates"):
                if k in override:
                    table[k] = override[k]
        found = _expand(table) if not _is_empty(table) else (EMPTY,)
        self._cache[model] = found
        return found


def _is_empty(table: Mapping[str, Any]) -> bool:
    return not (table.get("styles") or table.get("axes") or int(table.get("candidates") or 1) > 1)


def _expand(table: Mapping[str, Any]) -> tuple[Variant, ...]:
    styles: dict[str, str] = dict(table.get("styles") or {})
    axes: dict[str, list[str]] = dict(table.get("axes") or {})
    candidates = int(table.get("candidates") or 1)
    style_list: list[tuple[str, str] | None] = list(styles.items()) or [None]
    cand_list: list[int | None] = list(range(1, candidates + 1)) if candidates > 1 else [None]
    out = []
    for index, (style, values, cand) in enumerate(
        itertools.product(style_list, itertools.product(*axes.values()), cand_list)
    ):
        shown: list[tuple[str, str]] = []
        parts: list[str] = []
        if style is not None:
            shown.append((STYLE, style[0]))
            parts.append(_component(style[0]))
        params: list[tuple[str, Any]] = []
        aspect = None
        for name, value in zip(axes, values, strict=True):
            shown.append((name, value))
            parts.append(_component(value))
            if name == ASPECT:
                aspect = value
            else:
                params.append((name, value))
        if cand is not None:
            shown.append((CANDIDATE, str(cand)))
            parts.append(f"c{cand}")
        out.append(
            Variant(
                id="/".join(parts),
                index=index,
                axes=tuple(shown),
                style=style[0] if style else None,
                template=style[1] if style else None,
                params=tuple(params),
                aspect=aspect,
                candidate=cand,
            )
        )
    return tuple(out)
