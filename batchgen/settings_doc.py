"""The table of every setting: field, flag, environment variable, job-file key, default, meaning.

One source for ``--help`` (cli.py builds the run flags from it), the job-file layout (JOB_KEYS) and
the README table (tests/test_docs.py checks it).
"""

from __future__ import annotations

from typing import NamedTuple


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
encoding               | +      | + | manifest.encoding         | utf-8 | Text encoding of a CSV or JSONL manifest (utf-8 also reads a BOM; cp1252 for Windows spreadsheet exports).
delimiter              | +      | + | manifest.delimiter        | , | CSV cell delimiter: one character (tab for tab), or auto to sniff , ; tab or pipe from the header.
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
"""


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

DOC_BY_FIELD = {d.field: d for d in SETTINGS_DOC}

# Job-file layout: section -> key -> Settings field ("api_key_file" is not a field).
JOB_KEYS: dict[str, dict[str, str]] = {}
for _d in SETTINGS_DOC:
    if _d.job_key and not _d.job_key.endswith("<model>"):
        _section, _key = _d.job_key.split(".", 1)
        JOB_KEYS.setdefault(_section, {})[_key] = _d.field
JOB_KEYS["generation"]["params_by_model"] = "params_by_model"
