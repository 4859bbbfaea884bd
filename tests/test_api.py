"""The Python API (``batchgen.run`` and friends) against the simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jobkit import REPO, cli, product_rows, simple_job

import batchgen
from batchgen.sim import SimConfig, SimThread

# The public function, looked up by name: tools that rewrite module paths take
# "batchgen" "." "estimate" for the old module of that name.
price_job = getattr(batchgen, "estimate")  # noqa: B009

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 5}
QUICK = {"poll_first": "0.05,0.1", "poll_interval": "0.05,0.2"}
# Columns that differ between two runs of the same rows: task ids, URLs, times, request ids.
VOLATILE = ["task_id", "primary_url", "urls", "submitted_at", "finished_at", "request_id"]


@pytest.fixture
def srv() -> Iterator[SimThread]:
    with SimThread(SimConfig(**FAST)) as server:
        yield server


def env_of(srv: SimThread) -> dict[str, str]:
    return {"RIVYA_API_KEY": srv.api_key, "RIVYA_BASE_URL": srv.base_url}


def frame(n: int = 6) -> pd.DataFrame:
    rows = product_rows(n)
    rows[2]["prompt"] = ""  # one invalid row: it is in the table, not raised
    df = pd.DataFrame(rows)
    df["seed"] = range(n)  # an int column, read as its decimal text as a file's cell is
    return df


def test_public_names_are_listed_and_typed() -> None:
    assert set(batchgen.__all__) >= {"run", "arun", "estimate", "status", "Result", "UsageError"}
    for name in batchgen.__all__:
        assert hasattr(batchgen, name), name
    assert batchgen.run.__annotations__["return"] == "Result"
    assert (REPO / "batchgen" / "py.typed").exists()


def test_dataframe_run_returns_the_same_table_as_the_cli(tmp_path: Path, srv: SimThread) -> None:
    df = frame()
    result = batchgen.run(
        manifest=df,
        job_id="api-job",
        model_column="model",
        model="qwen-image",
        output=str(tmp_path / "api" / "results.parquet"),
        env=env_of(srv),
        **QUICK,
    )
    df.to_csv(tmp_path / "rows.csv", index=False)
    done = cli(
        "run",
        "--manifest",
        str(tmp_path / "rows.csv"),
        "--job-id",
        "cli-job",
        "--model-column",
        "model",
        "--model",
        "qwen-image",
        "--output",
        str(tmp_path / "cli" / "results.parquet"),
        "--poll-first",
        "0.05,0.1",
        "--poll-interval",
        "0.05,0.2",
        "-q",
        srv=srv,
    )
    assert done.returncode == 1, done.stderr  # the invalid row
    from_cli = pq.read_table(tmp_path / "cli" / "results.parquet")
    assert isinstance(result.table, pa.Table)
    assert result.table.schema == from_cli.schema
    assert result.table.drop_columns(VOLATILE).equals(from_cli.drop_columns(VOLATILE))
    # The file the API wrote holds the same table.
    assert pq.read_table(tmp_path / "api" / "results.parquet").equals(result.table)
    assert result.exit_code == 1
    assert result.summary["by_status"] == {"invalid": 1, "succeeded": 5}
    out = result.to_pandas()
    assert out.loc[2, "status"] == "invalid" and out.loc[2, "error_field"] == "prompt"
    assert out["final_credits"].dtype == "Int64"
    assert srv.snapshot()["tasks_created"] == 10  # 5 rows, by each of the two jobs


def test_unknown_keyword_names_the_closest_setting(tmp_path: Path) -> None:
    with pytest.raises(batchgen.UsageError, match=r"unknown setting 'max_credit'.*'max_credits'"):
        batchgen.run(manifest=frame(), job_id="j", model="qwen-image", max_credit=5)
    with pytest.raises(batchgen.UsageError, match=r"whole number.*\(max_credits=\)"):
        batchgen.run(manifest=frame(), job_id="j", model="qwen-image", max_credits="lots")
    with pytest.raises(batchgen.UsageError, match="needs a job id"):
        batchgen.run(manifest=frame(), model="qwen-image")
    with pytest.raises(batchgen.UsageError, match="prompt column 'text' not found"):
        batchgen.run(manifest=frame(), job_id="j", model="qwen-image", prompt_column="text")
    with pytest.raises(batchgen.UsageError, match=r"pandas\.DataFrame"):
        batchgen.run(manifest=[{"id": "1"}], job_id="j", model="qwen-image")
    assert not (tmp_path / "out").exists()  # nothing was started


def test_run_from_a_worker_thread_twice(tmp_path: Path, srv: SimThread) -> None:
    kw: dict[str, Any] = dict(manifest=frame(), job_id="threaded", model="qwen-image", **QUICK)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batchgen.run, env=env_of(srv), **kw).result()
        again = pool.submit(batchgen.run, env=env_of(srv), **kw).result()
    assert first.summary["generated_this_run"] == 5
    assert again.summary["generated_this_run"] == 0 and again.summary["kept"] == 5
    assert again.table.drop_columns(["generated"]).equals(first.table.drop_columns(["generated"]))
    assert srv.snapshot()["tasks_created"] == 5  # the second run created nothing
    assert threading.current_thread() is threading.main_thread()


async def test_run_inside_a_running_event_loop(tmp_path: Path, srv: SimThread) -> None:
    asyncio.get_running_loop()  # as in a notebook cell
    result = batchgen.run(manifest=frame(3), job_id="nb", model="qwen-image", env=env_of(srv))
    assert result.summary["by_status"] == {"invalid": 1, "succeeded": 2}
    # ... and arun awaits the same in a worker thread, leaving this loop free meanwhile: the run
    # holds at its first event until a callback of this loop has run (it could not, were the
    # loop blocked by the run).
    freed = threading.Event()
    held: list[bool] = []

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "event", None) == "invalid" and not held:
                held.append(freed.wait(timeout=30))

    logger = logging.getLogger("batchgen")
    hold, level = Hold(), logger.level
    logger.addHandler(hold)
    logger.setLevel(logging.INFO)
    try:
        asyncio.get_running_loop().call_soon(freed.set)
        again = await batchgen.arun(
            manifest=frame(3), job_id="nb", model="qwen-image", env=env_of(srv)
        )
    finally:
        logger.removeHandler(hold)
        logger.setLevel(level)
    assert held == [True]
    assert again.summary["kept"] == 2


def test_simulate_estimate_and_status(tmp_path: Path) -> None:
    job = simple_job(tmp_path, product_rows(4), poll_first=[0.05, 0.1], poll_interval=[0.05, 0.2])
    priced = price_job(job)
    assert priced.exit_code == 0 and priced.summary["decisions"] == {"would_submit": 4}
    assert priced.credits == priced.summary["credits"] > 0
    with pytest.raises(batchgen.UsageError, match="no journal"):
        batchgen.status(job)
    result = batchgen.run(job, simulate=True)
    assert result.exit_code == 0
    state = batchgen.status(job)
    assert state["by_status"] == {"succeeded": 4}
    assert state["runs"][0]["exit_code"] == 0
    assert "simulate" in batchgen.run.__doc__  # type: ignore[operator]


def test_orchestrator_recipe_in_a_thread_pool(tmp_path: Path, srv: SimThread) -> None:
    """The README's orchestrator recipe, run as a scheduler's worker thread would run it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Orchestrators", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    job = simple_job(tmp_path, product_rows(5), poll_first=[0.05, 0.1], poll_interval=[0.05, 0.2])
    with ThreadPoolExecutor(1) as pool:
        summary = pool.submit(
            namespace["generate_catalog_images"], str(job), "2026-05-11", env=env_of(srv)
        ).result()
    assert summary["by_status"] == {"succeeded": 5}
    assert Path(summary["output"]).exists() and "2026-05-11" in summary["output"]
    assert srv.snapshot()["tasks_created"] == 5


