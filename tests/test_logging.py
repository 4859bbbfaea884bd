"""Run events go to ``logging.getLogger("batchgen")`` with structured fields; the library prints
nothing; ``--log-format json`` is a formatter on that logger."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from jobkit import SAMPLE

import batchgen
from batchgen.pipeline.progress import JsonFormatter
from batchgen.sim import SimConfig, SimThread

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 9}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    logger = logging.getLogger("batchgen")
    handler = Collect()
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def photos_frame(tmp_path: Path) -> pd.DataFrame:
    for name in ("mug.png", "lamp.png"):
        shutil.copy(SAMPLE / "photos" / name, tmp_path / name)
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "prompt": ["a red mug", "a blue mug", "a lamp", ""],  # d is invalid
            "photo": ["mug.png", "mug.png", "lamp.png", "lamp.png"],
        }
    )


def test_a_handler_on_batchgen_receives_every_run_event(
    tmp_path: Path, collected: Collect, capfd: pytest.CaptureFixture[str]
) -> None:
    with SimThread(SimConfig(**FAST)) as srv:
        result = batchgen.run(
            manifest=photos_frame(tmp_path),
            job_id="logged",
            model="qwen2-image",
            reference_column="photo",
            download_dir="images",
            poll_first="0.05,0.1",
            poll_interval="0.05,0.2",
            env={"RIVYA_API_KEY": srv.api_key, "RIVYA_BASE_URL": srv.base_url},
        )
    assert result.summary["by_status"] == {"invalid": 1, "succeeded": 3}
    events = Counter(getattr(r, "event", None) for r in collected.records)
    assert None not in events  # every record is a run event, named
    assert {r.job_id for r in collected.records} == {"logged"}  # type: ignore[attr-defined]
    assert events["invalid"] == 1
    assert events["run_start"] == 1
    assert events["uploaded"] == 2  # two distinct photos
    assert events["submitted"] == events["succeeded"] == events["downloaded"] == 3
    assert events["stop"] == 0
    table = result.to_pandas().set_index("id")
    for record in collected.records:
        fields = record.fields  # type: ignore[attr-defined]
        assert isinstance(fields, dict)
        if record.event == "succeeded":  # type: ignore[attr-defined]
            # each field is an attribute of its own, and the values are the table's
            assert record.task_id == table.loc[record.key, "task_id"]  # type: ignore[attr-defined]
            assert fields["credits"] == table.loc[record.key, "final_credits"]  # type: ignore[attr-defined]
        if record.event == "invalid":  # type: ignore[attr-defined]
            assert record.levelno == logging.INFO and "row 4" in record.getMessage()
        if record.event in ("submitted", "succeeded", "uploaded"):  # type: ignore[attr-defined]
            assert record.levelno == logging.DEBUG
    # The library printed nothing, to either stream.
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    key = srv.api_key
    assert not any(key in r.getMessage() or key in str(r.__dict__) for r in collected.records)


def test_json_formatter_on_the_logger_writes_one_object_per_event(
    tmp_path: Path, collected: Collect
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("batchgen").addHandler(handler)
    try:
        result = batchgen.run(
            manifest=pd.DataFrame({"id": ["x", "y"], "prompt": ["a cup", "a vase"]}),
            job_id="json",
            model="qwen-image",
            simulate=True,
        )
    finally:
        logging.getLogger("batchgen").removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == len(collected.records)
    assert all(line["ts"].endswith("Z") and line["event"] for line in lines)
    assert {line["job_id"] for line in lines} == {"json"}
    succeeded = [line for line in lines if line["event"] == "succeeded"]
    assert sorted(line["key"] for line in succeeded) == ["x", "y"]
    assert {line["task_id"] for line in succeeded} == set(result.table["task_id"].to_pylist())


def test_two_jobs_side_by_side_in_threads_keep_their_events_apart(
    tmp_path: Path, collected: Collect
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def job(name: str, n: int) -> batchgen.Result:
        rows = pd.DataFrame({"id": [f"{name}-{i}" for i in range(n)], "prompt": ["a cup"] * n})
        return batchgen.run(
            manifest=rows,
            job_id=name,
            model="qwen-image",
            poll_first="0.05,0.1",
            poll_interval="0.05,0.2",
            env={"RIVYA_API_KEY": srv.api_key, "RIVYA_BASE_URL": srv.base_url},
        )

    with SimThread(SimConfig(**FAST)) as srv, ThreadPoolExecutor(2) as pool:
        left, right = pool.submit(job, "left", 3), pool.submit(job, "right", 5)
        assert left.result().summary["by_status"] == {"succeeded": 3}
        assert right.result().summary["by_status"] == {"succeeded": 5}
        assert srv.snapshot()["tasks_created"] == 8
    for name, n in (("left", 3), ("right", 5)):
        keys = {
            r.key  # type: ignore[attr-defined]
            for r in collected.records
            if r.event == "succeeded" and r.job_id == name  # type: ignore[attr-defined]
        }
        assert keys == {f"{name}-{i}" for i in range(n)}
