"""Settings: one frozen record resolved once from flags, environment, job file and defaults.

Precedence, field by field: command-line flag > environment variable > job file (TOML) >
default. Relative paths in a job file are relative to the job file's folder; relative paths
from flags and environment variables are relative to the current directory; ``~`` is expanded.
Every problem raises :class:`~batchgen.errors.UsageError` naming the flag, variable or job-file
key, before anything is sent. Library code never reads ``os.environ``: the caller passes it.

:data:`SETTINGS_DOC` lists every setting (field, flag, environment variable, job-file key,
default, meaning); README.md and ``--help`` are generated from it, and checked against it.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import UsageError
from batchgen.job.apikey import ApiKey, read_key_file
from batchgen.job.coerce import (
    Value,
    as_bool,
    as_choice,
    as_delimiter,
    as_encoding,
    as_float,
    as_int,
    as_range,
    as_str,
    as_str_list,
    expand_path,
    suggest,
)
from batchgen.job.settings_table import DEFAULTS, DOC_BY_FIELD, JOB_KEYS, ZERO_MEANS
from batchgen.job.template import parse_template

if TYPE_CHECKING:
    from batchgen.job.catalog import Catalog

MANIFEST_FORMATS = ("csv", "parquet", "jsonl")
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
OUTPUT_SUFFIXES = (".csv", ".parquet")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
LOG_FORMATS = ("human", "json")
DEFAULT_BASE_URL: str = DEFAULTS["base_url"]
NO_KEY_SOURCE = "RIVYA_API_KEY (not set)"


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, resolved once. ``repr`` never shows the API key.

    The mappings are plain dicts (so Settings pickles): treat them as read-only.
    """

    job_file: Path | None
    job_id: str
    manifest: Path
    manifest_format: str
    encoding: str
    delimiter: str
    id_column: str
    model_column: str | None
    prompt_column: str | None
    reference_column: str | None
    passthrough: tuple[str, ...]
    param_columns: Mapping[str, str]
    batch_size: int
    model: str | None
    template: str | None
    params: Mapping[str, Any]
    params_by_model: Mapping[str, Mapping[str, Any]]
    variants: Mapping[str, Any] | None
    variants_by_model: Mapping[str, Mapping[str, Any]] | None
    output: Path
    journal: Path
    download_dir: Path | None
    download_name: str | None
    max_tasks_in_flight: int
    max_requests_in_flight: int
    upload_concurrency: int
    download_concurrency: int
    rate: float | None
    poll_first: tuple[float, float]
    poll_interval: tuple[float, float]
    task_timeout: float
    max_credits: int | None
    allow_partial: bool
    retry_failed: bool
    dry_run: bool
    base_url: str
    catalog: Path | None
    catalog_max_age: float
    cache_dir: Path
    api_key: ApiKey | None = field(repr=False, compare=False)
    api_key_source: str
    simulate: bool
    progress: str
    quiet: bool
    log_format: str
    status_interval: float
    # Where each field's value came from ("--output", "BATCHGEN_OUTPUT", "jobs/x.toml:
    # output.path" or "default"), so later errors can name the flag or key to fix.
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def where(self, name: str) -> str:
        """Name the flag, environment variable or job-file key that set field ``name``."""
        source = self.sources.get(name)
        doc = DOC_BY_FIELD.get(name)
        if source and source != "default":
            return source
        if doc is not None:
            return " / ".join(x for x in (doc.flag, doc.job_key) if x) or name
        return name


