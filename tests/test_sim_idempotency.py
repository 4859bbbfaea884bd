"""Idempotency-Key semantics of POST /generations, and credit reservation around them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from batchgen.sim import AccountConfig, FakeClock, KeyConfig, SimConfig, SimServer

KEY = "rvya_sk_idem_a"
KEY_B = "rvya_sk_idem_b"
BODY = {"model": "qwen-image", "prompt": "a lamp", "params": {"image_size": "square"}}


class Client:
    def __init__(self, session: aiohttp.ClientSession, srv: SimServer) -> None:
        self.session = session
        self.srv = srv

    async def create(self, body: dict, idem: str | None = None, key: str = KEY) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        url = self.srv.base_url + "/api/v1/generations"
        async with self.session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    def snap(self) -> dict[str, Any]:
        return self.srv.sim.ledger.snapshot()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def accounts(credits_b: int = 100) -> tuple[AccountConfig, ...]:
    return (
        AccountConfig("acct_a", (KeyConfig(KEY),)),
        AccountConfig("acct_b", (KeyConfig(KEY_B),), credits=credits_b),
    )


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[Client]:
    config = SimConfig(rate=None, latency=5, queue_time=0, credits=100, accounts=accounts(), seed=3)
    async with SimServer(config, clock=clock) as srv, aiohttp.ClientSession() as session:
        yield Client(session, srv)


async def test_same_key_same_body_replays_the_original_task(client: Client) -> None:
    status, first = await client.create(BODY, "row-1")
    assert status == 202
    # same body with keys in another order is the same request
    reordered = {"params": {"image_size": "square"}, "prompt": "a lamp", "model": "qwen-image"}
    status, again = await client.create(reordered, "row-1")
    assert status == 200
    assert again["id"] == first["id"]
    snap = client.snap()
    assert snap["tasks_created"] == 1
    assert snap["tasks_by_idempotency_key"] == {"row-1": 1}
    assert snap["replays"] == 1
    assert snap["credits"]["acct_a"]["reserved"] == 4
    assert snap["credits"]["acct_a"]["balance"] == 96


async def test_replay_shows_the_current_state(client: Client, clock: FakeClock) -> None:
    _, first = await client.create(BODY, "row-1")
    clock.advance(60)
    status, again = await client.create(BODY, "row-1")
    assert status == 200
    assert again["id"] == first["id"] and again["status"] == "succeeded"
    assert client.snap()["credits"]["acct_a"]["charged"] == 4


async def test_same_key_different_body_conflicts(client: Client) -> None:
    await client.create(BODY, "row-1")
    status, err = await client.create({**BODY, "prompt": "another lamp"}, "row-1")
    assert status == 409
    assert err["error"]["code"] == "idempotency_conflict"
    assert err["error"]["requestId"].startswith("req_")
    assert client.snap()["tasks_created"] == 1


async def test_keys_are_per_account(client: Client) -> None:
    _, a = await client.create(BODY, "shared")
    status, b = await client.create(BODY, "shared", key=KEY_B)
    assert status == 202 and b["id"] != a["id"]
    assert client.snap()["tasks_by_idempotency_key"] == {"shared": 2}


async def test_retention_is_24_hours(client: Client, clock: FakeClock) -> None:
    _, first = await client.create(BODY, "row-1")
    clock.advance(24 * 3600 - 1)
    assert (await client.create(BODY, "row-1"))[1]["id"] == first["id"]
    clock.advance(2)
    status, fresh = await client.create(BODY, "row-1")
    assert status == 202 and fresh["id"] != first["id"]
    assert client.snap()["tasks_by_idempotency_key"] == {"row-1": 2}


async def test_rejected_request_does_not_consume_the_key(client: Client) -> None:
    status, _ = await client.create({**BODY, "params": {"image_size": "huge"}}, "row-1")
    assert status == 400
    status, _ = await client.create(BODY, "row-1")
    assert status == 202


async def test_insufficient_credits_then_top_up_and_retry(client: Client) -> None:
    client.srv.sim.set_credits("acct_a", 3)
    status, err = await client.create(BODY, "row-1")
    assert status == 402
    assert err["error"]["code"] == "insufficient_credits"
    snap = client.snap()
    assert snap["tasks_created"] == 0 and snap["credits"]["acct_a"]["reserved"] == 0
    client.srv.sim.add_credits("acct_a", 10)
    status, _ = await client.create(BODY, "row-1")
    assert status == 202
    assert client.snap()["credits"]["acct_a"]["balance"] == 9


async def test_insufficient_status_is_configurable(clock: FakeClock) -> None:
    config = SimConfig(rate=None, credits=1, insufficient_status=403, accounts=accounts())
    async with SimServer(config, clock=clock) as srv, aiohttp.ClientSession() as session:
        status, err = await Client(session, srv).create(BODY)
    assert status == 403 and err["error"]["code"] == "insufficient_credits"


async def test_same_key_while_first_is_in_flight_conflicts() -> None:
    config = SimConfig(rate=None, latency=5, create_delay=0.5, accounts=accounts())
    async with SimServer(config) as srv, aiohttp.ClientSession() as session:
        client = Client(session, srv)
        first = asyncio.ensure_future(client.create(BODY, "row-1"))
        while client.snap()["requests"].get("POST /api/v1/generations", 0) < 1:
            await asyncio.sleep(0.01)
        status, err = await client.create(BODY, "row-1")
        assert status == 409
        assert err["error"]["code"] == "idempotency_conflict"
        assert "still being processed" in err["error"]["message"]
        status, task = await first
        assert status == 202
        assert (await client.create(BODY, "row-1"))[1]["id"] == task["id"]
    assert client.snap()["tasks_created"] == 1


async def test_drop_after_effect_then_replay_charges_once(clock: FakeClock) -> None:
    config = SimConfig(rate=None, latency=5, drop_after_rate=1.0, accounts=accounts())
    async with SimServer(config, clock=clock) as srv, aiohttp.ClientSession() as session:
        client = Client(session, srv)
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.create(BODY, "row-1")
        snap = client.snap()
        assert snap["tasks_created"] == 1 and snap["faults"]["drop_after"] == 1
        assert snap["responses"] == {"dropped": 1}
        srv.config.drop_after_rate = 0.0
        status, _ = await client.create(BODY, "row-1")
        assert status == 200
        snap = client.snap()
        assert snap["tasks_created"] == 1
        assert snap["credits"]["acct_a"]["reserved"] == 4
        assert snap["tasks_by_idempotency_key"] == {"row-1": 1}


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_create_status_knob(clock: FakeClock, status: int) -> None:
    config = SimConfig(rate=None, create_status=status, accounts=accounts())
    async with SimServer(config, clock=clock) as srv, aiohttp.ClientSession() as session:
        got, task = await Client(session, srv).create(BODY, "k")
    assert got == status and task["status"] == "queued"


async def test_without_key_every_post_is_a_new_task(client: Client) -> None:
    a = (await client.create({**BODY, "client_request_id": "c1"}))[1]
    b = (await client.create({**BODY, "client_request_id": "c1"}))[1]
    assert a["id"] != b["id"]
    snap = client.snap()
    assert snap["tasks_without_key"] == 2
    assert snap["tasks_by_client_request_id"] == {"c1": 2}
    assert snap["credits"]["acct_a"]["reserved"] == 8
