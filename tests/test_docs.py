"""README.md stays true to the CLI: every command and every flag is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.settings_doc import SETTINGS_DOC

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