_INT_MIN = {
    "batch_size": 1,
    "max_tasks_in_flight": 1,
    "max_requests_in_flight": 1,
    "upload_concurrency": 1,
    "download_concurrency": 1,
    "max_credits": 0,
}
_FLOATS = ("rate", "task_timeout", "status_interval", "catalog_max_age")
_MAY_BE_ZERO = ("catalog_max_age",)
_RANGES = ("poll_first", "poll_interval")
_BOOLS = ("allow_partial", "retry_failed", "dry_run", "simulate", "quiet")
_PATHS = ("manifest", "output", "journal", "download_dir", "catalog", "cache_dir")
_OPTIONAL_STRS = (
    "model_column", "reference_column", "model", "template", "prompt_column", "download_name",
)  # fmt: skip
_STRS = ("job_id", "manifest_format", "id_column", "base_url", "progress", "log_format")
_CHOICES = {
    "manifest_format": MANIFEST_FORMATS,
    "progress": PROGRESS_MODES,
    "log_format": LOG_FORMATS,
}
_MAPPINGS = ("params", "params_by_model", "param_columns")
_TEXT_FORMAT = {"encoding": as_encoding, "delimiter": as_delimiter}  # how manifest text is read
_FIELD_NAMES = (
    *_INT_MIN, *_FLOATS, *_RANGES, *_BOOLS, *_PATHS, *_OPTIONAL_STRS, *_STRS, *_MAPPINGS,
    *_TEXT_FORMAT, "passthrough",
)  # fmt: skip
_FLAG_NAMES = frozenset({*_FIELD_NAMES, "api_key", "api_key_file", "variants"})