def test_a_run_of_a_job_already_running_gives_exit_code_4(tmp_path: Path) -> None:
    from batchgen.store.lock import JobLock

    job = simple_job(tmp_path, product_rows(2), poll_first=[0.05, 0.1], poll_interval=[0.05, 0.2])
    assert batchgen.run(job, simulate=True).exit_code == 0
    with JobLock(tmp_path / "out" / "test-job.journal.sqlite"):  # as another run would hold it
        locked = batchgen.run(job, simulate=True)
    assert locked.exit_code == 4
    assert "already running" in locked.summary["message"]
    assert locked.table.num_rows == 2  # the table as the journal holds it meanwhile


def test_a_named_index_is_a_column_and_arrow_tables_read_in_batches(tmp_path: Path) -> None:
    df = frame(5).rename(columns={"id": "sku"}).set_index("sku")
    result = batchgen.run(
        manifest=df, job_id="idx", id_column="sku", model="qwen-image", simulate=True
    )
    assert result.table["sku"].to_pylist() == [f"sku-{i:05d}" for i in range(1, 6)]
    # The same rows as an Arrow table, two rows per batch: the same outcome, nothing sent again.
    again = batchgen.run(
        manifest=pa.Table.from_pandas(df.reset_index(), preserve_index=False),
        job_id="idx",
        id_column="sku",
        model="qwen-image",
        batch_size=2,
        simulate=True,
    )
    assert again.summary["kept"] == 4 and again.summary["generated_this_run"] == 0
    assert again.table.drop_columns(["generated"]).equals(result.table.drop_columns(["generated"]))


def test_a_run_started_while_the_caller_handles_an_exception_goes_to_the_end(
    tmp_path: Path, srv: SimThread, caplog: pytest.LogCaptureFixture
) -> None:
    """As an orchestrator's retry wrapper would call it: from inside an ``except`` block. The
    caller's exception is not the run's: nothing stops, every result is downloaded."""
    caplog.set_level(logging.DEBUG, logger="batchgen")
    try:
        raise ConnectionError("the previous attempt failed")
    except ConnectionError:
        result = batchgen.run(
            manifest=frame(),
            job_id="retry",
            model="qwen-image",
            download_dir="images",
            env=env_of(srv),
            **QUICK,
        )
    assert result.exit_code == 1 and result.summary["by_status"] == {"invalid": 1, "succeeded": 5}
    assert result.summary["downloads"]["this_run"] == 5
    assert [r for r in caplog.records if getattr(r, "event", None) == "stop"] == []
