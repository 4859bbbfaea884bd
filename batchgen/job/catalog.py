"""The model catalog: what each model accepts, what it costs, and the checks built on it.

The catalog is shipped in the exact shape of ``GET /api/v1/models`` (``batchgen/data/models.json``)
and can be rebuilt from a live payload with :meth:`Catalog.from_api`. Parsing is tolerant: unknown
fields are ignored, missing optional ones take safe defaults.

One module answers for both sides of the wire: batchgen's offline preflight and the simulator's
``POST /generations`` and ``POST /files`` call the same :meth:`Catalog.validate` and
:meth:`Catalog.validate_file`. Every problem is a :class:`Violation` naming the field and the rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from batchgen.job.filetypes import FILE_KINDS

MB = 1_000_000
"""The contract's megabyte: 10 MB = 10,000,000 bytes."""

REFERENCE_PARAM = "referenceMediaItems"
"""The params key that carries reference files; validated through ``references``, not as a param."""

DEFAULT_FILE_RULES: Mapping[str, tuple[frozenset[str], int]] = MappingProxyType(
    {
        "image": (frozenset({"image/jpeg", "image/png", "image/webp"}), 10 * MB),
        "video": (frozenset({"video/mp4", "video/quicktime", "video/webm"}), 50 * MB),
        "audio": (
            frozenset(
                {"audio/mpeg", "audio/mp4", "audio/wav", "audio/x-wav", "audio/aac", "audio/ogg"}
            ),
            10 * MB,
        ),
    }
)
"""Files API limits when no model is given: kind -> (MIME types, max bytes)."""

_DATA_FILE = Path(__file__).parent.parent / "data" / "models.json"

# Aspect of each named size; "W:H" strings are parsed directly.
_NAMED_ASPECTS = {
    "square": "1:1",
    "square_hd": "1:1",
    "portrait_4_3": "3:4",
    "portrait_16_9": "9:16",
    "landscape_4_3": "4:3",
    "landscape_16_9": "16:9",
}
_ASPECT_KEYS = ("image_size", "aspect_ratio", "aspectRatio", "imageSize")
_FORMAT_KEYS = ("output_format", "outputFormat", "format")


@dataclass(frozen=True)
class ParamSpec:
    """One model parameter as the catalog describes it."""

    key: str
    type: str
    default: Any = None
    options: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    required: bool = False
    known: bool = True
    """False for a param the public docs do not state: its value is sent unchecked."""


@dataclass(frozen=True)
class ReferenceRule:
    """What reference files a model accepts."""

    max_files: int
    kinds: frozenset[str]
    mime_types: frozenset[str]
    max_bytes: int


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry, parsed."""

    id: str
    display_name: str
    category: str
    base_credits: int
    billing_type: str
    max_prompt_length: int | None
    prompt_required: bool
    params: Mapping[str, ParamSpec]
    api_status: str
    reference: ReferenceRule | None
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    params_known: bool = True
    """False when the public docs do not list the model's params: other keys are sent unchecked."""


@dataclass(frozen=True)
class ReferenceInfo:
    """A reference file as the checks see it; ``mime_type`` is detected from its signature.

    ``damage`` is :func:`batchgen.job.filetypes.image_problem`'s verdict on its bytes:
    ``(rule, detail)`` when the image does not decode.
    """

    kind: str
    mime_type: str | None
    size: int
    name: str | None = None
    damage: tuple[str, str] | None = None


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``field`` (e.g. ``params.seed``), ``rule`` slug, and a readable message."""

    field: str
    rule: str
    message: str


def aspect_of(value: Any) -> str | None:
    """The ``"W:H"`` aspect of an image size value (``square_hd`` -> ``1:1``); None if unknown."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    named = _NAMED_ASPECTS.get(text.lower())
    if named:
        return named
    for sep in (":", "x", "/"):
        if sep in text:
            left, _, right = text.partition(sep)
            if left.strip().isdigit() and right.strip().isdigit():
                w, h = int(left), int(right)
                if w > 0 and h > 0:
                    g = math.gcd(w, h)
                    return f"{w // g}:{h // g}"
    return None


# --------------------------------------------------------------------------- parsing