def resolve_settings(
    job_file: Path | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    catalog: Catalog | None = None,
    cwd: Path | None = None,
    check_models: bool = True,
) -> Settings:
    """Resolve flags (Settings field name -> value, None = not given), environment and job file.

    ``catalog`` (default: the packaged one) checks model ids and param keys, unless
    ``check_models`` is false (a first pass, to learn where to get the catalog from); ``cwd``
    (default: the current directory) anchors relative paths given by flags and environment
    variables. Raises UsageError for every problem, naming the flag, variable or job-file key.
    """
    unknown = sorted(set(flags) - _FLAG_NAMES)
    if unknown:
        raise ValueError(f"resolve_settings: unknown flag names {unknown}")
    if catalog is None:
        from batchgen.job.catalog import Catalog

        catalog = Catalog.default()
    cwd = Path.cwd() if cwd is None else cwd
    home = environ.get("HOME")
    job_path = expand_path(Path(job_file), cwd, home) if job_file is not None else None
    job = _load_job_file(job_path, str(job_file)) if job_path is not None else {}
    job_dir = job_path.parent if job_path is not None else cwd

    def pick(name: str, default: Any) -> Value:
        given = flags.get(name)
        if given is not None:
            return Value(given, "--" + name.replace("_", "-"), cwd)
        for var in _env_names(name):
            if environ.get(var, "") != "":
                return Value(environ[var], var, cwd)
        if name in job:
            return Value(job[name][0], f"{job_file}: {job[name][1]}", job_dir)
        return Value(default, "default", None)

    sources: dict[str, str] = {}
    out: dict[str, Any] = {}

    def put(name: str, value: Any, where: str) -> None:
        out[name] = value
        sources[name] = where

    for name, minimum in _INT_MIN.items():
        v = pick(name, DEFAULTS[name])
        put(name, as_int(v, minimum), v.where)
    for name in _FLOATS:
        v = pick(name, DEFAULTS[name])
        number = as_float(v)
        if name not in ZERO_MEANS and name not in _MAY_BE_ZERO and number == 0:
            raise UsageError(f"{name} must be more than 0", v.where, "give a positive number")
        put(name, number, v.where)
    for name in ZERO_MEANS:
        if out[name] == 0:
            out[name] = None
    for name in _RANGES:
        v = pick(name, DEFAULTS[name])
        put(name, as_range(v), v.where)
    for name in _BOOLS:
        v = pick(name, DEFAULTS[name])
        put(name, as_bool(v), v.where)
    for name in (*_STRS, *_OPTIONAL_STRS):
        v = pick(name, DEFAULTS.get(name))
        text = as_str(v, optional=name in _OPTIONAL_STRS)
        if name in _CHOICES and text is not None:
            text = as_choice(text.lower(), _CHOICES[name], v.where)
        put(name, text, v.where)
    v = pick("passthrough", ())
    put("passthrough", as_str_list(v), v.where)
    for name, coerce in _TEXT_FORMAT.items():
        v = pick(name, DEFAULTS[name])
        put(name, coerce(v), v.where)

    paths: dict[str, Path | None] = {}
    for name in _PATHS:
        v = pick(name, None)
        if v.value is None or v.value == "":
            paths[name] = None
        elif not isinstance(v.value, str | Path):
            raise UsageError(f"{name} must be a path", v.where, "give a file path as a string")
        else:
            assert v.base is not None
            paths[name] = expand_path(Path(v.value), v.base, home)
        sources[name] = v.where

    manifest = paths["manifest"]
    if manifest is None:
        raise UsageError(
            "no manifest given",
            "--manifest / manifest.path",
            "name the CSV, Parquet or JSONL file to read",
        )
    if out["job_id"] is None:
        out["job_id"] = (job_path or manifest).stem
        sources["job_id"] = "default"
    if not out["job_id"].strip():
        raise UsageError("job id is blank", sources["job_id"], "give a non-blank job id")
    out["job_id"] = out["job_id"].strip()
    if out["manifest_format"] is None:
        fmt = SUFFIX_FORMATS.get(manifest.suffix.lower())
        if fmt is None:
            raise UsageError(
                f"cannot tell the manifest format from the suffix {manifest.suffix or '(none)'!r}",
                sources["manifest"],
                "use .csv, .parquet or .jsonl, or set manifest.format / --manifest-format",
            )
        out["manifest_format"] = fmt
    if out["id_column"] is None or out["id_column"] == "":
        raise UsageError("id column is blank", sources["id_column"], "name the key column")

    output = paths["output"] or job_dir / "out" / out["job_id"] / "results.csv"
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"output must end in .csv or .parquet, not {output.suffix or '(no suffix)'!r}",
            sources["output"],
            "rename the output file, e.g. out/results.csv",
        )
    journal = paths["journal"] or output.parent / f"{out['job_id']}.journal.sqlite"

    base_url = out["base_url"].strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise UsageError(
            f"base URL {base_url!r} is not an http(s) URL",
            sources["base_url"],
            f"use e.g. {DEFAULT_BASE_URL}",
        )

    model = out["model"]
    if model is not None and check_models:
        _check_model_id(catalog, model.strip(), sources["model"])
        model = model.strip()
    template = out["template"]
    if template is not None:
        parse_template(template, sources["template"])

    params, params_by_model, param_columns = _resolve_params(
        flags, job, str(job_file), catalog if check_models else None
    )
    for name in _MAPPINGS:
        sources.update(_mapping_where(flags, job, name, job_file))

    api_key, api_key_source = _resolve_api_key(flags, environ, job, str(job_file), cwd, job_dir)
    variants, variants_by_model = _resolve_variants(
        flags, environ, job, str(job_file), catalog if check_models else None, model
    )
    if out["download_name"] is not None:
        from batchgen.job.names import parse_download_name

        parse_download_name(out["download_name"], sources["download_name"])

    out.update(
        job_file=job_path, manifest=manifest, output=output, journal=journal, model=model,
        download_dir=paths["download_dir"], base_url=base_url, params=params,
        catalog=paths["catalog"], cache_dir=paths["cache_dir"] or default_cache_dir(),
        params_by_model=params_by_model, param_columns=param_columns, api_key=api_key,
        api_key_source=api_key_source, variants=variants, variants_by_model=variants_by_model,
    )  # fmt: skip
    return Settings(**out, sources=sources)


