"""Uploads overlap submissions: a reference is uploaded ahead of the create that needs it, while
the rows without references are being submitted, not after all of them; output in manifest
order. Proven from the simulator's ordered request log, without asserting wall time."""

from __future__ import annotations

import hashlib
from pathlib import Path

from jobkit import read_output, run
from test_run_stop import CREATE, UPLOAD, job_with_references

from batchgen.sim import SimConfig, SimServer


async def test_uploads_run_ahead_of_the_submissions_that_need_them(tmp_path: Path) -> None:
    job = job_with_references(tmp_path, n=200)
    # Requests are scarce (a rate limit) and uploads slow: both stages compete for requests.
    config = SimConfig(rate=60.0, latency=0.2, queue_time=0.0, seed=41, upload_delay=0.05)
    async with SimServer(config) as srv:
        result = await run(job, srv)
        log = srv.sim.ledger.request_log()
    assert result.exit_code == 0
    out = read_output(tmp_path / "out" / "results.csv")
    assert list(out["id"]) == [f"sku-{i:05d}" for i in range(1, 201)]  # manifest order
    manifest = read_output(tmp_path / "manifest.csv")
    key_of_upload = {
        "upload-" + hashlib.sha256((tmp_path / photo).read_bytes()).hexdigest()[:32]: key
        for key, photo in zip(manifest["id"], manifest["photo"], strict=True)
        if photo
    }
    with_ref = set(key_of_upload.values())
    uploads = [e for e in log if e["route"] == UPLOAD and e["status"] == 201]
    creates = [e for e in log if e["route"] == CREATE and e["status"] == 202]
    assert len(uploads) == 100 and len(creates) == 200
    # Each row's create went out after its reference was uploaded.
    uploaded_at = {key_of_upload[e["trace"]]: e["end"] for e in uploads}
    assert all(e["start"] > uploaded_at[e["trace"]] for e in creates if e["trace"] in with_ref)
    # The uploads did not wait for the rows without references: most of them started while
    # those rows were still being submitted (before, only the first few did: 1 of 100).
    last_plain = max(e["start"] for e in creates if e["trace"] not in with_ref)
    early = sum(1 for e in uploads if e["start"] < last_plain)
    assert early >= 50, early
