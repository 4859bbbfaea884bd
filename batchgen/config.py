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
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from batchgen.errors import UsageError

if TYPE_CHECKING:
    from batchgen.catalog import Catalog
    from batchgen.client import ApiKey

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
DEFAULT_BASE_URL = "https://rivya.ai"
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
    output: Path
    journal: Path
    download_dir: Path | None
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
        doc = _DOC_BY_FIELD.get(name)
        if source and source != "default":
            return source
        if doc is not None:
            return " / ".join(x for x in (doc.flag, doc.job_key) if x) or name
        return name


class SettingDoc(NamedTuple):
    """One row of :data:`SETTINGS_DOC`."""

    field: str
    flag: str | None
    env: str | None
    job_key: str | None
    default: str
    meaning: str


# One line per setting: field | flag | environment | job-file key | default | meaning.
# "+" derives the flag (--field-name) or variable (BATCHGEN_FIELD_NAME); "-" means none.
_DOC_TABLE = """
job_id                 | +      | + | job.id                    | job file stem | Job name; part of every idempotency key.
manifest               | +      | + | manifest.path             | (required) | Manifest file: CSV, Parquet or JSONL.
manifest_format        | +      | + | manifest.format           | by suffix | csv, parquet or jsonl.
id_column              | +      | + | manifest.id_column        | id | Column holding each row's unique key.
model_column           | +      | + | manifest.model_column     | none | Per-row model column (blank cell = model).
prompt_column          | +      | + | manifest.prompt_column    | prompt | Prompt column, used when there is no template.
reference_column       | +      | + | manifest.reference_column | none | Reference file column: path (relative to the manifest) or URL.
passthrough            | +      | + | manifest.passthrough      | none | Columns copied to the output table (comma-separated on the command line).
param_columns          | -      | - | manifest.param_columns    | column named like the key | Param key -> column holding per-row values.
batch_size             | +      | + | manifest.batch_size       | 5000 | Rows read from the manifest at a time.
model                  | +      | + | generation.model          | none | Default model id for rows without one.
template               | +      | + | generation.template       | none | Prompt template with {column} placeholders ({{ and }} for braces).
params                 | --param KEY=VALUE | - | generation.params | none | Default params for every row whose model has the key.
params_by_model        | -      | - | generation.params_by_model.<model> | none | Default params for one model (override generation.params).
output                 | +      | + | output.path               | out/<job id>/results.csv | Results table (.csv or .parquet).
journal                | +      | + | output.journal            | <output dir>/<job id>.journal.sqlite | SQLite journal (the run's state).
download_dir           | +      | + | output.download_dir       | none | Download result images into this folder.
max_tasks_in_flight    | +      | + | run.max_tasks_in_flight   | 256 | Tasks submitted and not yet finished, at most.
max_requests_in_flight | +      | + | run.max_requests_in_flight | 32 | HTTP requests at once, at most.
upload_concurrency     | +      | + | run.upload_concurrency    | 8 | Reference uploads at once, at most.
download_concurrency   | +      | + | run.download_concurrency  | 8 | Result downloads at once, at most.
rate                   | +      | + | run.rate                  | 0 (discover) | Ceiling on requests per second.
poll_first             | +      | + | run.poll_first            | 2.0,3.0 | First poll after submit, seconds (min,max).
poll_interval          | +      | + | run.poll_interval         | 5.0,10.0 | Later polls, seconds (min,max).
task_timeout           | +      | + | run.task_timeout          | 900 | Seconds before a task counts as timed out.
max_credits            | +      | + | run.max_credits           | 0 (no cap) | Stop submitting past this many credits.
allow_partial          | +      | + | run.allow_partial         | false | Start even if the balance or the cap cannot cover every row.
retry_failed           | +      | + | -                         | false | Resubmit rows that failed before (costs credits).
dry_run                | +      | + | -                         | false | Validate and estimate only; send nothing.
base_url               | +      | BATCHGEN_BASE_URL, RIVYA_BASE_URL | api.base_url | https://rivya.ai | API base URL.
api_key                | -      | RIVYA_API_KEY | -             | none | API key (rvya_sk_...); never shown in logs or output.
api_key_file           | +      | RIVYA_API_KEY_FILE, BATCHGEN_API_KEY_FILE | api.api_key_file | none | File holding the API key (used when RIVYA_API_KEY is unset).
simulate               | +      | + | -                         | false | Run against an in-process simulator.
progress               | +      | + | -                         | auto | auto, bar, lines or none.
quiet                  | +      | + | -                         | false | Only errors on stderr.
log_format             | +      | + | -                         | human | human or json.
status_interval        | +      | + | run.status_interval       | 30 | Seconds between status lines.
"""  # noqa: E501


