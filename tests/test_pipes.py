"""Pipes: ``--manifest -`` reads standard input, ``export --out -`` writes standard output,
``sim --json`` prints its address as JSON, ``export`` and ``report`` take ``--json``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from jobkit import cli, cli_env, product_rows, read_output, simple_job

from batchgen.sim import SimConfig, SimThread

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 11}


def batchgen_bytes(
    *args: str, srv: SimThread | None = None, stdin: bytes = b""
) -> tuple[int, bytes, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "batchgen", *args],
        input=stdin,
        capture_output=True,
        env=cli_env(srv),
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr.decode()


def test_manifest_from_stdin_and_table_to_stdout_round_trip(tmp_path: Path) -> None:
    rows = product_rows(5)
    job = simple_job(tmp_path, [], poll_first=[0.05, 0.1], poll_interval=[0.05, 0.2])
    piped = pd.DataFrame(rows).to_csv(index=False).encode()
    with SimThread(SimConfig(**FAST)) as srv:
        code, out, err = batchgen_bytes(
            "run", str(job), "--manifest", "-", "--manifest-format", "csv", "--json", srv=srv,
            stdin=piped,
        )  # fmt: skip
        created = srv.snapshot()["tasks_created"]
    assert code == 0, err
    assert json.loads(out)["by_status"] == {"succeeded": 5}
    assert created == 5  # the rows came from standard input, not the job's (empty) manifest
    written = read_output(tmp_path / "out" / "results.csv")
    assert list(written["id"]) == [r["id"] for r in rows]

    code, out, err = batchgen_bytes("export", str(job), "--out", "-")
    assert code == 0, err
    assert "wrote 5 rows to standard output" in err
    assert out == (tmp_path / "out" / "results.csv").read_bytes()  # the same bytes as the file
    from_stdout = pd.read_csv(io.BytesIO(out), dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(from_stdout, written)

    code, out, err = batchgen_bytes("export", str(job), "--out", "-", "--format", "parquet")
    assert code == 0, err
    assert out[:4] == b"PAR1"
    done = cli("export", str(job), "--out", str(tmp_path / "t.parquet"), "--json")
    assert json.loads(done.stdout) == {
        "job_id": "test-job",
        "rows": 5,
        "out": str(tmp_path / "t.parquet"),
        "format": "parquet",
    }
    assert pq.read_table(io.BytesIO(out)).equals(pq.read_table(tmp_path / "t.parquet"))

    # The piped rows again: the journal knows them, nothing is sent.
    with SimThread(SimConfig(**FAST)) as srv:
        code, out, err = batchgen_bytes(
            "run", str(job), "--manifest", "-", "--manifest-format", "csv", "--json", srv=srv,
            stdin=piped,
        )  # fmt: skip
        assert srv.snapshot()["tasks_created"] == 0
    assert code == 0 and json.loads(out)["kept"] == 5


def test_stdin_manifest_needs_a_format_and_a_job_id(tmp_path: Path) -> None:
    code, _, err = batchgen_bytes(
        "run", "--manifest", "-", "--job-id", "j", "--model", "qwen-image", stdin=b"id,prompt\n"
    )
    assert code == 2
    assert "Error: the format of a manifest read from standard input is not known" in err
    assert "--manifest-format csv" in err and "Traceback" not in err
    code, _, err = batchgen_bytes(
        "run", "--manifest", "-", "--manifest-format", "csv", "--model", "qwen-image"
    )
    assert code == 2 and "needs a job id" in err and "--job-id" in err


def test_export_flags_are_checked(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(1))
    done = cli("export", str(job), "--out", "-", "--json")
    assert done.returncode == 2 and "pick one" in done.stderr
    done = cli("export", str(job), "--out", "x.csv", "--format", "parquet")
    assert done.returncode == 2 and "make them agree" in done.stderr
    done = cli("export", str(job), "--out", "https://example.com/x.csv")
    assert done.returncode == 2 and "cannot write to a https:// URL" in done.stderr


def test_report_json_summary(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(2))
    assert cli("run", str(job), "--simulate", "-q").returncode == 0
    done = cli("report", str(job), "--out", str(tmp_path / "r.html"), "--json", "--no-fetch")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["rows"] == 2 and figures["out"] == str(tmp_path / "r.html")
    assert figures["bytes"] == (tmp_path / "r.html").stat().st_size


def test_sim_json_prints_its_address_and_key() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "sim", "--port", "0", "--json", "--credits", "77"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["base_url"].startswith("http://127.0.0.1:")
        assert info["api_key"].startswith("rvya_sk_")
        request = urllib.request.Request(
            info["base_url"] + "/api/v1/credits",
            headers={"Authorization": f"Bearer {info['api_key']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["current_credits"] == 77  # the key works
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_errors_in_a_piped_manifest_name_standard_input() -> None:
    code, _, err = batchgen_bytes(
        "estimate", "--manifest", "-", "--manifest-format", "csv", "--job-id", "j",
        "--model", "qwen-image", stdin=b"id,prompt\na,caf\xe9 mug\n",
    )  # fmt: skip
    assert code == 2
    assert "(standard input, line 2, byte offset 15)" in err and "--encoding cp1252" in err
    assert "spool" not in err and "Traceback" not in err


def test_shell_completion_as_documented() -> None:
    """The installed ``batchgen`` script completes commands and flags (click's completion, keyed
    by the program's name, hence not through ``python -m``)."""
    script = str(Path(sys.executable).with_name("batchgen"))
    env = {**cli_env(), "_BATCHGEN_COMPLETE": "bash_complete"}
    for words, cword, expected in (
        ("batchgen ex", "1", "plain,export"),
        ("batchgen sim --js", "2", "plain,--json"),
    ):
        env.update(COMP_WORDS=words, COMP_CWORD=cword)
        done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
        assert expected in done.stdout.splitlines(), done.stdout
    source = subprocess.run(
        [script],
        env={**cli_env(), "_BATCHGEN_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "_batchgen_completion()" in source.stdout
