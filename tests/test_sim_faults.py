"""Rate limit, injected faults, task outcomes and credit settlement, ledger and admin routes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from batchgen.sim import AccountConfig, FakeClock, KeyConfig, SimConfig, SimServer

KEY = "rvya_sk_fault_a"
KEY_B = "rvya_sk_fault_b"
BODY = {"model": "qwen2-image", "prompt": "a vase", "params": {"seed": 1}}
ACCOUNTS = (
    AccountConfig("acct_a", (KeyConfig(KEY),)),
    AccountConfig("acct_b", (KeyConfig(KEY_B),)),
)


class Client:
    def __init__(self, session: aiohttp.ClientSession, srv: SimServer) -> None:
        self.session = session
        self.srv = srv

    async def call(
        self, method: str, path: str, *, key: str = KEY, **kw: Any
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.session.request(
            method, self.srv.base_url + path, headers=headers, **kw
        ) as resp:
            if resp.content_type == "application/json":
                body = await resp.json()
            else:
                body = await resp.text()
            return resp.status, body, resp.headers

    async def create(self, **kw: Any) -> tuple[int, Any, Any]:
        return await self.call("POST", "/api/v1/generations", json=BODY, **kw)

    def snap(self) -> dict[str, Any]:
        return self.srv.sim.ledger.snapshot()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> SimConfig:
    return SimConfig(
        rate=None, latency=10, latency_sigma=0, queue_time=0, credits=100, accounts=ACCOUNTS
    )


@pytest.fixture
async def client(config: SimConfig, clock: FakeClock) -> AsyncIterator[Client]:
    async with SimServer(config, clock=clock) as srv, aiohttp.ClientSession() as session:
        yield Client(session, srv)


# --------------------------------------------------------------------------- rate limit


async def test_rate_limit_429_with_headers_and_no_effect(client: Client, clock: FakeClock) -> None:
    client.srv.config.rate = 1.0
    client.srv.config.burst = 2
    status, _, headers = await client.call("GET", "/api/v1/credits")
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "2" and headers["X-RateLimit-Remaining"] == "1"
    status, _, _ = await client.create()
    assert status == 202
    status, err, headers = await client.create()
    assert status == 429
    assert err["error"]["code"] == "rate_limited" and err["error"]["requestId"]
    assert headers["Retry-After"] == "1"
    assert headers["X-RateLimit-Limit"] == "2"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["X-RateLimit-Reset"]) >= 1
    snap = client.snap()
    assert snap["tasks_created"] == 1  # the refused create had no effect
    assert snap["credits"]["acct_a"]["reserved"] == 6
    assert snap["faults"]["rate_limited"] == 1
    # the bucket is per account
    assert (await client.call("GET", "/api/v1/credits", key=KEY_B))[0] == 200
    # and refills with time
    clock.advance(1.0)
    assert (await client.create())[0] == 202


async def test_retry_after_is_ceil_of_the_wait(client: Client) -> None:
    client.srv.config.rate = 0.25  # one token every 4 s
    client.srv.config.burst = 1
    assert (await client.call("GET", "/api/v1/credits"))[0] == 200
    status, _, headers = await client.call("GET", "/api/v1/credits")
    assert status == 429 and headers["Retry-After"] == "4"


async def test_rate_limit_headers_can_be_switched_off(client: Client) -> None:
    client.srv.config.rate = 1.0
    client.srv.config.burst = 1
    client.srv.config.rate_limit_headers = False
    status, _, headers = await client.call("GET", "/api/v1/credits")
    assert status == 200 and "X-RateLimit-Limit" not in headers
    status, _, headers = await client.call("GET", "/api/v1/credits")
    assert status == 429
    assert "Retry-After" in headers
    assert not any(h.lower().startswith("x-ratelimit") for h in headers)


async def test_429_under_concurrent_load_real_clock() -> None:
    config = SimConfig(rate=5.0, burst=5, latency=1, accounts=ACCOUNTS)
    async with SimServer(config) as srv, aiohttp.ClientSession() as session:
        client = Client(session, srv)
        results = await asyncio.gather(*(client.call("GET", "/api/v1/credits") for _ in range(30)))
    statuses = [r[0] for r in results]
    assert 429 in statuses and 200 in statuses
    limited = [r for r in results if r[0] == 429]
    assert all(int(r[2]["Retry-After"]) >= 1 for r in limited)
    assert client.snap()["responses"]["429"] == len(limited)


# --------------------------------------------------------------------------- faults


async def test_internal_error_before_effect(client: Client) -> None:
    client.srv.config.error_rate = 1.0
    status, err, _ = await client.create()
    assert status == 500
    assert err["error"]["code"] == "internal_error" and err["error"]["requestId"]
    assert client.snap()["tasks_created"] == 0


async def test_html_502_body(client: Client) -> None:
    client.srv.config.html_error_rate = 1.0
    status, body, headers = await client.create()
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert "<html>" in body
    assert client.snap()["tasks_created"] == 0


async def test_dropped_connection_before_effect(client: Client) -> None:
    client.srv.config.drop_rate = 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.create()
    snap = client.snap()
    assert snap["tasks_created"] == 0
    assert snap["faults"]["drop"] == 1 and snap["responses"] == {"dropped": 1}
    client.srv.config.drop_rate = 0.0
    assert (await client.create())[0] == 202  # the server is still fine


async def test_slow_responses_are_counted(client: Client) -> None:
    client.srv.config.slow_rate = 1.0
    client.srv.config.slow_seconds = 0.01
    assert (await client.call("GET", "/api/v1/credits"))[0] == 200
    assert (await client.create())[0] == 202
    assert client.snap()["faults"]["slow"] == 2


async def test_faults_are_reproducible_with_a_seed() -> None:
    async def run() -> list[int]:
        cfg = SimConfig(rate=None, error_rate=0.5, seed=42, accounts=ACCOUNTS)
        async with SimServer(cfg) as srv, aiohttp.ClientSession() as session:
            client = Client(session, srv)
            return [(await client.call("GET", "/api/v1/credits"))[0] for _ in range(20)]

    first = await run()
    assert first == await run()
    assert {200, 500} == set(first)


# --------------------------------------------------------------------------- outcomes and credits


async def test_failed_task_is_refunded(client: Client, clock: FakeClock) -> None:
    client.srv.config.failure_rate = 1.0
    _, task, _ = await client.create()
    assert (await client.call("GET", "/api/v1/credits"))[1] == {"current_credits": 94}
    clock.advance(30)
    _, done, _ = await client.call("GET", f"/api/v1/generations/{task['id']}")
    assert done["status"] == "failed"
    assert done["result"] is None
    assert done["error"]["code"] == "generation_failed" and done["error"]["message"]
    assert done["final_credits"] == 0 and done["reserved_credits"] == 6
    assert (await client.call("GET", "/api/v1/credits"))[1] == {"current_credits": 100}
    book = client.snap()["credits"]["acct_a"]
    assert (book["reserved"], book["charged"], book["refunded"], book["outstanding"]) == (
        6,
        0,
        6,
        0,
    )


async def test_stuck_task_never_finishes(client: Client, clock: FakeClock) -> None:
    client.srv.config.stuck_rate = 1.0
    _, task, _ = await client.create()
    clock.advance(10 * 24 * 3600)
    _, polled, _ = await client.call("GET", f"/api/v1/generations/{task['id']}")
    assert polled["status"] == "processing" and polled["final_credits"] == 0
    snap = client.snap()
    assert snap["faults"]["stuck"] == 1
    assert snap["credits"]["acct_a"]["outstanding"] == 6


async def test_settlement_happens_without_polling(client: Client, clock: FakeClock) -> None:
    for _ in range(3):
        await client.create()
    client.srv.config.failure_rate = 1.0
    await client.create()
    assert client.snap()["credits"]["acct_a"]["outstanding"] == 24
    clock.advance(60)
    snap = client.snap()  # a ledger read settles what is due
    assert snap["settled"] == {"succeeded": 3, "failed": 1}
    book = snap["credits"]["acct_a"]
    assert (book["balance"], book["charged"], book["refunded"], book["outstanding"]) == (
        82,
        18,
        6,
        0,
    )


async def test_insufficient_credits_default_402(client: Client) -> None:
    client.srv.sim.set_credits("acct_a", 5)
    status, err, _ = await client.create()
    assert status == 402
    assert err["error"]["code"] == "insufficient_credits"
    assert client.snap()["tasks_created"] == 0


# --------------------------------------------------------------------------- ledger and admin


async def test_ledger_counts_requests_responses_and_concurrency() -> None:
    config = SimConfig(rate=None, latency=5, create_delay=0.5, accounts=ACCOUNTS)
    async with SimServer(config) as srv, aiohttp.ClientSession() as session:
        client = Client(session, srv)
        await asyncio.gather(*(client.create() for _ in range(5)))
        await client.call("GET", "/api/v1/generations/task_missing")
        snap = client.snap()
    assert snap["max_in_flight"] == 5
    assert snap["in_flight"] == 0
    assert snap["requests"] == {
        "POST /api/v1/generations": 5,
        "GET /api/v1/generations/{task_id}": 1,
    }
    assert snap["responses"] == {"202": 5, "404": 1}
    assert snap["errors"] == {"not_found": 1}


async def test_admin_routes(client: Client, clock: FakeClock) -> None:
    session, base = client.session, client.srv.base_url
    await client.create()
    async with session.get(base + "/_sim/ledger") as resp:
        assert resp.status == 200
        ledger = await resp.json()
    assert ledger["tasks_created"] == 1 and ledger["credits"]["acct_a"]["balance"] == 94
    async with session.post(base + "/_sim/credits", json={"account": "acct_b", "credits": 7}) as r:
        assert await r.json() == {"account": "acct_b", "current_credits": 7}
    async with session.post(base + "/_sim/credits", json={"account": "acct_b", "add": 3}) as r:
        assert await r.json() == {"account": "acct_b", "current_credits": 10}
    assert (await client.call("GET", "/api/v1/credits", key=KEY_B))[1] == {"current_credits": 10}
    async with session.post(base + "/_sim/credits", json={"add": "x"}) as r:
        assert r.status == 400
    async with session.post(base + "/_sim/config", json={"failure_rate": 1.0}) as r:
        assert r.status == 200 and (await r.json())["failure_rate"] == 1.0
    assert client.srv.config.failure_rate == 1.0
    async with session.post(base + "/_sim/config", json={"seed": 3}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "validation_failed"


async def test_upload_dropped_after_effect_is_stored(client: Client) -> None:
    client.srv.config.drop_after_rate = 1.0
    form = aiohttp.FormData()
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")  # a real image: the Files API decodes it
    form.add_field("file", io.BytesIO(png.getvalue()), filename="a.png")
    form.add_field("kind", "image")
    form.add_field("client_request_id", "up-1")
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.call("POST", "/api/v1/files", data=form)
    snap = client.snap()
    assert snap["files_uploaded"] == 1 and snap["files_by_client_request_id"] == {"up-1": 1}


async def test_latency_by_model_gives_each_model_its_own_median(
    client: Client, clock: FakeClock
) -> None:
    client.srv.config.latency = 3
    client.srv.config.latency_by_model = {"qwen2-image": 15}
    ids = {}
    for model in ("qwen-image", "qwen2-image"):
        body = {"model": model, "prompt": "a vase"}
        status, task, _ = await client.call("POST", "/api/v1/generations", json=body)
        assert status == 202
        ids[model] = task["id"]

    async def states() -> dict[str, str]:
        return {
            m: (await client.call("GET", f"/api/v1/generations/{i}"))[1]["status"]
            for m, i in ids.items()
        }

    clock.advance(2.9)
    assert await states() == {"qwen-image": "processing", "qwen2-image": "processing"}
    clock.advance(0.2)
    assert await states() == {"qwen-image": "succeeded", "qwen2-image": "processing"}
    clock.advance(12.0)
    assert await states() == {"qwen-image": "succeeded", "qwen2-image": "succeeded"}


def test_latency_by_model_flag_rejects_a_malformed_item() -> None:
    from click.testing import CliRunner

    from batchgen.sim.cli import sim_command

    result = CliRunner().invoke(sim_command, ["--latency-by-model", "qwen-image=3,qwen2-image"])
    assert result.exit_code == 2
    assert "--latency-by-model" in result.output and "'qwen2-image'" in result.output


async def test_a_new_limit_keeps_the_tokens_and_the_ledger_times_each_decision(
    client: Client, clock: FakeClock
) -> None:
    client.srv.config.rate = 1.0
    client.srv.config.burst = 2
    assert [(await client.call("GET", "/api/v1/credits"))[0] for _ in range(2)] == [200, 200]
    client.srv.config.rate = 10.0
    client.srv.config.burst = 10
    # a raised limit is no fresh full bucket: the bucket was empty and stays so
    assert (await client.call("GET", "/api/v1/credits"))[0] == 429
    clock.advance(0.15)  # a token and a half at the new rate
    assert (await client.call("GET", "/api/v1/credits"))[0] == 200
    timeline = client.snap()["rate_timeline"]
    assert sum(a for a, _ in timeline.values()) == 3
    assert sum(r for _, r in timeline.values()) == 1
    assert len(timeline) == 2  # two tenths of a second


async def test_the_ledger_counts_polls_by_model(client: Client) -> None:
    status, task, _ = await client.create()
    assert status == 202
    for _ in range(3):
        assert (await client.call("GET", f"/api/v1/generations/{task['id']}"))[0] == 200
    assert client.snap()["polls_by_model"] == {"qwen2-image": 3}