def _parse_doc_table(table: str) -> tuple[SettingDoc, ...]:
    rows = []
    for line in table.strip().splitlines():
        name, flag, env, job_key, default, meaning = (c.strip() for c in line.split("|"))
        if flag == "+":
            flag = "--" + name.replace("_", "-")
        if env == "+":
            env = "BATCHGEN_" + name.upper()
        rows.append(
            SettingDoc(
                name,
                None if flag == "-" else flag,
                None if env == "-" else env,
                None if job_key == "-" else job_key,
                default,
                meaning,
            )
        )
    return tuple(rows)


SETTINGS_DOC: tuple[SettingDoc, ...] = _parse_doc_table(_DOC_TABLE)
"""Every setting: field, flag, environment variable(s), job-file key, default, meaning."""

_DOC_BY_FIELD = {d.field: d for d in SETTINGS_DOC}

# Job-file layout: section -> key -> Settings field ("api_key_file" is not a field).
JOB_KEYS: dict[str, dict[str, str]] = {}
for _d in SETTINGS_DOC:
    if _d.job_key and not _d.job_key.endswith("<model>"):
        _section, _key = _d.job_key.split(".", 1)
        JOB_KEYS.setdefault(_section, {})[_key] = _d.field
JOB_KEYS["generation"]["params_by_model"] = "params_by_model"

_INT_MIN = {
    "batch_size": 1,
    "max_tasks_in_flight": 1,
    "max_requests_in_flight": 1,
    "upload_concurrency": 1,
    "download_concurrency": 1,
    "max_credits": 0,
}
_FLOATS = ("rate", "task_timeout", "status_interval")
_RANGES = ("poll_first", "poll_interval")
_BOOLS = ("allow_partial", "retry_failed", "dry_run", "simulate", "quiet")
_PATHS = ("manifest", "output", "journal", "download_dir")
_OPTIONAL_STRS = ("model_column", "reference_column", "model", "template", "prompt_column")
_STRS = ("job_id", "manifest_format", "id_column", "base_url", "progress", "log_format")
_CHOICES = {
    "manifest_format": MANIFEST_FORMATS,
    "progress": PROGRESS_MODES,
    "log_format": LOG_FORMATS,
}
_MAPPINGS = ("params", "params_by_model", "param_columns")
_FIELD_NAMES = (
    *_INT_MIN, *_FLOATS, *_RANGES, *_BOOLS, *_PATHS, *_OPTIONAL_STRS, *_STRS, *_MAPPINGS,
    "passthrough",
)  # fmt: skip
_FLAG_NAMES = frozenset({*_FIELD_NAMES, "api_key", "api_key_file"})
_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


class _Value(NamedTuple):
    value: Any
    where: str  # "--flag", "ENV_VAR", "file.toml: section.key" or "default"
    base: Path | None  # folder relative paths are resolved against (None for defaults)


