"""The table of every setting: field, flag, environment variable, job-file key, default, meaning.

One source for ``--help`` (cli.py builds the run flags from it), the job-file layout (JOB_KEYS),
the defaults :func:`batchgen.job.settings.resolve_settings` applies (:data:`DEFAULTS`) and the README
table (tests/test_docs.py checks it against ``--help`` and the resolved Settings, value by value).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class SettingDoc(NamedTuple):
    """One row of :data:`SETTINGS_DOC`."""

    field: str
    flag: str | None
    env: str | None
    job_key: str | None
    default: str
    meaning: str


# The value of every setting with a fixed default: the one place it is written. A default that
# depends on other settings (the job id, the output path, ...) is described in the table instead.
DEFAULTS: dict[str, Any] = {
    "encoding": "utf-8",
    "delimiter": ",",
    "id_column": "id",
    "prompt_column": "prompt",
    "batch_size": 5000,
    "max_tasks_in_flight": 1024,
    "max_requests_in_flight": 32,
    "upload_concurrency": 8,
    "download_concurrency": 8,
    "rate": 0.0,
    "poll_first": (2.0, 3.0),
    "poll_interval": (5.0, 10.0),
    "task_timeout": 900.0,
    "max_credits": 0,
    "allow_partial": False,
    "retry_failed": False,
    "dry_run": False,
    "base_url": "https://rivya.ai",
    "catalog_max_age": 24.0,
    "simulate": False,
    "progress": "auto",
    "quiet": False,
    "log_format": "human",
    "status_interval": 30.0,
}
ZERO_MEANS = {"rate": "discover", "max_credits": "no cap"}
"""Settings whose 0 means "none" (resolved to None), with what none means."""


def show_default(name: str) -> str:
    """``DEFAULTS[name]`` as the table, ``--help`` and README.md write it."""
    value = DEFAULTS[name]
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return f"{text} ({ZERO_MEANS[name]})" if name in ZERO_MEANS else text


# One line per setting: field | flag | environment | job-file key | default | meaning.
# "+" derives the flag (--field-name) or variable (BATCHGEN_FIELD_NAME); "-" means none; a default
# "*" is DEFAULTS[field], shown by show_default().
_DOC_TABLE = """
job_id                 | +      | + | job.id                    | job file stem | Job name; part of every idempotency key.
manifest               | +      | + | manifest.path             | (required) | Manifest file: CSV, Parquet or JSONL.
manifest_format        | +      | + | manifest.format           | by suffix | csv, parquet or jsonl.
encoding               | +      | + | manifest.encoding         | * | Text encoding of a CSV or JSONL manifest (utf-8 also reads a BOM; cp1252 for Windows spreadsheet exports).
delimiter              | +      | + | manifest.delimiter        | * | CSV cell delimiter: one character (tab for tab), or auto to sniff , ; tab or pipe from the header.
id_column              | +      | + | manifest.id_column        | * | Column holding each row's unique key.
model_column           | +      | + | manifest.model_column     | none | Per-row model column (blank cell = model).
prompt_column          | +      | + | manifest.prompt_column    | * | Prompt column, used when there is no template.
reference_column       | +      | + | manifest.reference_column | none | Reference file column: path (relative to the manifest) or URL.
passthrough            | +      | + | manifest.passthrough      | none | Columns copied to the output table (comma-separated on the command line).
param_columns          | -      | - | manifest.param_columns    | column named like the key | Param key -> column holding per-row values.
batch_size             | +      | + | manifest.batch_size       | * | Rows read from the manifest at a time.
model                  | +      | + | generation.model          | none | Default model id for rows without one.
template               | +      | + | generation.template       | none | Prompt template with {column} placeholders ({{ and }} for braces).
params                 | --param KEY=VALUE | - | generation.params | none | Default params for every row whose model has the key.
params_by_model        | -      | - | generation.params_by_model.<model> | none | Default params for one model (override generation.params).
variants               | --variant KEY=V1,V2 | BATCHGEN_VARIANT | variants.<axis> | none | Variant matrix: each row becomes one task per combination of styles, param values and candidates (flag: replaces one axis; style=NAME,... keeps those styles; env: KEY=V1,V2;KEY2=...).
variants_by_model      | -      | - | variants_by_model.<model> | none | Variant axes of one model (override variants).
output                 | +      | + | output.path               | out/<job id>/results.csv | Results table (.csv or .parquet).
journal                | +      | + | output.journal            | <output dir>/<job id>.journal.sqlite | SQLite journal (the run's state).
download_dir           | +      | + | output.download_dir       | none | Download result images into this folder.
download_name          | +      | + | output.download_name      | none | File name template of downloads over the row's columns, {key}, {variant}, the variant axes and {ext} (none: {key}/{variant}.{ext} with variants, else <key>-<hash>.<ext>).
max_tasks_in_flight    | +      | + | run.max_tasks_in_flight   | * | Tasks submitted and not yet finished, at most.
max_requests_in_flight | +      | + | run.max_requests_in_flight | * | HTTP requests at once, at most.
upload_concurrency     | +      | + | run.upload_concurrency    | * | Reference uploads at once, at most.
download_concurrency   | +      | + | run.download_concurrency  | * | Result downloads at once, at most.
rate                   | +      | + | run.rate                  | * | Ceiling on requests per second.
poll_first             | +      | + | run.poll_first            | * | First poll after submit, seconds (min,max).
poll_interval          | +      | + | run.poll_interval         | * | Later polls, seconds (min,max).
task_timeout           | +      | + | run.task_timeout          | * | Seconds before a task counts as timed out.
max_credits            | +      | + | run.max_credits           | * | Stop submitting past this many credits.
allow_partial          | +      | + | run.allow_partial         | * | Start even if the balance or the cap cannot cover every row.
retry_failed           | +      | + | -                         | * | Resubmit rows that failed before (costs credits).
dry_run                | +      | + | -                         | * | Validate and estimate only; send nothing.
base_url               | +      | BATCHGEN_BASE_URL, RIVYA_BASE_URL | api.base_url | * | API base URL.
api_key                | -      | RIVYA_API_KEY | -             | none | API key (rvya_sk_...); never shown in logs or output.
api_key_file           | +      | RIVYA_API_KEY_FILE, BATCHGEN_API_KEY_FILE | api.api_key_file | none | File holding the API key (used when RIVYA_API_KEY is unset).
catalog                | +      | + | api.catalog               | none | Pin the model catalog to this file (a saved GET /api/v1/models answer): nothing is fetched.
catalog_max_age        | +      | + | api.catalog_max_age       | * | Hours a cached live catalog is used without asking the service (0: ask every time).
cache_dir              | +      | + | -                         | user cache folder | Folder of the cached live catalog (platformdirs' user cache folder for batchgen, e.g. ~/.cache/batchgen).
simulate               | +      | + | -                         | * | Run against an in-process simulator of the API (no key, no credits spent).
progress               | +      | + | -                         | * | auto, bar, lines or none.
quiet                  | +      | + | -                         | * | Only errors on stderr.
log_format             | +      | + | -                         | * | human or json.
status_interval        | +      | + | run.status_interval       | * | Seconds between status lines.
"""


def _parse_doc_table(table: str) -> tuple[SettingDoc, ...]:
    rows = []
    for line in table.strip().splitlines():
        name, flag, env, job_key, default, meaning = (c.strip() for c in line.split("|"))
        if flag == "+":
            flag = "--" + name.replace("_", "-")
        if env == "+":
            env = "BATCHGEN_" + name.upper()
        if (default == "*") != (name in DEFAULTS):
            raise AssertionError(f"settings table: {name}'s default must be * iff in DEFAULTS")
        rows.append(
            SettingDoc(
                name,
                None if flag == "-" else flag,
                None if env == "-" else env,
                None if job_key == "-" else job_key,
                show_default(name) if default == "*" else default,
                meaning,
            )
        )
    return tuple(rows)


SETTINGS_DOC: tuple[SettingDoc, ...] = _parse_doc_table(_DOC_TABLE)
"""Every setting: field, flag, environment variable(s), job-file key, default, meaning."""

DOC_BY_FIELD = {d.field: d for d in SETTINGS_DOC}

# Job-file layout: section -> key -> Settings field ("api_key_file" is not a field).
JOB_KEYS: dict[str, dict[str, str]] = {}
for _d in SETTINGS_DOC:
    if _d.job_key and not _d.job_key.endswith(("<model>", "<axis>")):
        _section, _key = _d.job_key.split(".", 1)
        JOB_KEYS.setdefault(_section, {})[_key] = _d.field
JOB_KEYS["generation"]["params_by_model"] = "params_by_model"
