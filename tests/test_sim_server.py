"""Running the simulator: SimServer fixture, SimThread from sync code, the `sim` CLI command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner

import batchgen.sim
from batchgen.sim import SimConfig, SimServer, SimThread
from batchgen.sim.cli import sim_command


def get_json(url: str, key: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


async def test_conftest_sim_fixture(sim: SimServer) -> None:
    assert sim.base_url.startswith("http://127.0.0.1:")
    assert sim.api_key.startswith("rvya_sk_")
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        async with session.get(sim.base_url + "/api/v1/credits", headers=headers) as resp:
            assert await resp.json() == {"current_credits": 10_000}


async def test_server_port_is_released_and_ephemeral() -> None:
    async with SimServer(SimConfig(seed=1)) as a, SimServer(SimConfig(seed=1)) as b:
        assert a.base_url != b.base_url
        assert a.api_key == b.api_key  # the key is derived from the seed


def test_sim_thread_serves_sync_callers_and_shares_its_ledger() -> None:
    with SimThread(SimConfig(rate=None, latency=0.01, queue_time=0)) as srv:
        status, body = get_json(srv.base_url + "/api/v1/credits", srv.api_key)
        assert (status, body) == (200, {"current_credits": 10_000})
        req = urllib.request.Request(
            srv.base_url + "/api/v1/generations",
            data=json.dumps({"model": "qwen-image", "prompt": "p"}).encode(),
            headers={
                "Authorization": f"Bearer {srv.api_key}",
                "Content-Type": "application/json",
                "Idempotency-Key": "thread-1",
            },
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
        snap = srv.snapshot()
        assert snap["tasks_by_idempotency_key"] == {"thread-1": 1}
        assert srv.sim.credits() == 9996
        _, ledger = get_json(srv.base_url + "/_sim/ledger")
        assert ledger["tasks_created"] == 1


def test_cli_help_has_an_example() -> None:
    result = CliRunner().invoke(sim_command, ["--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "--latency" in result.output


def test_cli_rejects_a_bad_key() -> None:
    result = CliRunner().invoke(sim_command, ["--api-key", "nope", "--port", "0"])
    assert result.exit_code == 2
    assert "rvya_sk_" in result.output


def test_cli_subprocess_prints_url_and_key_and_stops_on_sigterm() -> None:
    code = "from batchgen.sim.cli import sim_command; sim_command()"
    args = ["--port", "0", "--credits", "77", "--seed", "5", "--latency", "0.1", "--rate", "0"]
    # make the package importable from the test's tmp cwd even without `pip install -e`
    root = str(Path(batchgen.sim.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        second = proc.stdout.readline().strip()
        assert first.startswith("base_url: http://127.0.0.1:")
        assert second.startswith("api_key: rvya_sk_")
        base_url, key = first.split(": ", 1)[1], second.split(": ", 1)[1]
        assert get_json(base_url + "/api/v1/models")[0] == 200
        assert get_json(base_url + "/api/v1/credits", key) == (200, {"current_credits": 77})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