def default_cache_dir() -> Path:
    """The user's cache folder for batchgen (platformdirs: ``~/.cache/batchgen`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("batchgen", appauthor=False))


# --------------------------------------------------------------------------- job file


def _load_job_file(path: Path, shown: str) -> dict[str, tuple[Any, str]]:
    """Read and flatten a job file: Settings field -> (value, "section.key")."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(
            "job file not found", shown, "check the path to the .toml job file"
        ) from None
    except IsADirectoryError:
        raise UsageError("job file is a folder", shown, "name a .toml file") from None
    except OSError as exc:
        raise UsageError(
            f"cannot read job file: {exc.strerror}", shown, "check its permissions"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(
            f"job file is not valid TOML: {exc}", shown, "fix the syntax at that line"
        ) from None
    except UnicodeDecodeError:
        raise UsageError("job file is not UTF-8 text", shown, "save it as UTF-8") from None
    flat: dict[str, tuple[Any, str]] = {}
    for section in ("variants", "variants_by_model"):  # tables checked by job.variants
        if section in data:
            flat[section] = (data.pop(section), section)
    for section, table in data.items():
        if section not in JOB_KEYS:
            raise UsageError(
                f"unknown section [{section}] in job file",
                shown,
                suggest(section, JOB_KEYS, "sections are"),
            )
        if not isinstance(table, dict):
            raise UsageError(
                f"{section} must be a [{section}] table", f"{shown}: {section}", "see README.md"
            )
        for key, value in table.items():
            if key not in JOB_KEYS[section]:
                raise UsageError(
                    f"unknown key {section}.{key} in job file",
                    f"{shown}: {section}.{key}",
                    suggest(key, JOB_KEYS[section], f"keys of [{section}] are"),
                )
            name = JOB_KEYS[section][key]
            flat[name] = (value, f"{section}.{key}")
    return flat


def _resolve_params(
    flags: Mapping[str, Any],
    job: Mapping[str, tuple[Any, str]],
    shown: str,
    catalog: Catalog | None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, str]]:
    """Merge job-file and flag params (flags win key by key) and check them against the catalog
    (None: check only their shape)."""
    all_keys = (
        [
            *sorted({key for mid in catalog.ids() for key in _model_params(catalog, mid)}),
            "aspect",  # portable: mapped to each model's own size option
        ]
        if catalog is not None
        else None
    )

    def table(name: str, source: Any, where: str) -> dict[str, Any]:
        if source is None:
            return {}
        if not isinstance(source, Mapping):
            raise UsageError(f"{name} must be a table", where, "see README.md")
        return dict(source)

    job_where = {k: f"{shown}: {v[1]}" for k, v in job.items()}
    params = table("params", job.get("params", (None,))[0], job_where.get("params", ""))
    params.update(table("params", flags.get("params"), "--param"))
    for key, value in params.items():
        where = "--param" if key in (flags.get("params") or {}) else job_where["params"] + "." + key
        if all_keys is not None and key not in all_keys:
            raise UsageError(
                f"no model in the catalog has a param {key!r}",
                where,
                suggest(key, all_keys, "known params are"),
            )
        _check_param_value(value, where)

    by_model: dict[str, dict[str, Any]] = {}
    sources = [
        (job.get("params_by_model", (None,))[0], job_where.get("params_by_model", "")),
        (flags.get("params_by_model"), "--params-by-model"),
    ]
    for source, where in sources:
        for model_id, model_params in table("params_by_model", source, where).items():
            here = f"{where}.{model_id}" if where.startswith(shown) else where
            if catalog is not None:
                _check_model_id(catalog, model_id, here)
            merged = by_model.setdefault(model_id, {})
            merged.update(table(f"params_by_model.{model_id}", model_params, here))
            spec = catalog.get(model_id) if catalog is not None else None
            known = [*sorted(spec.params), "aspect"] if spec is not None else []
            for key, value in merged.items():
                if spec is not None and spec.params_known and key not in known:
                    raise UsageError(
                        f"model {model_id!r} has no param {key!r}",
                        f"{here}.{key}",
                        suggest(key, known, f"params of {model_id} are"),
                    )
                _check_param_value(value, f"{here}.{key}")

    columns = table(
        "param_columns", job.get("param_columns", (None,))[0], job_where.get("param_columns", "")
    )
    columns.update(table("param_columns", flags.get("param_columns"), "--param-columns"))
    for key, column in columns.items():
        where = job_where.get("param_columns", "--param-columns") + f".{key}"
        if all_keys is not None and key not in all_keys:
            raise UsageError(
                f"no model in the catalog has a param {key!r}",
                where,
                suggest(key, all_keys, "known params are"),
            )
        if not isinstance(column, str) or not column.strip():
            raise UsageError(f"expected a column name, got {column!r}", where, "quote it")
    return params, by_model, columns


