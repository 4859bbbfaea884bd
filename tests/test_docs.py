"""README.md stays true to the CLI: every command and every flag is documented, and every default
reads the same in ``--help``, README.md and the resolved Settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.errors import UsageError
from batchgen.job.settings import NO_KEY_SOURCE, default_cache_dir, resolve_settings
from batchgen.job.settings_table import SETTINGS_DOC, SettingDoc
from batchgen.sim.state import SimConfig

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = main.list_commands(click.Context(main))


def command(name: str) -> click.Command:
    found = main.get_command(click.Context(main), name)
    assert found is not None
    return found


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    assert f"batchgen {name}" in README


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_has_a_summary_and_an_example(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert command(name).get_short_help_str()


def test_every_run_flag_is_in_the_readme() -> None:
    run = command("run")
    flags = {
        opt
        for p in run.params
        if isinstance(p, click.Option)
        for opt in p.opts
        if opt.startswith("--")
    }
    missing = sorted(f for f in flags if f not in README and f != "--help")
    assert not missing


def test_every_setting_with_a_job_key_is_in_the_readme() -> None:
    for doc in SETTINGS_DOC:
        if doc.job_key:
            key = doc.job_key.replace("<model>", "").rstrip(".")
            assert key.split(".")[-1].strip('"') in README, doc.job_key


def test_exit_codes_are_documented() -> None:
    table = README.split("### Exit codes", 1)[1].split("##", 1)[0]
    for code in ("0", "1", "2", "3", "4", "130 / 143"):
        assert re.search(rf"^\| {re.escape(code)} \|", table, re.M), code


def test_quick_start_commands_are_near_the_top() -> None:
    head = README[:2500]
    assert "pip install . && batchgen run jobs/sample.toml --simulate" in head
    assert "pip install -e '.[test]' && python -m pytest" in head


# --------------------------------------------------------------------------- defaults, one owner


def help_entries(name: str) -> dict[str, str]:
    """Each option of ``batchgen NAME --help``: its long flag -> its help, whitespace collapsed."""
    text = CliRunner().invoke(main, [name, "--help"], terminal_width=100).output
    entries: dict[str, str] = {}
    flag = None
    for line in text.split("Options:", 1)[1].splitlines():
        start = re.match(r"^  (?:-\w, )?(--[\w-]+)\s*(.*)$", line)
        if start:
            flag = start.group(1)
            entries[flag] = start.group(2)
        elif flag is not None:
            entries[flag] += " " + line.strip()
    return {f: " ".join(h.split()) for f, h in entries.items()}


def help_default(help_text: str) -> str | None:
    found = re.search(r"Default: (.+?)\.(?: \[env: [^]]*\])?$", help_text)
    return found.group(1) if found else None


def readme_settings_rows() -> list[list[str]]:
    table = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split(" | ")] for line in table.splitlines()
    ]
    return [r for r in rows if len(r) == 5 and r[0] != "flag"]


def readme_row(doc: SettingDoc, rows: list[list[str]]) -> list[str]:
    for flag, env, job_key, default, meaning in rows:
        if doc.flag and doc.flag in re.findall(r"`([^`]+)`", flag):
            return [flag, env, job_key, default, meaning]
        if not doc.flag and flag == "—":
            if doc.job_key and job_key.strip("`").replace('"', "") == doc.job_key:
                return [flag, env, job_key, default, meaning]
            if not doc.job_key and doc.env and f"`{doc.env}`" == env:
                return [flag, env, job_key, default, meaning]
    raise AssertionError(f"no README settings row for {doc.field}")


def expected_value(doc: SettingDoc, job: Path) -> object:
    """What Settings must hold when nothing sets ``doc.field``, read from the documented text."""
    text = doc.default
    if text == "none":
        return {"params": {}, "params_by_model": {}, "passthrough": ()}.get(doc.field)
    if text in ("false", "true"):
        return text == "true"
    if re.fullmatch(r"0 \(.+\)", text):  # "0 (no cap)", "0 (discover)": no limit
        return None
    if re.fullmatch(r"[\d.]+,[\d.]+", text):
        return tuple(float(x) for x in text.split(","))
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    out = job.parent / "out" / job.stem
    computed: dict[str, object] = {
        "job file stem": job.stem,
        "by suffix": "csv",
        "column named like the key": {},
        "out/<job id>/results.csv": out / "results.csv",
        "<output dir>/<job id>.journal.sqlite": out / f"{job.stem}.journal.sqlite",
        "user cache folder": default_cache_dir(),
    }
    return computed.get(text, text)


def test_every_default_agrees_in_help_readme_and_settings(tmp_path: Path) -> None:
    job = tmp_path / "nightly.toml"
    job.write_text('[manifest]\npath = "catalog.csv"\n', encoding="utf-8")
    settings = resolve_settings(job, {}, {})
    with pytest.raises(UsageError, match="no manifest given"):
        resolve_settings(None, {}, {})
    rows = readme_settings_rows()
    assert len(rows) == len(SETTINGS_DOC)
    helps = {name: help_entries(name) for name in ("run", "estimate")}
    checked = 0
    for doc in SETTINGS_DOC:
        readme_default = readme_row(doc, rows)[3].replace("`", "")
        assert readme_default == doc.default, doc.field
        if doc.flag and doc.flag.startswith("--"):
            for name, entries in helps.items():
                if doc.field == "dry_run" and name == "estimate":
                    continue
                flag = doc.flag.split()[0]
                assert help_default(entries[flag]) == doc.default, (name, flag, entries[flag])
        if doc.field == "manifest":
            assert doc.default == "(required)"
        elif doc.field == "api_key_file":
            assert doc.default == "none" and settings.api_key_source == NO_KEY_SOURCE
        else:
            assert getattr(settings, doc.field) == expected_value(doc, job), doc.field
        checked += 1
    assert checked == len(SETTINGS_DOC)
    assert help_default(helps["run"]["--max-tasks-in-flight"]) == "1024"
    assert settings.max_tasks_in_flight == 1024


def test_every_sim_flag_defaults_to_the_simulator_config() -> None:
    config = SimConfig()
    entries = help_entries("sim")
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    checked = 0
    for param in command("sim").params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        name = {"no_rate_headers": "rate_limit_headers"}.get(param.name, param.name)
        if name not in fields:
            continue
        want = getattr(config, name)
        if param.name == "no_rate_headers":
            want = not want
        if name == "create_status":
            want = str(want)
        if name == "latency_by_model":
            want = ",".join(f"{model}={seconds}" for model, seconds in want.items())
        assert param.default == want, param.name
        shown = re.search(r"\[default: ([^]]+)\]", entries[param.opts[0]])
        if param.show_default:
            assert shown is not None and shown.group(1) == str(want), param.name
        checked += 1
    assert checked >= 20
    assert "[default: 2.0]" in entries["--latency"] and config.latency == 2.0


def test_readme_names_the_python_api_by_its_public_names() -> None:
    """``batchgen`` + ``.estimate(`` is the API function; a path rewrite that took it for the old
    module (now views.estimate) would send readers to the wrong place."""
    public = "batchgen." + "estimate("
    assert public in README
    assert "batchgen.views." + "estimate(" not in README
