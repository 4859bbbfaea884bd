"""Object storage through fsspec, against a real S3-compatible server (moto's server mode) that
the tests start on 127.0.0.1: an S3 manifest with S3 references, an S3 download folder and an
S3 output table; at most one charge per row, and a re-run sends nothing."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest
import s3fs
from jobkit import SAMPLE, cli, write_job
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from PIL import Image

import batchgen
from batchgen.sim import SimConfig, SimThread

# The public function, looked up by name: tools that rewrite module paths take
# "batchgen" "." "estimate" for the old module of that name.
price_job = getattr(batchgen, "estimate")  # noqa: B009

FAST = {"rate": None, "latency": 0.05, "queue_time": 0.0, "seed": 13}
BUCKET = "batchgen-test"
SECRET = "moto-secret-never-shown"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto S3 server on a free port of 127.0.0.1, a bucket, and the standard AWS variables
    pointing at it (the backend's own credential chain reads them)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMOTOTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3fs.S3FileSystem.clear_instance_cache()  # a filesystem made for another server is stale
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        client.close()
        server.stop()


def put(client: Any, key: str, data: bytes) -> str:
    client.put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def objects(client: Any, prefix: str) -> dict[str, tuple[str, Any]]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}


def test_s3_manifest_references_downloads_and_output(
    tmp_path: Path, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mug = put(s3, "photos/mug.png", (SAMPLE / "photos" / "mug.png").read_bytes())
    lamp = put(s3, "photos/lamp.png", (SAMPLE / "photos" / "lamp.png").read_bytes())
    rows = pd.DataFrame(
        {
            "sku": ["m1", "m2", "m3", "l1"],
            "prompt": ["a red mug", "a blue mug", "a green mug", "a desk lamp"],
            "photo": [mug, mug, mug, lamp],
        }
    )
    manifest = put(s3, "in/catalog.csv", rows.to_csv(index=False).encode())
    settings: dict[str, Any] = {
        "manifest": manifest,
        "job_id": "s3-job",
        "id_column": "sku",
        "model": "qwen2-image",
        "reference_column": "photo",
        "download_dir": f"s3://{BUCKET}/images/",
        "output": f"s3://{BUCKET}/out/results.parquet",
        "poll_first": "0.05,0.1",
        "poll_interval": "0.05,0.2",
    }
    caplog.set_level(logging.DEBUG, logger="batchgen")
    with SimThread(SimConfig(**FAST)) as srv:
        env = {"RIVYA_API_KEY": srv.api_key, "RIVYA_BASE_URL": srv.base_url}
        first = batchgen.run(env=env, **settings)
        after_first = srv.snapshot()
        again = batchgen.run(env=env, **settings)
        after_again = srv.snapshot()

    assert first.exit_code == 0, first.summary
    assert first.summary["by_status"] == {"succeeded": 4}
    assert first.summary["output"] == f"s3://{BUCKET}/out/results.parquet"
    # At most one task and one charge per row; each photo uploaded once, however many rows.
    assert after_first["tasks_created"] == 4
    assert all(n == 1 for n in after_first["tasks_by_idempotency_key"].values())
    assert after_first["files_uploaded"] == 2
    table = first.to_pandas()
    charged = sum(c["charged"] for c in after_first["credits"].values())
    assert int(table["final_credits"].sum()) == charged

    # Every result is an image in the bucket, named after its key, and the table says where.
    images = objects(s3, "images/")
    assert len(images) == 4
    assert all(p.startswith(f"s3://{BUCKET}/images/") for p in table["download_path"])
    for path, size in zip(table["download_path"], table["download_bytes"], strict=True):
        body = s3.get_object(Bucket=BUCKET, Key=path.split(f"{BUCKET}/", 1)[1])["Body"].read()
        assert len(body) == size
        Image.open(io.BytesIO(body)).verify()
    # The output table was uploaded whole (by the re-run last), and is the table it returned.
    uploaded = s3.get_object(Bucket=BUCKET, Key="out/results.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(uploaded)).equals(again.table)
    assert again.table.drop_columns(["generated"]).equals(first.table.drop_columns(["generated"]))

    # A re-run sends nothing: no request to the API, no new object in the bucket.
    assert after_again["tasks_created"] == 4
    assert after_again["files_uploaded"] == 2
    assert after_again["requests"] == after_first["requests"]
    assert again.exit_code == 0 and again.summary["kept"] == 4
    assert again.summary["generated_this_run"] == 0
    assert objects(s3, "images/") == images

    # The backend's credentials appear nowhere: not in the table, the logs, or any file.
    assert SECRET not in first.table.to_pandas().to_csv()
    assert not any(SECRET in str(r.__dict__) for r in caplog.records)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_s3_estimate_finds_a_missing_reference_and_the_cli_reads_s3(
    tmp_path: Path, s3: Any
) -> None:
    mug = put(s3, "photos/mug.png", (SAMPLE / "photos" / "mug.png").read_bytes())
    rows = pd.DataFrame(
        {
            "id": ["a", "b"],
            "prompt": ["a red mug", "a blue mug"],
            "photo": [mug, f"s3://{BUCKET}/photos/gone.png"],
        }
    )
    manifest = put(s3, "in/two.csv", rows.to_csv(index=False).encode())
    priced = price_job(
        manifest=manifest, job_id="two", model="qwen2-image", reference_column="photo"
    )
    assert priced.exit_code == 1
    assert priced.summary["decisions"] == {"invalid": 1, "would_submit": 1}
    (example,) = priced.summary["invalid_examples"]
    assert "gone.png" in example and "reference_unavailable" in example

    # The CLI: a job file whose manifest is in S3, the table exported to S3.
    job = write_job(
        tmp_path,
        {
            "job": {"id": "two"},
            "manifest": {"path": manifest, "reference_column": "photo"},
            "generation": {"model": "qwen2-image"},
            "output": {"path": "out/r.csv"},
            "run": {"poll_first": [0.05, 0.1], "poll_interval": [0.05, 0.2]},
        },
    )
    with SimThread(SimConfig(**FAST)) as srv:
        done = cli("run", str(job), "-q", srv=srv)
    assert done.returncode == 1, done.stderr  # the missing photo makes its row invalid
    out = pd.read_csv(tmp_path / "out" / "r.csv", dtype=str, keep_default_na=False)
    assert list(out["status"]) == ["succeeded", "invalid"]
    assert "reference_unavailable" in out.loc[1, "error_message"]
    exported = cli("export", str(job), "--out", f"s3://{BUCKET}/exports/r.csv")
    assert exported.returncode == 0, exported.stderr
    body = s3.get_object(Bucket=BUCKET, Key="exports/r.csv")["Body"].read()
    assert body == (tmp_path / "out" / "r.csv").read_bytes()


def test_unreadable_s3_manifest_is_a_usage_error(s3: Any) -> None:
    with pytest.raises(batchgen.UsageError, match=r"cannot read s3://batchgen-test/none\.csv"):
        batchgen.run(manifest=f"s3://{BUCKET}/none.csv", job_id="x", model="qwen-image")
    with pytest.raises(batchgen.UsageError, match="journal must be a local file"):
        batchgen.run(manifest="m.csv", journal=f"s3://{BUCKET}/j.sqlite", model="qwen-image")


def test_https_style_manifest_url_is_read(tmp_path: Path) -> None:
    """A manifest served over HTTP (here by a plain file server on 127.0.0.1) is read through
    fsspec like a local file."""
    import functools
    import http.server
    import threading

    served = tmp_path / "site"
    served.mkdir()
    pd.DataFrame({"id": ["a", "b", ""], "prompt": ["a cup", "a vase", "x"]}).to_csv(
        served / "catalog.csv", index=False
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/catalog.csv"
        priced = price_job(manifest=url, model="qwen-image")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert priced.summary["job_id"] == "catalog"  # named after the file, as a local one is
    assert priced.summary["decisions"] == {"invalid": 1, "would_submit": 2}


def test_a_missing_backend_names_the_extra_to_install() -> None:
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(batchgen.UsageError, match=r"gs:// URLs.*pip install 'batchgen\[gcs\]'"):
        price_job(manifest="gs://catalog/rows.csv", model="qwen-image")


def test_an_output_upload_that_fails_keeps_the_local_table_and_exits_3(s3: Any) -> None:
    result = batchgen.run(
        manifest=pd.DataFrame({"id": ["a"], "prompt": ["a cup"]}),
        job_id="nobucket",
        model="qwen-image",
        output="s3://no-such-bucket-here/results.csv",
        simulate=True,
    )
    assert result.exit_code == 3
    assert result.summary["by_status"] == {"succeeded": 1}  # the work itself is done
    assert "cannot write s3://no-such-bucket-here/results.csv" in result.summary["output_error"]
    local = Path(result.summary["output"])
    assert local.exists() and "a" in local.read_text()
    assert SECRET not in result.summary["output_error"]


def test_storage_messages_never_carry_signed_url_parameters() -> None:
    from batchgen.job import storage

    url = (
        "https://bucket.s3.amazonaws.com/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLE%2F20260511&X-Amz-Signature=deadbeef&sig=abc&token=xyz"
    )
    shown = storage.redact(f"cannot read {url}: HTTP 403")
    for secret in ("AKIAEXAMPLE", "deadbeef", "abc", "xyz"):
        assert secret not in shown
    assert shown.startswith("cannot read https://bucket.s3.amazonaws.com/a.png?") and "403" in shown