def _resolve_variants(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    job: Mapping[str, tuple[Any, str]],
    shown: str,
    catalog: Catalog | None,
    model: str | None,
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]] | None]:
    """The variant matrix: job file, then ``--variant`` (or ``BATCHGEN_VARIANT``) axis by axis."""
    from batchgen.job.variants import parse_flag_items, resolve_variants

    items = list(flags.get("variants") or ())
    where = "--variant"
    if not items and environ.get("BATCHGEN_VARIANT", "").strip():
        items = [i for i in environ["BATCHGEN_VARIANT"].split(";") if i.strip()]
        where = "BATCHGEN_VARIANT"
    table = job.get("variants", (None,))[0]
    by_model = job.get("variants_by_model", (None,))[0]
    if table is None and by_model is None and not items:
        return None, None
    return resolve_variants(
        table,
        by_model,
        parse_flag_items(items, where),
        shown=shown,
        flag_where=where,
        catalog=catalog,
        default_model=model,
    )


def _model_params(catalog: Catalog, model_id: str) -> Mapping[str, Any]:
    spec = catalog.get(model_id)
    return spec.params if spec is not None else {}


def _check_param_value(value: Any, where: str) -> None:
    scalar = (str, int, float, bool)
    if isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(x, scalar) for x in value)
    ):
        return
    raise UsageError(f"param value {value!r} is not a plain value", where, "give text or a number")


def _check_model_id(catalog: Catalog, model_id: str, where: str) -> None:
    if catalog.get(model_id) is not None:
        return
    close = difflib.get_close_matches(model_id, catalog.ids(), n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UsageError(
        f"unknown model {model_id!r}",
        where,
        f"{hint}models are: {', '.join(sorted(catalog.ids()))}",
    )


def _mapping_where(
    flags: Mapping[str, Any], job: Mapping[str, tuple[Any, str]], name: str, job_file: Any
) -> dict[str, str]:
    if flags.get(name):
        return {name: "--" + name.replace("_", "-")}
    if name in job:
        return {name: f"{job_file}: {job[name][1]}"}
    return {name: "default"}


# --------------------------------------------------------------------------- API key


def _env_names(name: str) -> list[str]:
    """The environment variables of a setting, from the settings table, first one winning."""
    return [var for var in (DOC_BY_FIELD[name].env or "").split(", ") if var]


def _resolve_api_key(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    job: Mapping[str, tuple[Any, str]],
    shown: str,
    cwd: Path,
    job_dir: Path,
) -> tuple[ApiKey | None, str]:
    """Find the key: --api-key, --api-key-file, RIVYA_API_KEY, key-file env vars, job file."""
    home = environ.get("HOME")
    if flags.get("api_key"):
        return _wrap_key(str(flags["api_key"]), "--api-key"), "--api-key"
    if flags.get("api_key_file") is not None:
        path = expand_path(Path(flags["api_key_file"]), cwd, home)
        where = f"--api-key-file {flags['api_key_file']}"
        return _wrap_key(read_key_file(path, where), where), where
    for var in _env_names("api_key"):
        if environ.get(var, "").strip():
            return _wrap_key(environ[var], var), var
    for var in _env_names("api_key_file"):
        if environ.get(var, "").strip():
            path = expand_path(Path(environ[var]), cwd, home)
            where = f"{var} ({environ[var]})"
            return _wrap_key(read_key_file(path, where), where), where
    if "api_key_file" in job:
        value, key = job["api_key_file"]
        where = f"{shown}: {key}"
        if not isinstance(value, str) or not value.strip():
            raise UsageError("expected a file path", where, "quote the path")
        path = expand_path(Path(value), job_dir, home)
        return _wrap_key(read_key_file(path, where), where), where
    return None, NO_KEY_SOURCE


def _wrap_key(value: str, where: str) -> ApiKey:
    key = ApiKey.from_env_or_file(value.strip(), None)
    if key is None:
        raise UsageError("API key is blank", where, "give the rvya_sk_... key")
    return key