def resolve_settings(
    job_file: Path | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    catalog: Catalog | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve flags (Settings field name -> value, None = not given), environment and job file.

    ``catalog`` (default: the packaged one) checks model ids and param keys; ``cwd`` (default:
    the current directory) anchors relative paths given by flags and environment variables.
    Raises UsageError for every problem, naming the flag, variable or job-file key.
    """
    unknown = sorted(set(flags) - _FLAG_NAMES)
    if unknown:
        raise ValueError(f"resolve_settings: unknown flag names {unknown}")
    if catalog is None:
        from batchgen.catalog import Catalog

        catalog = Catalog.default()
    cwd = Path.cwd() if cwd is None else cwd
    home = environ.get("HOME")
    job_path = _expand(Path(job_file), cwd, home) if job_file is not None else None
    job = _load_job_file(job_path, str(job_file)) if job_path is not None else {}
    job_dir = job_path.parent if job_path is not None else cwd

    def pick(name: str, default: Any) -> _Value:
        given = flags.get(name)
        if given is not None:
            return _Value(given, "--" + name.replace("_", "-"), cwd)
        doc = _DOC_BY_FIELD[name]
        for var in (doc.env or "").split(", "):
            if var and environ.get(var, "") != "":
                return _Value(environ[var], var, cwd)
        if name in job:
            return _Value(job[name][0], f"{job_file}: {job[name][1]}", job_dir)
        return _Value(default, "default", None)

    sources: dict[str, str] = {}
    out: dict[str, Any] = {}

    def put(name: str, value: Any, where: str) -> None:
        out[name] = value
        sources[name] = where

    for name, minimum in _INT_MIN.items():
        v = pick(name, _DEFAULT_INTS[name])
        put(name, _as_int(v, minimum), v.where)
    if out["max_credits"] == 0:
        out["max_credits"] = None
    for name in _FLOATS:
        v = pick(name, _DEFAULT_FLOATS[name])
        number = _as_float(v)
        if name != "rate" and number == 0:
            raise UsageError(f"{name} must be more than 0", v.where, "give a positive number")
        put(name, number, v.where)
    if out["rate"] == 0:
        out["rate"] = None
    for name in _RANGES:
        v = pick(name, _DEFAULT_RANGES[name])
        put(name, _as_range(v), v.where)
    for name in _BOOLS:
        v = pick(name, False)
        put(name, _as_bool(v), v.where)
    for name in (*_STRS, *_OPTIONAL_STRS):
        v = pick(name, _DEFAULT_STRS.get(name))
        text = _as_str(v, optional=name in _OPTIONAL_STRS)
        if name in _CHOICES and text is not None:
            text = _as_choice(text.lower(), _CHOICES[name], v.where)
        put(name, text, v.where)
    v = pick("passthrough", ())
    put("passthrough", _as_str_list(v), v.where)

    paths: dict[str, Path | None] = {}
    for name in _PATHS:
        v = pick(name, None)
        if v.value is None or v.value == "":
            paths[name] = None
        elif not isinstance(v.value, str | Path):
            raise UsageError(f"{name} must be a path", v.where, "give a file path as a string")
        else:
            assert v.base is not None
            paths[name] = _expand(Path(v.value), v.base, home)
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
    if model is not None:
        _check_model_id(catalog, model.strip(), sources["model"])
        model = model.strip()
    template = out["template"]
    if template is not None:
        from batchgen.manifest import parse_template

        parse_template(template, sources["template"])

    params, params_by_model, param_columns = _resolve_params(flags, job, str(job_file), catalog)
    for name in _MAPPINGS:
        sources.update(_mapping_where(flags, job, name, job_file))

    api_key, api_key_source = _resolve_api_key(flags, environ, job, str(job_file), cwd, job_dir)

    out.update(
        job_file=job_path, manifest=manifest, output=output, journal=journal, model=model,
        download_dir=paths["download_dir"], base_url=base_url, params=params,
        params_by_model=params_by_model, param_columns=param_columns, api_key=api_key,
        api_key_source=api_key_source,
    )  # fmt: skip
    return Settings(**out, sources=sources)


_DEFAULT_INTS = {
    "batch_size": 5000,
    "max_tasks_in_flight": 256,
    "max_requests_in_flight": 32,
    "upload_concurrency": 8,
    "download_concurrency": 8,
    "max_credits": 0,
}
_DEFAULT_FLOATS = {"rate": 0.0, "task_timeout": 900.0, "status_interval": 30.0}
_DEFAULT_RANGES = {"poll_first": (2.0, 3.0), "poll_interval": (5.0, 10.0)}
_DEFAULT_STRS = {
    "id_column": "id",
    "prompt_column": "prompt",
    "base_url": DEFAULT_BASE_URL,
    "progress": "auto",
    "log_format": "human",
}


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
    for section, table in data.items():
        if section not in JOB_KEYS:
            raise UsageError(
                f"unknown section [{section}] in job file",
                shown,
                _suggest(section, JOB_KEYS, "sections are"),
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
                    _suggest(key, JOB_KEYS[section], f"keys of [{section}] are"),
                )
            name = JOB_KEYS[section][key]
            flat[name] = (value, f"{section}.{key}")
    return flat


def _suggest(word: str, choices: Mapping[str, Any] | list[str], label: str) -> str:
    names = sorted(choices)
    close = difflib.get_close_matches(word, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}{label}: {', '.join(names)}"


# --------------------------------------------------------------------------- coercions


def _as_int(v: _Value, minimum: int) -> int:
    value = v.value
    if isinstance(value, bool):
        raise UsageError(f"expected a whole number, got {value!r}", v.where, "give e.g. 8")
    if isinstance(value, str):
        try:
            value = int(value.strip().replace("_", ""))
        except ValueError:
            raise UsageError(
                f"expected a whole number, got {v.value!r}", v.where, "give e.g. 8"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise UsageError(f"expected a whole number, got {v.value!r}", v.where, "give e.g. 8")
    if value < minimum:
        raise UsageError(
            f"must be at least {minimum}, got {value}", v.where, f"give a number >= {minimum}"
        )
    return value


def _as_float(v: _Value, *, what: Any = None) -> float:
    value = v.value if what is None else what
    if isinstance(value, bool):
        raise UsageError(f"expected a number, got {value!r}", v.where, "give e.g. 2.5")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(
                f"expected a number, got {value!r}", v.where, "give e.g. 2.5"
            ) from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"expected a number, got {value!r}", v.where, "give e.g. 2.5")
    if value < 0:
        raise UsageError(f"must not be negative, got {value}", v.where, "give a number >= 0")
    return float(value)


def _as_range(v: _Value) -> tuple[float, float]:
    value = v.value
    if isinstance(value, str):
        value = [part for part in value.replace(" ", "").split(",")]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise UsageError(
            f"expected two numbers [min, max], got {v.value!r}",
            v.where,
            "give e.g. [5.0, 10.0] in a job file or 5,10 on the command line",
        )
    low, high = (_as_float(v, what=x) for x in value)
    if low > high:
        raise UsageError(
            f"min {low:g} is more than max {high:g}", v.where, "give [min, max] with min <= max"
        )
    if high == 0:
        raise UsageError("poll delays must not both be 0", v.where, "give e.g. [5.0, 10.0]")
    return (low, high)


def _as_bool(v: _Value) -> bool:
    if isinstance(v.value, bool):
        return v.value
    if isinstance(v.value, str) and v.value.strip().lower() in _TRUE | _FALSE:
        return v.value.strip().lower() in _TRUE
    raise UsageError(f"expected true or false, got {v.value!r}", v.where, "give true or false")


def _as_str(v: _Value, *, optional: bool) -> str | None:
    if v.value is None:
        return None
    if not isinstance(v.value, str):
        raise UsageError(f"expected text, got {v.value!r}", v.where, "quote the value")
    if optional and not v.value.strip():
        return None
    return v.value


def _as_choice(text: str, choices: tuple[str, ...], where: str) -> str:
    if text.strip() in choices:
        return text.strip()
    close = difflib.get_close_matches(text, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown value {text!r}", where, f"{hint}choose one of {', '.join(choices)}")


def _as_str_list(v: _Value) -> tuple[str, ...]:
    value = v.value
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",") if x.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
        raise UsageError(
            f"expected a list of column names, got {v.value!r}",
            v.where,
            'give e.g. ["title", "category"]',
        )
    return tuple(value)


def _expand(path: Path, base: Path, home: str | None) -> Path:
    text = str(path)
    if text == "~" or text.startswith("~/"):
        path = Path(home) / text[2:] if home else path.expanduser()
    elif text.startswith("~"):
        path = path.expanduser()
    return path if path.is_absolute() else base / path


# --------------------------------------------------------------------------- params


def _resolve_params(
    flags: Mapping[str, Any],
    job: Mapping[str, tuple[Any, str]],
    shown: str,
    catalog: Catalog,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, str]]:
    """Merge job-file and flag params (flags win key by key) and check them against the catalog."""
    all_keys = sorted({key for mid in catalog.ids() for key in _model_params(catalog, mid)})

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
        if key not in all_keys:
            raise UsageError(
                f"no model in the catalog has a param {key!r}",
                where,
                _suggest(key, all_keys, "known params are"),
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
            _check_model_id(catalog, model_id, here)
            merged = by_model.setdefault(model_id, {})
            merged.update(table(f"params_by_model.{model_id}", model_params, here))
            known = sorted(_model_params(catalog, model_id))
            for key, value in merged.items():
                if key not in known:
                    raise UsageError(
                        f"model {model_id!r} has no param {key!r}",
                        f"{here}.{key}",
                        _suggest(key, known, f"params of {model_id} are"),
                    )
                _check_param_value(value, f"{here}.{key}")

    columns = table(
        "param_columns", job.get("param_columns", (None,))[0], job_where.get("param_columns", "")
    )
    columns.update(table("param_columns", flags.get("param_columns"), "--param-columns"))
    for key, column in columns.items():
        where = job_where.get("param_columns", "--param-columns") + f".{key}"
        if key not in all_keys:
            raise UsageError(
                f"no model in the catalog has a param {key!r}",
                where,
                _suggest(key, all_keys, "known params are"),
            )
        if not isinstance(column, str) or not column.strip():
            raise UsageError(f"expected a column name, got {column!r}", where, "quote it")
    return params, by_model, columns


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
        path = _expand(Path(flags["api_key_file"]), cwd, home)
        where = f"--api-key-file {flags['api_key_file']}"
        return _wrap_key(_read_key_file(path, where), where), where
    if environ.get("RIVYA_API_KEY", "").strip():
        return _wrap_key(environ["RIVYA_API_KEY"], "RIVYA_API_KEY"), "RIVYA_API_KEY"
    for var in ("RIVYA_API_KEY_FILE", "BATCHGEN_API_KEY_FILE"):
        if environ.get(var, "").strip():
            path = _expand(Path(environ[var]), cwd, home)
            where = f"{var} ({environ[var]})"
            return _wrap_key(_read_key_file(path, where), where), where
    if "api_key_file" in job:
        value, key = job["api_key_file"]
        where = f"{shown}: {key}"
        if not isinstance(value, str) or not value.strip():
            raise UsageError("expected a file path", where, "quote the path")
        path = _expand(Path(value), job_dir, home)
        return _wrap_key(_read_key_file(path, where), where), where
    return None, NO_KEY_SOURCE


def _read_key_file(path: Path, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"API key file {path} not found", where, "create it or set RIVYA_API_KEY"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(
            f"cannot read API key file {path}: {reason}",
            where,
            "check the file and its permissions",
        ) from None
    key = text.strip()
    if not key:
        raise UsageError(f"API key file {path} is empty", where, "put the rvya_sk_... key in it")
    return key


def _wrap_key(value: str, where: str) -> ApiKey:
    from batchgen.client import ApiKey

    key = ApiKey.from_env_or_file(value.strip(), None)
    if key is None:
        raise UsageError("API key is blank", where, "give the rvya_sk_... key")
    return key
