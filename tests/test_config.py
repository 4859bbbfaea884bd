"""Settings resolution: precedence, paths, validation errors, the API key, SETTINGS_DOC."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from pathlib import Path
from typing import Any

import pytest

from batchgen.errors import UsageError
from batchgen.job.settings import NO_KEY_SOURCE, Settings, resolve_settings
from batchgen.job.settings_table import JOB_KEYS, SETTINGS_DOC

REPO = Path(__file__).resolve().parent.parent
SECRET = "rvya_sk_test_0123456789abcdef"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(job folder, current folder): different, so path anchoring is observable."""
    job_dir, cwd = tmp_path / "jobs", tmp_path / "work"
    job_dir.mkdir()
    cwd.mkdir()
    return job_dir, cwd


def write_job(job_dir: Path, body: str, name: str = "job.toml") -> Path:
    path = job_dir / name
    path.write_text('[manifest]\npath = "rows.csv"\n' + body, encoding="utf-8")
    return path


def resolve(
    job: Path | None,
    cwd: Path,
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    return resolve_settings(job, flags or {}, env or {}, cwd=cwd)


# --------------------------------------------------------------------------- precedence

# field, flag value, (env var, env value), job-file snippet,
# expected per level (flag, env, job, default)
PRECEDENCE = [
    ("max_credits", 10, ("BATCHGEN_MAX_CREDITS", "20"), "[run]\nmax_credits = 30\n",
     (10, 20, 30, None)),
    ("task_timeout", 1.5, ("BATCHGEN_TASK_TIMEOUT", "2.5"), "[run]\ntask_timeout = 3.5\n",
     (1.5, 2.5, 3.5, 900.0)),
    ("rate", 4, ("BATCHGEN_RATE", "5"), "[run]\nrate = 6\n", (4.0, 5.0, 6.0, None)),
    ("base_url", "http://flag.test", ("RIVYA_BASE_URL", "http://env.test/"),
     '[api]\nbase_url = "http://job.test"\n',
     ("http://flag.test", "http://env.test", "http://job.test", "https://rivya.ai")),
    ("allow_partial", False, ("BATCHGEN_ALLOW_PARTIAL", "yes"), "[run]\nallow_partial = true\n",
     (False, True, True, False)),
    ("poll_interval", (1.0, 2.0), ("BATCHGEN_POLL_INTERVAL", "3,4"),
     "[run]\npoll_interval = [5.5, 6.5]\n", ((1.0, 2.0), (3.0, 4.0), (5.5, 6.5), (5.0, 10.0))),
    ("model", "qwen2-image", ("BATCHGEN_MODEL", "z-image"), '[generation]\nmodel = "qwen-image"\n',
     ("qwen2-image", "z-image", "qwen-image", None)),
    ("passthrough", ("a", "b"), ("BATCHGEN_PASSTHROUGH", "c, d"),
     '[manifest]\npassthrough = ["e"]\n', (("a", "b"), ("c", "d"), ("e",), ())),
    ("id_column", "f", ("BATCHGEN_ID_COLUMN", "e"), '[manifest]\nid_column = "j"\n',
     ("f", "e", "j", "id")),
    ("encoding", "CP1252", ("BATCHGEN_ENCODING", "latin1"), '[manifest]\nencoding = "utf-16"\n',
     ("cp1252", "iso8859-1", "utf-16", "utf-8")),
    ("delimiter", ";", ("BATCHGEN_DELIMITER", "\\t"), '[manifest]\ndelimiter = "auto"\n',
     (";", "\t", "auto", ",")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "flag", "env", "snippet", "expected"),
    PRECEDENCE,
    ids=[p[0] for p in PRECEDENCE],
)
@pytest.mark.parametrize("levels", list(itertools.product([True, False], repeat=3)))
def test_precedence_flag_env_job_default(
    dirs: tuple[Path, Path],
    name: str,
    flag: Any,
    env: tuple[str, str],
    snippet: str,
    expected: tuple[Any, ...],
    levels: tuple[bool, bool, bool],
) -> None:
    job_dir, cwd = dirs
    use_flag, use_env, use_job = levels
    body = snippet if use_job else ""
    if body.startswith("[manifest]"):  # merge into the [manifest] table write_job starts
        job = job_dir / "job.toml"
        job.write_text('[manifest]\npath = "rows.csv"\n' + body.split("\n", 1)[1])
    else:
        job = write_job(job_dir, body)
    settings = resolve(job, cwd, {name: flag} if use_flag else {}, dict([env]) if use_env else {})
    used = (use_flag, use_env, use_job, True)
    want = next(value for use, value in zip(used, expected, strict=True) if use)
    assert getattr(settings, name) == want


@pytest.mark.parametrize(
    ("flags", "env", "job_line", "want"),
    [
        (
            {"output": "flag.csv"},
            {"BATCHGEN_OUTPUT": "env.csv"},
            'path = "job.csv"',
            "cwd/flag.csv",
        ),
        ({}, {"BATCHGEN_OUTPUT": "env.csv"}, 'path = "job.csv"', "cwd/env.csv"),
        ({}, {}, 'path = "job.csv"', "job/job.csv"),
        ({}, {}, "", "job/out/job/results.csv"),
        ({}, {"HOME": "/home/u"}, 'path = "~/res.parquet"', "/home/u/res.parquet"),
    ],
)
def test_paths_anchor_on_their_source(
    dirs: tuple[Path, Path], flags: dict[str, Any], env: dict[str, str], job_line: str, want: str
) -> None:
    job_dir, cwd = dirs
    job = write_job(job_dir, f"[output]\n{job_line}\n")
    settings = resolve(job, cwd, flags, env)
    expected = Path(want.replace("cwd/", f"{cwd}/").replace("job/", f"{job_dir}/", 1))
    assert settings.output == expected
    assert settings.manifest == job_dir / "rows.csv"
    assert settings.journal == expected.parent / "job.journal.sqlite"


def test_defaults_and_job_id(dirs: tuple[Path, Path]) -> None:
    job_dir, cwd = dirs
    settings = resolve(write_job(job_dir, "", name="nightly.toml"), cwd)
    assert settings.job_id == "nightly"
    assert settings.manifest_format == "csv"
    assert settings.batch_size == 5000
    assert settings.poll_first == (2.0, 3.0)
    assert (settings.api_key, settings.api_key_source) == (None, NO_KEY_SOURCE)
    no_job = resolve(None, cwd, {"manifest": "exports/catalog.parquet"})
    assert no_job.job_id == "catalog"
    assert no_job.manifest == cwd / "exports" / "catalog.parquet"
    assert no_job.manifest_format == "parquet"
    assert no_job.output == cwd / "out" / "catalog" / "results.csv"
    assert no_job.sources["manifest"] == "--manifest"


def test_params_merge_flags_over_job(dirs: tuple[Path, Path]) -> None:
    job_dir, cwd = dirs
    job = write_job(
        job_dir,
        '[generation.params]\noutput_format = "png"\nimage_size = "square"\n'
        '[generation.params_by_model."qwen2-image"]\nseed = 5\n'
        '[manifest.param_columns]\nseed = "my_seed"\n',
    )
    settings = resolve(job, cwd, {"params": {"output_format": "jpeg"}})
    assert dict(settings.params) == {"output_format": "jpeg", "image_size": "square"}
    assert {k: dict(v) for k, v in settings.params_by_model.items()} == {"qwen2-image": {"seed": 5}}
    assert dict(settings.param_columns) == {"seed": "my_seed"}


# --------------------------------------------------------------------------- errors

ERRORS = [
    # job-file body, flags, env, text expected in `where`, text expected in the message
    ("[manifst]\nx = 1\n", {}, {}, "job.toml", "did you mean 'manifest'"),
    ("[run]\nmax_credit = 1\n", {}, {}, "run.max_credit", "did you mean 'max_credits'"),
    ("[manifest]\nbatch_size = 'many'\n", {}, {}, "manifest.batch_size", "whole number"),
    ("[run]\nmax_credits = -1\n", {}, {}, "run.max_credits", "at least 0"),
    ("[run]\ntask_timeout = -5.0\n", {}, {}, "run.task_timeout", "negative"),
    ("[run]\nupload_concurrency = 0\n", {}, {}, "run.upload_concurrency", "at least 1"),
    ("", {"max_tasks_in_flight": -3}, {}, "--max-tasks-in-flight", "at least 1"),
    ("", {}, {"BATCHGEN_BATCH_SIZE": "lots"}, "BATCHGEN_BATCH_SIZE", "whole number"),
    ("", {}, {"BATCHGEN_ALLOW_PARTIAL": "maybe"}, "BATCHGEN_ALLOW_PARTIAL", "true or false"),
    ("[run]\npoll_first = [5.0, 2.0]\n", {}, {}, "run.poll_first", "min 5 is more than max 2"),
    ("[run]\npoll_interval = [1.0]\n", {}, {}, "run.poll_interval", "two numbers"),
    ("", {"poll_first": "3,1"}, {}, "--poll-first", "more than max"),
    ("[run]\nallow_partial = 'sometimes'\n", {}, {}, "run.allow_partial", "true or false"),
    ("[manifest]\nformat = 'xlsx'\n", {}, {}, "manifest.format", "csv, parquet, jsonl"),
    ("", {"manifest": "rows.xlsx"}, {}, "--manifest", "suffix '.xlsx'"),
    ("[output]\npath = 'out/results.json'\n", {}, {}, "output.path", ".csv or .parquet"),
    ("", {"output": "r.txt"}, {}, "--output", ".csv or .parquet"),
    ("[generation.params]\nimagesize = 'square'\n", {}, {}, "generation.params.imagesize",
     "did you mean 'image_size'"),
    ("[generation.params_by_model.qwen3-image]\nseed = 1\n", {}, {},
     "generation.params_by_model.qwen3-image", "qwen2-image"),
    ("[generation.params_by_model.qwen-image]\nseed = 1\n", {}, {},
     "generation.params_by_model.qwen-image.seed", "has no param 'seed'"),
    ("[generation]\nmodel = 'qwen-imag'\n", {}, {}, "generation.model",
     "did you mean 'qwen-image'"),
    ("", {"model": "qwen3"}, {}, "--model", "unknown model 'qwen3'"),
    ("[generation]\ntemplate = 'A {title'\n", {}, {}, "generation.template", "malformed"),
    ("[generation]\ntemplate = 'A {title:>9}'\n", {}, {}, "generation.template", "format spec"),
    ("[manifest.param_columns]\nsed = 'x'\n", {}, {}, "manifest.param_columns.sed",
     "did you mean 'seed'"),
    ("[api]\nbase_url = 'rivya.ai'\n", {}, {}, "api.base_url", "not an http(s) URL"),
    ("", {"progress": "fancy"}, {}, "--progress", "auto, bar, lines, none"),
    ("", {}, {"BATCHGEN_LOG_FORMAT": "xml"}, "BATCHGEN_LOG_FORMAT", "human, json"),
    ("[api]\napi_key_file = 'nokey.txt'\n", {}, {}, "api.api_key_file", "not found"),
    ("", {"api_key_file": "missing.key"}, {}, "--api-key-file missing.key", "not found"),
    ("", {}, {"RIVYA_API_KEY_FILE": "gone.key"}, "RIVYA_API_KEY_FILE", "not found"),
    ("[job]\nid = '  '\n", {}, {}, "job.id", "blank"),
    ("", {"encoding": "utf-9"}, {}, "--encoding", "unknown encoding 'utf-9'"),
    ("[manifest]\nencoding = 'rot13'\n", {}, {}, "manifest.encoding", "not a text encoding"),
    ("", {}, {"BATCHGEN_DELIMITER": ";;"}, "BATCHGEN_DELIMITER", "one character or auto"),
    ("[manifest]\ndelimiter = '\"'\n", {}, {}, "manifest.delimiter", "one character or auto"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "flags", "env", "where", "message"), ERRORS)
def test_usage_errors_name_their_source(
    dirs: tuple[Path, Path],
    body: str,
    flags: dict[str, Any],
    env: dict[str, str],
    where: str,
    message: str,
) -> None:
    job_dir, cwd = dirs
    if body.startswith("[manifest]"):
        job = job_dir / "job.toml"
        job.write_text('[manifest]\npath = "rows.csv"\n' + body.split("\n", 1)[1])
    else:
        job = write_job(job_dir, body)
    with pytest.raises(UsageError) as info:
        resolve(job, cwd, flags, env)
    assert where in (info.value.where or ""), info.value
    assert message in str(info.value)
    assert info.value.fix


def test_job_file_problems(dirs: tuple[Path, Path]) -> None:
    job_dir, cwd = dirs
    with pytest.raises(UsageError, match="job file not found") as info:
        resolve(job_dir / "nope.toml", cwd)
    assert "nope.toml" in (info.value.where or "")
    bad = job_dir / "bad.toml"
    bad.write_text("[manifest\npath = 1\n")
    with pytest.raises(UsageError, match=r"not valid TOML.*line 1"):
        resolve(bad, cwd)
    table = job_dir / "scalar.toml"
    table.write_text("run = 5\n")
    with pytest.raises(UsageError, match=r"\[run\] table"):
        resolve(table, cwd)
    nomanifest = job_dir / "empty.toml"
    nomanifest.write_text("[run]\nrate = 1\n")
    with pytest.raises(UsageError, match="no manifest") as info:
        resolve(nomanifest, cwd)
    assert "--manifest" in (info.value.where or "")


def test_unknown_flag_name_is_a_programming_error(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="max_credit"):
        resolve(None, dirs[1], {"manifest": "a.csv", "max_credit": 5})


# --------------------------------------------------------------------------- API key


def test_api_key_from_env_never_in_repr(dirs: tuple[Path, Path]) -> None:
    job_dir, cwd = dirs
    settings = resolve(write_job(job_dir, ""), cwd, env={"RIVYA_API_KEY": SECRET})
    assert settings.api_key is not None
    assert settings.api_key.reveal() == SECRET
    assert settings.api_key_source == "RIVYA_API_KEY"
    for text in (repr(settings), str(settings), repr(dataclasses.asdict(settings))):
        assert SECRET not in text
        assert "0123456789abcdef" not in text


def test_settings_pickle_round_trip(dirs: tuple[Path, Path]) -> None:
    job_dir, cwd = dirs
    settings = resolve(write_job(job_dir, ""), cwd, env={"RIVYA_API_KEY": SECRET})
    again = pickle.loads(pickle.dumps(settings))
    assert again == settings and again.api_key == settings.api_key


def test_api_key_file_sources_and_precedence(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    job_dir, cwd = dirs
    (job_dir / "job.key").write_text("rvya_sk_from_job\n")
    (cwd / "flag.key").write_text("  rvya_sk_from_flag  \n")
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "rivya.key").write_text("rvya_sk_from_home")
    job = write_job(job_dir, '[api]\napi_key_file = "job.key"\n')

    def key(flags: dict[str, Any], env: dict[str, str]) -> tuple[str, str]:
        s = resolve(job, cwd, flags, env)
        assert s.api_key is not None
        return s.api_key.reveal(), s.api_key_source

    assert key({}, {}) == ("rvya_sk_from_job", f"{job}: api.api_key_file")
    assert key({}, {"RIVYA_API_KEY": SECRET}) == (SECRET, "RIVYA_API_KEY")
    env_file = {"RIVYA_API_KEY_FILE": "~/.config/rivya.key", "HOME": str(home)}
    assert key({}, env_file)[0] == "rvya_sk_from_home"
    assert key({}, env_file)[1].startswith("RIVYA_API_KEY_FILE")
    assert key({"api_key_file": "flag.key"}, {"RIVYA_API_KEY": SECRET}) == (
        "rvya_sk_from_flag",
        "--api-key-file flag.key",
    )
    (cwd / "empty.key").write_text("\n")
    with pytest.raises(UsageError, match="empty") as info:
        resolve(job, cwd, {"api_key_file": "empty.key"})
    assert "--api-key-file" in (info.value.where or "")


def test_unreadable_key_file(dirs: tuple[Path, Path]) -> None:
    job_dir, cwd = dirs
    (cwd / "adir").mkdir()
    with pytest.raises(UsageError, match="cannot read API key file") as info:
        resolve(write_job(job_dir, ""), cwd, {"api_key_file": "adir"})
    assert "--api-key-file adir" in (info.value.where or "")


# --------------------------------------------------------------------------- doc table, samples


def test_settings_doc_covers_every_field() -> None:
    documented = {d.field for d in SETTINGS_DOC}
    fields = {f.name for f in dataclasses.fields(Settings)} - {
        "job_file",
        "sources",
        "api_key_source",
    }
    assert fields <= documented
    assert documented - fields == {"api_key_file"}
    flags = [d.flag for d in SETTINGS_DOC if d.flag]
    assert len(flags) == len(set(flags))
    for d in SETTINGS_DOC:
        assert d.meaning.endswith(".") and d.default
        if d.job_key and "<" not in d.job_key:
            section, key = d.job_key.split(".", 1)
            assert JOB_KEYS[section][key] == d.field


@pytest.mark.parametrize("name", ["sample.toml", "catalog-parquet.toml"])
def test_sample_jobs_resolve(name: str, tmp_path: Path) -> None:
    settings = resolve(REPO / "jobs" / name, tmp_path)
    assert settings.manifest.exists()
    assert settings.output.is_relative_to(REPO / "jobs" / "out")
    assert settings.journal.parent == settings.output.parent
    if name == "sample.toml":
        assert settings.output == REPO / "jobs" / "out" / "sample" / "results.csv"
        assert settings.job_id == "sample-catalog"
