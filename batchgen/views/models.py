"""``batchgen models``: what each model accepts and costs, as the catalog in use says."""

from __future__ import annotations

import time
from typing import Any

from batchgen.job.catalog import Catalog, ModelSpec, ParamSpec


def param_dict(spec: ParamSpec) -> dict[str, Any]:
    """One param, for ``--json``."""
    return {
        "key": spec.key,
        "type": "integer" if spec.integer and spec.type == "number" else spec.type,
        "options": list(spec.options) if spec.options is not None else None,
        "default": spec.default,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "required": spec.required,
        "checked": spec.known,
    }


def model_dict(model: ModelSpec) -> dict[str, Any]:
    """One model, for ``--json``."""
    ref = model.reference
    return {
        "id": model.id,
        "display_name": model.display_name,
        "category": model.category,
        "credits": model.base_credits,
        "billing": model.billing_type,
        "api_status": model.api_status,
        "max_prompt_length": model.max_prompt_length,
        "params": [param_dict(p) for p in model.params.values()],
        "params_checked": model.params_known,
        "references": (
            {
                "max_files": ref.max_files,
                "kinds": sorted(ref.kinds),
                "mime_types": sorted(ref.mime_types),
                "max_bytes": ref.max_bytes,
            }
            if ref is not None
            else None
        ),
    }


def models_json(catalog: Catalog, model_id: str | None = None) -> dict[str, Any]:
    """``batchgen models --json``: the catalog's origin and its models (or the one asked)."""
    ids = [model_id] if model_id else catalog.ids()
    models = [model_dict(m) for i in ids if (m := catalog.get(i)) is not None]
    return {"catalog": catalog.origin.as_dict(time.time()), "models": models}


def _param_line(spec: ParamSpec) -> str:
    kind = "integer" if spec.integer and spec.type == "number" else spec.type
    parts = [f"{spec.key} ({kind})"]
    if spec.options is not None:
        parts.append("one of " + ", ".join(spec.options))
    bounds = []
    if spec.minimum is not None:
        bounds.append(f">= {spec.minimum:g}")
    if spec.maximum is not None:
        bounds.append(f"<= {spec.maximum:g}")
    if bounds:
        parts.append(" and ".join(bounds))
    if spec.default is not None:
        parts.append(f"default {spec.default}")
    elif not spec.required:
        parts.append("optional")
    if spec.required:
        parts.append("required")
    if not spec.known:
        parts.append("unchecked: the public docs do not state it in full")
    return "; ".join(parts)


def render_table(catalog: Catalog) -> str:
    """Every model on one line: id, credits, billing, prompt limit, params, references."""
    header = ("model", "credits", "billing", "prompt", "params", "references")
    rows = []
    for model_id in catalog.ids():
        m = catalog.get(model_id)
        assert m is not None
        params = ", ".join(m.params) or ("-" if m.params_known else "not public")
        if not m.params_known and m.params:
            params += " (+ unlisted)"
        rows.append(
            (
                m.id,
                str(m.base_credits),
                m.billing_type,
                str(m.max_prompt_length or "-"),
                params,
                _refs(m),
            )
        )
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    head = "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()
    origin = catalog.origin.describe(time.time())
    return "\n".join([head, *lines, "", f"catalog: {origin}"])


def render_model(catalog: Catalog, model_id: str) -> str:
    """One model in full: credits, billing, prompt limit, every param, reference rules."""
    m = catalog.get(model_id)
    assert m is not None
    lines = [
        f"{m.id} ({m.display_name}, {m.category}, {m.api_status})",
        f"  credits: {m.base_credits} per task, billing {m.billing_type}",
        f"  prompt: {'at most ' + str(m.max_prompt_length) + ' characters' if m.max_prompt_length else 'no stated limit'}"
        + ("" if m.prompt_required else " (optional)"),
        "  params:" + ("" if m.params else " none listed"),
    ]
    lines.extend(f"    {_param_line(p)}" for p in m.params.values())
    if not m.params_known:
        lines.append(
            "    (the public docs do not list this model's params: others are sent unchecked)"
        )
    lines.append(f"  references: {_refs(m, full=True)}")
    lines.append(f"catalog: {catalog.origin.describe(time.time())}")
    return "\n".join(lines)


def _refs(m: ModelSpec, *, full: bool = False) -> str:
    ref = m.reference
    if ref is None:
        return "none"
    text = f"{ref.max_files} {'/'.join(sorted(ref.kinds))}"
    if full:
        text += f" file(s), {', '.join(sorted(ref.mime_types))}, at most {ref.max_bytes:,} bytes"
    return text