def _as_int(value: Any, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return default


def _as_num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _parse_param(raw: Mapping[str, Any]) -> ParamSpec | None:
    key = raw.get("key") or raw.get("name")
    if not isinstance(key, str) or not key:
        return None
    options = raw.get("options")
    opts: tuple[str, ...] | None = None
    if isinstance(options, list):
        values = [o.get("value") if isinstance(o, Mapping) else o for o in options]
        opts = tuple(_select_str(v) for v in values if v is not None)
    ptype = str(raw.get("type") or ("select" if opts is not None else "string"))
    default = raw.get("default")
    if ptype == "select" and default is not None:
        default = _select_str(default)
    return ParamSpec(
        key=key,
        type=ptype,
        default=default,
        options=opts,
        minimum=_as_num(raw.get("minimum", raw.get("min"))),
        maximum=_as_num(raw.get("maximum", raw.get("max"))),
        integer=bool(raw.get("integer", False)),
        required=bool(raw.get("required", False)),
        known=raw.get("unknown") is not True,
    )


def _parse_reference(raw: Any) -> ReferenceRule | None:
    if not isinstance(raw, Mapping):
        return None
    max_files = _as_int(raw.get("max_files"), 0) or 0
    if max_files <= 0:
        return None
    kinds = raw.get("kinds") or []
    mimes = raw.get("mime_types") or []
    kinds_set = frozenset(str(k) for k in kinds) or frozenset({"image"})
    mime_set = frozenset(str(m) for m in mimes) or frozenset(
        m for k in kinds_set if k in DEFAULT_FILE_RULES for m in DEFAULT_FILE_RULES[k][0]
    )
    default_max = max(
        (DEFAULT_FILE_RULES[k][1] for k in kinds_set if k in DEFAULT_FILE_RULES), default=10 * MB
    )
    return ReferenceRule(
        max_files=max_files,
        kinds=kinds_set,
        mime_types=mime_set,
        max_bytes=_as_int(raw.get("max_bytes"), default_max) or default_max,
    )


def _parse_model(raw: Mapping[str, Any]) -> ModelSpec | None:
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id:
        return None
    params: dict[str, ParamSpec] = {}
    raw_params = raw.get("params")
    if isinstance(raw_params, list):
        for item in raw_params:
            if isinstance(item, Mapping) and (spec := _parse_param(item)) is not None:
                params[spec.key] = spec
    elif isinstance(raw_params, Mapping):  # tolerate {key: spec} form
        for key, item in raw_params.items():
            if isinstance(item, Mapping) and (spec := _parse_param({"key": key, **item})):
                params[spec.key] = spec
    max_prompt = _as_int(raw.get("max_prompt_length"), None)
    return ModelSpec(
        id=model_id,
        display_name=str(raw.get("display_name") or model_id),
        category=str(raw.get("category") or "image"),
        base_credits=_as_int(raw.get("base_credits"), 0) or 0,
        billing_type=str(raw.get("billing_type") or "FIXED"),
        max_prompt_length=max_prompt if max_prompt and max_prompt > 0 else None,
        prompt_required=bool(raw.get("prompt_required", True)),
        params=MappingProxyType(params),
        api_status=str(raw.get("api_status") or "available"),
        reference=_parse_reference(raw.get("reference_media")),
        raw=MappingProxyType(dict(raw)),
        params_known=raw.get("params_unknown") is not True,
    )


def _select_str(value: Any) -> Any:
    """Canonical wire string of a select value (``True`` -> ``"true"``, ``2.0`` -> ``"2"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return value


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# --------------------------------------------------------------------------- catalog

SHIPPED = "shipped"
LIVE = "live"
CACHE = "cache"
FILE = "file"


@dataclass(frozen=True)
class CatalogOrigin:
    """Where a catalog came from: ``source`` (shipped, live, cache or file), the URL or file it
    came from, and when it was fetched from the service (epoch seconds; None: never fetched)."""

    source: str
    location: str = ""
    fetched_at: float | None = None

    def age(self, now: float) -> float | None:
        """Seconds since the fetch; None when never fetched."""
        return None if self.fetched_at is None else max(0.0, now - self.fetched_at)

    def describe(self, now: float) -> str:
        """One line for people: which catalog, and how old."""
        age = self.age(now)
        old = f"fetched {_ago(age)}" if age is not None else ""
        if self.source == LIVE:
            return f"live catalog from {self.location} ({old})"
        if self.source == CACHE:
            return f"cached catalog of {self.location} ({old})"
        if self.source == FILE:
            return f"catalog file {self.location} (pinned by --catalog)"
        return "shipped catalog (the copy in this batchgen)"

    def short(self, now: float) -> str:
        """A few words for status lines: ``cached catalog, fetched 2.1 h ago``."""
        age = self.age(now)
        name = {LIVE: "live", CACHE: "cached", FILE: "pinned"}.get(self.source, "shipped")
        return f"{name} catalog" + (f", fetched {_ago(age)}" if age is not None else "")

    def as_dict(self, now: float) -> dict[str, Any]:
        """JSON form: source, location, fetched_at (ISO), age_seconds, description."""
        from datetime import UTC, datetime

        age = self.age(now)
        return {
            "source": self.source,
            "location": self.location or None,
            "fetched_at": (
                datetime.fromtimestamp(self.fetched_at, UTC).isoformat(timespec="seconds")
                if self.fetched_at is not None
                else None
            ),
            "age_seconds": round(age) if age is not None else None,
            "description": self.describe(now),
        }


def _ago(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


class CatalogError(ValueError):
    """A catalog payload that holds no usable model."""


class Catalog:
    """The set of models, with request validation and credit cost."""

    def __init__(
        self,
        models: Sequence[ModelSpec],
        payload: Mapping[str, Any],
        origin: CatalogOrigin | None = None,
    ) -> None:
        self._models: dict[str, ModelSpec] = {m.id: m for m in models}
        self._payload = payload
        self._digest: str | None = None
        self._aspects: dict[str, dict[str, tuple[str, str]]] = {}
        self.origin = origin or CatalogOrigin(SHIPPED)

    @classmethod
    def default(cls) -> Catalog:
        """The catalog shipped with batchgen (``batchgen/data/models.json``), cached."""
        return _default_catalog()

    @classmethod
    def from_api(cls, payload: Mapping[str, Any], origin: CatalogOrigin | None = None) -> Catalog:
        """Build from a ``GET /api/v1/models`` payload; entries it cannot parse are skipped."""
        entries = payload.get("data") if isinstance(payload, Mapping) else None
        models = []
        for raw in entries if isinstance(entries, list) else []:
            if isinstance(raw, Mapping) and (spec := _parse_model(raw)) is not None:
                models.append(spec)
        return cls(models, payload, origin)

    @classmethod
    def parse(cls, payload: Any, origin: CatalogOrigin | None = None) -> Catalog:
        """Like :meth:`from_api`, but strict about the envelope: raises CatalogError unless the
        payload is ``{"data": [...]}`` with at least one model it can parse."""
        if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
            raise CatalogError('not a model list: expected {"object": "list", "data": [...]}')
        catalog = cls.from_api(payload, origin)
        if not catalog.ids():
            raise CatalogError("no model entry with an id")
        return catalog

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        """A catalog saved as a ``GET /api/v1/models`` payload; OSError or CatalogError."""
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogError(f"not JSON: {exc}") from None
        return cls.parse(payload, CatalogOrigin(FILE, str(path)))

    def with_prices(self, prices: Mapping[str, int]) -> Catalog:
        """The same catalog with the base credits of some models replaced (observed prices)."""
        payload = self.to_api()
        for entry in payload.get("data") or []:
            if isinstance(entry, dict) and entry.get("id") in prices:
                entry["base_credits"] = prices[entry["id"]]
        return Catalog.from_api(payload, self.origin)

    def get(self, model_id: str) -> ModelSpec | None:
        """The model, or None when the catalog does not know it."""
        return self._models.get(model_id)

    def ids(self) -> list[str]:
        """Model ids in catalog order."""
        return list(self._models)

    def digest(self) -> str:
        """sha256 of the catalog's definition: it changes whenever any model's rules do."""
        if self._digest is None:
            text = json.dumps(self._payload, sort_keys=True, separators=(",", ":"))
            self._digest = hashlib.sha256(text.encode()).hexdigest()
        return self._digest

    def to_api(self) -> dict[str, Any]:
        """The ``GET /api/v1/models`` payload (a deep copy, safe to mutate)."""
        copied: dict[str, Any] = json.loads(json.dumps(self._payload))
        return copied

    # ------------------------------------------------------------------ params

    def normalize_params(self, model_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical wire form of ``params`` for ``model_id``.

        Select values become strings (``True`` -> ``"true"``, a case-insensitive option match ->
        the option's spelling); integer numbers become ``int`` (``"7"``, ``7.0`` -> ``7``); an
        optional number left blank (``None``/``""``, "empty = random") is dropped. Anything that
        cannot be converted, and keys the model does not have, are kept as given for
        :meth:`validate` to report. No defaults are added.
        """
        model = self._models.get(model_id)
        out: dict[str, Any] = {}
        for key, value in params.items():
            spec = model.params.get(key) if model else None
            if spec is None:
                out[key] = value
            elif spec.type == "select":
                out[key] = _normalize_select(spec, value)
            elif spec.type in ("number", "integer"):
                if _is_blank(value) and not spec.required:
                    continue
                out[key] = _normalize_number(spec, value)
            else:
                out[key] = value
        return out

    # ------------------------------------------------------------------ checks

    def validate(
        self,
        model_id: str,
        prompt: str | None,
        params: Mapping[str, Any],
        references: Sequence[ReferenceInfo] = (),
    ) -> list[Violation]:
        """Every rule a generation request breaks; empty when it is valid.

        Checks the wire form strictly (call :meth:`normalize_params` first on user input):
        select values must be option strings, integer params JSON integers.
        """
        model = self._models.get(model_id) if isinstance(model_id, str) else None
        if model is None:
            known = ", ".join(self._models)
            return [
                Violation(
                    "model",
                    "unknown_model",
                    f"model: unknown model {model_id!r} (unknown_model); known: {known}",
                )
            ]
        out: list[Violation] = []
        if model.api_status != "available":
            out.append(
                Violation(
                    "model",
                    "not_available",
                    f"model: {model.id} is {model.api_status} in the API (not_available)",
                )
            )
        out.extend(_check_prompt(model, prompt))
        if not isinstance(params, Mapping):
            out.append(Violation("params", "type", "params: must be an object (type)"))
            params = {}
        for key, value in params.items():
            if key == REFERENCE_PARAM:
                continue
            spec = model.params.get(key)
            if spec is None and not model.params_known:
                continue  # the docs do not list this model's params: the service decides
            if spec is None:
                allowed = ", ".join(model.params) or "none"
                out.append(
                    Violation(
                        f"params.{key}",
                        "unknown_param",
                        f"params.{key}: {model.id} has no parameter {key!r} (unknown_param); "
                        f"allowed: {allowed}",
                    )
                )
                continue
            problem = _check_value(spec, value) if spec.known else None
            if problem is not None:
                rule, text = problem
                out.append(Violation(f"params.{key}", rule, f"params.{key}: {text} ({rule})"))
        for spec in model.params.values():
            if spec.required and spec.key not in params:
                out.append(
                    Violation(
                        f"params.{spec.key}",
                        "required",
                        f"params.{spec.key}: required by {model.id} (required)",
                    )
                )
        out.extend(_check_references(model, references))
        return out

    def validate_file(
        self, kind: str, info: ReferenceInfo, model_id: str | None = None
    ) -> list[Violation]:
        """Rules of ``POST /files``: the declared ``kind``, detected MIME and size.

        Without ``model_id`` the default limits apply (image 10 MB jpeg/png/webp, video 50 MB
        mp4/quicktime/webm, audio 10 MB); with it, the model's reference rule.
        """
        if kind not in FILE_KINDS:
            return [
                Violation(
                    "kind", "kind", f"kind: must be image, video or audio, not {kind!r} (kind)"
                )
            ]
        mimes, max_bytes = DEFAULT_FILE_RULES[kind]
        out: list[Violation] = []
        if model_id:
            model = self._models.get(model_id)
            if model is None:
                return [
                    Violation(
                        "model",
                        "unknown_model",
                        f"model: unknown model {model_id!r} (unknown_model)",
                    )
                ]
            rule = model.reference
            if rule is None:
                return [
                    Violation(
                        "model",
                        "no_references",
                        f"model: {model.id} accepts no reference files (no_references)",
                    )
                ]
            if kind not in rule.kinds:
                allowed = ", ".join(sorted(rule.kinds))
                return [
                    Violation(
                        "kind", "kind", f"kind: {model.id} accepts {allowed}, not {kind} (kind)"
                    )
                ]
            mimes, max_bytes = rule.mime_types, rule.max_bytes
        mime = info.mime_type
        if mime is None or mime not in mimes:
            detected = mime or "unrecognised content"
            allowed = ", ".join(sorted(mimes))
            out.append(
                Violation(
                    "file",
                    "mime",
                    f"file: detected {detected} from the file signature; {kind} files must be "
                    f"{allowed} (mime)",
                )
            )
        if info.size > max_bytes:
            out.append(
                Violation(
                    "file",
                    "max_bytes",
                    f"file: {info.size} bytes exceeds the {kind} limit of {max_bytes} bytes "
                    f"({max_bytes / MB:g} MB) (max_bytes)",
                )
            )
        if info.size == 0:
            out.append(Violation("file", "empty", "file: is empty (empty)"))
        elif info.damage is not None and mime in mimes:
            what, detail = info.damage
            out.append(Violation("file", what, f"file: {detail} ({what})"))
        return out

    def validate_references(
        self, model_id: str, references: Sequence[ReferenceInfo]
    ) -> list[Violation]:
        """The reference rules alone (count, kind, MIME, size, decoding) of a known model."""
        model = self._models.get(model_id)
        return _check_references(model, references) if model is not None else []

    def aspects(self, model_id: str) -> dict[str, tuple[str, str]]:
        """Portable aspect (``"16:9"``) -> (param key, the model's own option), for a model.

        From the entry's ``aspects`` data (``{"param": ..., "options": {aspect: option}}``) when
        the catalog has it; otherwise derived from the options of its size or aspect param
        (the param's default wins when two options have one aspect). Empty when the model has
        no such param.
        """
        found = self._aspects.get(model_id)
        if found is None:
            found = self._aspects[model_id] = self._find_aspects(model_id)
        return found

    def _find_aspects(self, model_id: str) -> dict[str, tuple[str, str]]:
        model = self._models.get(model_id)
        if model is None:
            return {}
        data = model.raw.get("aspects")
        if isinstance(data, Mapping) and isinstance(data.get("options"), Mapping):
            param = str(data.get("param") or "")
            if param in model.params:
                return {
                    str(a): (param, str(o))
                    for a, o in data["options"].items()
                    if isinstance(o, str) and o in (model.params[param].options or (o,))
                }
        for key in _ASPECT_KEYS:
            spec = model.params.get(key)
            if spec is None or not spec.options:
                continue
            found: dict[str, tuple[str, str]] = {}
            for option in spec.options:
                aspect = aspect_of(option)
                if aspect is not None and (aspect not in found or option == spec.default):
                    found[aspect] = (key, option)
            return found
        return {}

    def cost(self, model_id: str, params: Mapping[str, Any]) -> int:
        """Credits reserved on create (FIXED billing: the model's base credits)."""
        model = self._models.get(model_id)
        if model is None:
            raise KeyError(f"unknown model {model_id!r}")
        return model.base_credits

    def image_target(self, model_id: str, params: Mapping[str, Any]) -> tuple[str, str]:
        """``(aspect "W:H", format "png"|"jpeg")`` of the image a request produces.

        Takes the aspect from ``image_size``/``aspect_ratio``/``aspectRatio`` (given or the
        model's default) and the format from ``output_format``; ``1:1``/``png`` when unknown.
        """
        model = self._models.get(model_id)
        aspect = fmt = None
        for key in _ASPECT_KEYS:
            value = params.get(key)
            if value is None and model and key in model.params:
                value = model.params[key].default
            if (aspect := aspect_of(value)) is not None:
                break
        for key in _FORMAT_KEYS:
            value = params.get(key)
            if value is None and model and key in model.params:
                value = model.params[key].default
            if isinstance(value, str) and value.strip():
                fmt = value.strip().lower()
                break
        fmt = "jpeg" if fmt in ("jpg", "jpeg") else "webp" if fmt == "webp" else "png"
        return aspect or "1:1", fmt


def _normalize_select(spec: ParamSpec, value: Any) -> Any:
    text = _select_str(value)
    if isinstance(text, str) and spec.options and text not in spec.options:
        folded = text.strip().lower()
        for option in spec.options:
            if option.lower() == folded:
                return option
    return text


def _normalize_number(spec: ParamSpec, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if spec.integer:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text)
            except ValueError:
                return value
            return int(number) if number.is_integer() and math.isfinite(number) else value
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return int(number) if number.is_integer() and math.isfinite(number) else number
    return value


def _check_prompt(model: ModelSpec, prompt: Any) -> list[Violation]:
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        if model.prompt_required:
            return [Violation("prompt", "required", f"prompt: required by {model.id} (required)")]
        return []
    if not isinstance(prompt, str):
        return [Violation("prompt", "type", "prompt: must be a string (type)")]
    limit = model.max_prompt_length
    if limit is not None and len(prompt) > limit:
        return [
            Violation(
                "prompt",
                "max_length",
                f"prompt: {len(prompt)} characters exceeds {model.id}'s limit of {limit} "
                "(max_length)",
            )
        ]
    return []


def _check_value(spec: ParamSpec, value: Any) -> tuple[str, str] | None:
    """``(rule, text)`` when ``value`` breaks ``spec``."""
    if spec.type == "select":
        if not isinstance(value, str):
            return "option", f"must be one of the option strings, got {value!r}"
        if spec.options is not None and value not in spec.options:
            return "option", f"{value!r} is not one of {', '.join(spec.options)}"
        return None
    if spec.type in ("number", "integer"):
        integer = spec.integer or spec.type == "integer"
        if isinstance(value, bool) or not isinstance(value, int | float):
            what = "an integer" if integer else "a number"
            rule = "integer_min" if integer and spec.minimum is not None else "type"
            bound = f" >= {spec.minimum:g}" if integer and spec.minimum is not None else ""
            return rule, f"must be {what}{bound}, got {value!r}"
        if integer and not isinstance(value, int):
            rule = "integer_min" if spec.minimum is not None else "integer"
            bound = f" >= {spec.minimum:g}" if spec.minimum is not None else ""
            return rule, f"must be an integer{bound}, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return "type", f"must be a finite number, got {value!r}"
        if spec.minimum is not None and value < spec.minimum:
            rule = "integer_min" if integer else "minimum"
            return rule, f"must be >= {spec.minimum:g}, got {value!r}"
        if spec.maximum is not None and value > spec.maximum:
            rule = "integer_max" if integer else "maximum"
            return rule, f"must be <= {spec.maximum:g}, got {value!r}"
        return None
    if spec.type in ("boolean", "bool") and not isinstance(value, bool):
        return "type", f"must be true or false, got {value!r}"
    if spec.type in ("string", "text") and not isinstance(value, str):
        return "type", f"must be a string, got {value!r}"
    return None


def _check_references(model: ModelSpec, refs: Sequence[ReferenceInfo]) -> list[Violation]:
    if not refs:
        return []
    rule = model.reference
    if rule is None:
        return [
            Violation(
                "reference",
                "max_files",
                f"reference: {model.id} accepts no reference files, got {len(refs)} (max_files)",
            )
        ]
    out: list[Violation] = []
    if len(refs) > rule.max_files:
        out.append(
            Violation(
                "reference",
                "max_files",
                f"reference: {model.id} accepts at most {rule.max_files} file(s), got {len(refs)} "
                "(max_files)",
            )
        )
    for ref in refs:
        label = f"reference {ref.name!r}" if ref.name else "reference"
        if ref.kind not in rule.kinds:
            allowed = ", ".join(sorted(rule.kinds))
            out.append(
                Violation(
                    "reference",
                    "kind",
                    f"{label}: kind {ref.kind!r} is not accepted by {model.id} ({allowed}) (kind)",
                )
            )
        if ref.mime_type is None or ref.mime_type not in rule.mime_types:
            allowed = ", ".join(sorted(rule.mime_types))
            detected = ref.mime_type or "unrecognised content"
            out.append(
                Violation(
                    "reference",
                    "mime",
                    f"{label}: detected {detected} from the file signature; {model.id} "
                    f"accepts {allowed} (mime)",
                )
            )
        if ref.size > rule.max_bytes:
            out.append(
                Violation(
                    "reference",
                    "max_bytes",
                    f"{label}: {ref.size} bytes exceeds {model.id}'s limit of {rule.max_bytes} "
                    f"bytes (max_bytes)",
                )
            )
        elif ref.damage is not None and ref.mime_type in rule.mime_types:
            what, detail = ref.damage
            out.append(
                Violation(
                    "reference",
                    what,
                    f"{label}: {detail}; export the image again or replace the file ({what})",
                )
            )
    return out


@lru_cache(maxsize=1)
def _default_catalog() -> Catalog:
    payload = json.loads(_DATA_FILE.read_text(encoding="utf-8"))
    return Catalog.from_api(payload)
