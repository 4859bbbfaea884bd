"""RequestBudget and PollScheduler under a fake clock: deterministic, no wall-clock timing."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from batchgen.pipeline.polling import MIN_SAMPLES, SAMPLE_SIZE, SCOUTS, PollScheduler
from batchgen.rivya.budget import Priority, RequestBudget
from batchgen.rivya.share import AccountShare


class FakeTime:
    """Virtual time: ``sleep`` parks a coroutine; ``run`` advances to the next wake-up whenever
    every task is parked."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self._seq += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), self._seq, fut))
        await fut

    async def run(self, *coros: Awaitable[Any], until: float | None = None) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            while not all(t.done() for t in tasks):
                for _ in range(30):
                    await asyncio.sleep(0)
                if all(t.done() for t in tasks):
                    break
                while self._sleepers and self._sleepers[0][2].done():
                    heapq.heappop(self._sleepers)
                if not self._sleepers:
                    raise AssertionError("deadlock: every task waits and nothing sleeps")
                when, _, fut = heapq.heappop(self._sleepers)
                if until is not None and when > until:
                    break
                self.now = max(self.now, when)
                fut.set_result(None)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return [t.result() for t in tasks if not t.cancelled() and t.exception() is None]


def make_budget(ft: FakeTime, **kw: Any) -> RequestBudget:
    return RequestBudget(clock=ft.clock, sleep=ft.sleep, wall_clock=ft.clock, **kw)


async def test_concurrency_cap_holds_by_measurement() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=4, initial_rate=1000.0)
    current = peak = 0

    async def request(i: int) -> None:
        nonlocal current, peak
        async with budget.slot(Priority.POLL if i % 2 else Priority.SUBMIT):
            current += 1
            peak = max(peak, current)
            await ft.sleep(0.1 + (i % 3) * 0.05)
            current -= 1
            budget.on_response(200, {})

    await ft.run(*(request(i) for i in range(60)))
    assert peak == 4
    assert budget.max_in_flight_seen == 4
    assert budget.in_flight == 0
    assert budget.granted == 60


async def test_waiters_go_by_priority_then_arrival() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=1, initial_rate=1000.0)
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with budget.slot(Priority.OTHER):
            await release.wait()

    async def request(name: str, priority: Priority) -> None:
        async with budget.slot(priority):
            order.append(name)
            await ft.sleep(0.01)

    async def scenario() -> None:
        hold = asyncio.ensure_future(holder())
        await asyncio.sleep(0)
        names = [
            ("upload-1", Priority.UPLOAD),
            ("other-1", Priority.OTHER),
            ("submit-1", Priority.SUBMIT),
            ("poll-1", Priority.POLL),
            ("upload-2", Priority.UPLOAD),
            ("poll-2", Priority.POLL),
            ("submit-2", Priority.SUBMIT),
        ]
        waiting = [asyncio.ensure_future(request(n, p)) for n, p in names]
        for _ in range(5):
            await asyncio.sleep(0)
        assert budget.waiting == len(names)
        release.set()
        await asyncio.gather(hold, *waiting)

    await ft.run(scenario())
    assert order == ["poll-1", "poll-2", "submit-1", "submit-2", "upload-1", "upload-2", "other-1"]


async def test_cancelled_waiter_leaves_the_queue_working() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=1, initial_rate=1000.0)
    done: list[str] = []

    async def request(name: str, hold: float) -> None:
        async with budget.slot(Priority.POLL):
            await ft.sleep(hold)
            done.append(name)

    async def scenario() -> None:
        first = asyncio.ensure_future(request("first", 1.0))
        await asyncio.sleep(0)
        doomed = asyncio.ensure_future(request("doomed", 0.1))
        last = asyncio.ensure_future(request("last", 0.1))
        await asyncio.sleep(0)
        doomed.cancel()
        await asyncio.gather(first, last)
        assert doomed.cancelled()

    await ft.run(scenario())
    assert done == ["first", "last"]
    assert budget.in_flight == 0 and budget.waiting == 0


async def test_token_rate_is_respected() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=100, initial_rate=10.0, max_rate=10.0)
    granted: list[float] = []

    async def request() -> None:
        async with budget.slot(Priority.SUBMIT):
            granted.append(ft.now)

    await ft.run(*(request() for _ in range(51)))
    # one token to start with, then 10 per second: 51 grants take about 5 virtual seconds
    assert granted[-1] == pytest.approx(5.0, abs=0.05)
    assert budget.rate == 10.0  # the ceiling holds even though senders were always waiting


async def test_slow_start_grows_the_rate_only_while_rate_bound() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=1000, initial_rate=10.0)

    async def request() -> None:
        async with budget.slot(Priority.SUBMIT):
            pass
        budget.on_response(200, {})

    await ft.run(*(request() for _ in range(300)))
    assert budget.rate > 40.0  # doubled several times while senders waited on the bucket

    # A client bound by concurrency (slow answers, rate to spare) does not inflate its rate.
    ft2 = FakeTime()
    idle = make_budget(ft2, max_in_flight=2, initial_rate=40.0)

    async def slow_request() -> None:
        async with idle.slot(Priority.SUBMIT):
            await ft2.sleep(1.0)
        idle.on_response(200, {})

    await ft2.run(*(slow_request() for _ in range(40)))
    assert idle.rate == 40.0


async def test_retry_after_pauses_every_sender() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=10, initial_rate=1000.0)
    budget.on_response(429, {}, 5.0, started=0.0)
    assert budget.paused_until == 5.0
    granted: dict[str, float] = {}

    async def request(name: str, priority: Priority) -> None:
        async with budget.slot(priority):
            granted[name] = ft.now

    await ft.run(
        request("poll", Priority.POLL),
        request("submit", Priority.SUBMIT),
        request("upload", Priority.UPLOAD),
    )
    assert set(granted) == {"poll", "submit", "upload"}
    assert min(granted.values()) >= 5.0


async def test_ratelimit_reset_pauses_when_there_is_no_retry_after() -> None:
    ft = FakeTime()
    ft.now = 100.0
    budget = make_budget(ft, initial_rate=1000.0)
    budget.on_response(429, {"X-RateLimit-Reset": "3"}, None)
    assert budget.paused_until == pytest.approx(103.0)
    # an epoch timestamp is understood too (wall clock == fake clock here)
    budget.on_response(429, {"X-RateLimit-Reset": str(1_700_000_000)}, None)
    ft.now = 1_699_999_990.0
    budget2 = make_budget(ft, initial_rate=1000.0)
    budget2.on_response(429, {"X-RateLimit-Reset": "1700000000"}, None)
    assert budget2.paused_until == pytest.approx(1_700_000_000.0)


async def test_ratelimit_limit_header_is_a_start_only_when_trusted() -> None:
    # by default the header is ignored: its unit (per second? per window? bucket size?) is
    # undocumented
    plain = RequestBudget(initial_rate=50.0)
    plain.on_response(200, {"X-RateLimit-Limit": "20"})
    assert plain.rate == 50.0
    budget = RequestBudget(initial_rate=50.0, trust_limit_header=True)
    budget.on_response(429, {"X-RateLimit-Limit": "3"}, 1.0)
    assert budget.rate == pytest.approx(35.0)  # not taken from a 429: beta * 50
    budget = RequestBudget(initial_rate=50.0, trust_limit_header=True)
    budget.on_response(200, {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "19"})
    assert budget.rate == 20.0
    budget.on_response(200, {"X-RateLimit-Limit": "500"})
    assert budget.rate == 20.0  # only the first sighting sets it
    capped = RequestBudget(initial_rate=50.0, max_rate=5.0, trust_limit_header=True)
    capped.on_response(200, {"X-RateLimit-Limit": "20"})
    assert capped.rate == 5.0


async def test_one_burst_of_429s_is_one_decrease() -> None:
    ft = FakeTime()
    budget = make_budget(ft, initial_rate=100.0)

    async def request() -> None:
        async with budget.slot(Priority.POLL) as slot:
            await ft.sleep(0.5)
            budget.on_response(429, {}, None, started=slot.started)

    await ft.run(*(request() for _ in range(5)))
    assert budget.decreases == 1  # five 429s, all sent before the decrease: one event
    assert budget.throttled == 5
    after_first = budget.rate
    assert after_first == pytest.approx(70.0)  # beta * the rate

    await ft.run(*(request() for _ in range(5)))
    assert budget.decreases == 2  # a new burst, sent after the decrease: a new event
    assert budget.rate < after_first


class TokenBucketServer:
    """A fake account limit: ``rate`` requests per second, ``burst`` deep, in virtual time."""

    def __init__(self, ft: FakeTime, rate: float, burst: float) -> None:
        self.ft, self.rate, self.burst = ft, rate, burst
        self.tokens, self.last = burst, 0.0
        self.accepted = self.refused = 0
        self.log: list[tuple[float, bool]] = []

    def answer(self) -> bool:
        now = self.ft.now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        ok = self.tokens >= 1.0
        if ok:
            self.tokens -= 1.0
            self.accepted += 1
        else:
            self.refused += 1
        self.log.append((now, ok))
        return ok


RA: float | None = 1.0


async def drive(ft: FakeTime, budget: RequestBudget, server: TokenBucketServer, until: float):
    """Many senders with unbounded demand, each request taking 50 ms, until ``until``."""
    rates: list[tuple[float, float]] = []

    async def sender(i: int) -> None:
        rng = random.Random(i)
        while ft.now < until:
            async with budget.slot(Priority.POLL) as slot:
                await ft.sleep(0.04 + rng.random() * 0.02)
                ok = server.answer()
                budget.on_response(200 if ok else 429, {}, None if ok else RA, started=slot.started)
            rates.append((ft.now, budget.rate))

    await ft.run(*(sender(i) for i in range(24)))
    return rates


async def test_discovers_the_account_limit_with_few_429s_then_recovers() -> None:
    ft = FakeTime()
    budget = make_budget(ft, max_in_flight=24, initial_rate=50.0)
    server = TokenBucketServer(ft, rate=20.0, burst=20.0)
    await drive(ft, budget, server, until=300.0)

    assert budget.decreases >= 1
    total = server.accepted + server.refused
    assert server.refused / total <= 0.03  # at most 3 % of requests answered 429
    steady = [ok for t, ok in server.log if t >= 60.0]
    assert sum(steady) / 240.0 >= 0.85 * 20.0  # near the limit once discovered
    assert budget.rate < 30.0

    # The limit is lifted: with no 429s the rate climbs well past the old limit.
    server.rate, server.burst = 1000.0, 1000.0
    before = budget.rate
    await drive(ft, budget, server, until=ft.now + 60.0)
    assert budget.rate > 3 * before


async def test_retry_budget_bounds_retries() -> None:
    ft = FakeTime()
    budget = make_budget(ft, retry_ratio=0.1, retry_floor_rate=1.0, retry_cap=4.0)
    granted: list[float] = []

    async def retrier() -> None:
        await budget.retry_permit()
        granted.append(ft.now)

    await ft.run(*(retrier() for _ in range(6)))
    # two tokens to start with (half the cap), then one per second from the floor rate
    assert granted[:2] == [0.0, 0.0]
    assert granted[-1] == pytest.approx(4.0, abs=1e-6)
    # requests deposit retry_ratio tokens each
    before = budget.retry_available()

    async def request() -> None:
        async with budget.slot(Priority.POLL):
            pass

    await ft.run(*(request() for _ in range(10)))
    elapsed = ft.now - granted[-1]
    assert budget.retry_available() == pytest.approx(before + 1.0 + elapsed * 1.0)


# -- PollScheduler ---------------------------------------------------------------------------


def test_scheduler_pops_due_tasks_in_time_order() -> None:
    s = PollScheduler(rng=random.Random(1))
    s.add("c", "qwen-image", 2.0)
    s.add("a", "qwen-image", 0.0)
    s.add("b", "qwen-image", 1.0)
    assert len(s) == 3
    first = s.next_due()
    assert first is not None and 2.0 <= first <= 3.0
    assert s.pop_due(first - 1e-6) == []
    assert s.pop_due(100.0) == ["a", "b", "c"]
    assert s.next_due() is None
    assert len(s) == 3  # still tracked until rescheduled or removed
    assert s.pop_due(1000.0) == []


def test_scheduler_reschedule_remove_and_limit() -> None:
    s = PollScheduler(interval=(5.0, 10.0), rng=random.Random(2))
    for i in range(10):
        s.add(f"t{i}", "m", float(i))
    assert s.pop_due(100.0, limit=4) == ["t0", "t1", "t2", "t3"]
    s.remove("t5")
    assert "t5" not in s and len(s) == 9
    assert "t5" not in s.pop_due(100.0)
    delays = []
    for _ in range(8):
        due = s.reschedule("t0", 100.0)
        assert due is not None
        delays.append(due - 100.0)
        assert s.pop_due(due) == ["t0"]
    assert all(5.0 <= d <= 10.0 for d in delays)
    assert delays[0] < delays[-1] == 10.0  # backs off within the interval
    assert s.reschedule("gone", 1.0) is None
    # rescheduling a still-scheduled task replaces its old entry
    s.add("x", "m", 0.0)
    s.reschedule("x", 50.0)
    assert s.pop_due(49.0) == []
    assert s.pop_due(1000.0) == ["x"]


def test_scheduler_first_poll_defaults_then_adapts_per_model() -> None:
    s = PollScheduler(
        first=(2.0, 3.0),
        interval=(5.0, 10.0),
        first_min=1.0,
        rng=random.Random(3),
        pressured=lambda: False,
    )
    assert all(2.0 <= s.first_delay("unseen") <= 3.0 for _ in range(50))
    for _ in range(40):
        s.observe("slow", 6.0, exact=True)
        s.observe("fast", 0.2, exact=True)
        s.observe("glacial", 60.0, exact=True)
    assert all(5.6 <= s.first_delay("slow") <= 6.4 for _ in range(50))
    assert s.first_delay("fast") == 1.0  # never sooner than first_min
    assert 56.0 <= s.first_delay("glacial") <= 64.0  # a slow model is not polled every 10 s
    assert all(2.0 <= s.first_delay("unseen") <= 3.0 for _ in range(50))
    due = s.add("t", "slow", 100.0)
    assert 105.6 <= due <= 106.4


def _lognormal_scheduler(pressured: bool, seed: int = 4) -> tuple[PollScheduler, list[float]]:
    rng = random.Random(seed)
    s = PollScheduler(rng=random.Random(seed + 1), pressured=lambda: pressured)
    samples = [3.0 * rng.lognormvariate(0.0, 0.4) for _ in range(SAMPLE_SIZE)]
    for x in samples:
        s.observe("m", x, exact=True)
    return s, samples


def _polls_until_done(s: PollScheduler, duration: float) -> tuple[int, float]:
    """Drive one task of ``duration`` through the scheduler: (polls, time noticed done)."""
    due = s.add("t", "m", 0.0)
    polls = 0
    while True:
        assert s.pop_due(due) == ["t"]
        polls += 1
        if due >= duration:
            s.remove("t")
            return polls, due
        nxt = s.reschedule("t", due)
        assert nxt is not None and nxt > due
        due = nxt


def test_scheduler_first_poll_is_a_high_quantile_under_pressure_a_lower_one_otherwise() -> None:
    pressured, samples = _lognormal_scheduler(True)
    relaxed, _ = _lognormal_scheduler(False)
    ordered = sorted(samples)
    q95, q60 = ordered[int(0.95 * len(ordered)) - 1], ordered[int(0.6 * len(ordered)) - 1]
    assert pressured.first_delay("m") == pytest.approx(q95, rel=0.06)
    assert relaxed.first_delay("m") == pytest.approx(q60, rel=0.06)


@pytest.mark.parametrize(
    ("pressured", "max_polls", "max_lag"), [(True, 1.1, 1.1), (False, 1.8, 0.4)]
)
def test_scheduler_few_polls_per_task_without_much_latency(
    pressured: bool, max_polls: float, max_lag: float
) -> None:
    """Tasks drawn from the observed distribution: polls per task and the delay between done
    and noticed (relative to the median), in both modes; a fake clock, nothing timed."""
    s, _ = _lognormal_scheduler(pressured)
    rng = random.Random(9)
    polls = lag = 0.0
    n = 2000
    for _ in range(n):
        duration = 3.0 * rng.lognormvariate(0.0, 0.4)
        p, noticed = _polls_until_done(s, duration)
        polls += p
        lag += noticed - duration
    assert polls / n <= max_polls
    assert lag / n <= max_lag * 3.0


def test_scheduler_stragglers_back_off_with_age_up_to_the_longest_interval() -> None:
    s, _ = _lognormal_scheduler(True)
    due = s.add("t", "m", 0.0)
    gaps = []
    for _ in range(12):
        s.pop_due(due)
        nxt = s.reschedule("t", due)
        assert nxt is not None
        gaps.append(nxt - due)
        due = nxt
    assert all(g >= s.gap_floor for g in gaps)
    assert gaps[-1] <= 10.0 * 1.06 and gaps[-1] > gaps[3]  # grows, capped near the interval


def test_scheduler_first_estimate_replans_tasks_waiting_for_a_default_first_poll() -> None:
    s = PollScheduler(first=(2.0, 3.0), rng=random.Random(6), pressured=lambda: True)
    for i in range(5):
        s.add(f"t{i}", "m", 0.0)
    assert all(2.0 <= d <= 3.0 for d in [s.next_due() or 0.0])
    for _ in range(MIN_SAMPLES):
        s.observe("m", 8.0, exact=True)
    due = s.next_due()
    assert due is not None and 7.5 <= due <= 8.5  # moved from 2-3 s to the estimate
    # nothing left to submit: relaxed replan only moves polls earlier
    for _ in range(SAMPLE_SIZE):
        s.observe("m", 4.0, exact=True)
    assert s.replan(relaxed=True) == 5
    due = s.next_due()
    assert due is not None and 3.7 <= due <= 4.3
    assert s.replan(relaxed=True) == 0 or (s.next_due() or 0) <= due


def test_scheduler_sample_is_bounded_and_follows_drift() -> None:
    s = PollScheduler(rng=random.Random(7))
    for _ in range(5 * SAMPLE_SIZE):
        s.observe("m", 10.0, exact=True)
    for _ in range(SAMPLE_SIZE):
        s.observe("m", 2.0, exact=True)
    assert s.estimate("m") == 2.0
    assert len(s._durations["m"]) == SAMPLE_SIZE


def test_scheduler_estimate_does_not_ratchet_up_on_detection_times() -> None:
    """Without server timestamps, callers report when a task was *noticed* (at a poll), never
    before its first poll. Tasks that really take 3 s must keep a first poll near 3 s."""
    rng = random.Random(6)
    s = PollScheduler(first=(2.0, 3.0), interval=(5.0, 10.0), rng=random.Random(7))
    for i in range(600):
        true = rng.uniform(2.5, 3.5)
        due = s.add(f"t{i}", "m", 0.0)
        while due < true:
            s.pop_due(due)
            due = s.reschedule(f"t{i}", due) or due
        s.observe("m", due, task_id=f"t{i}")
        s.remove(f"t{i}")
    first = s.first_delay("m")
    assert 2.5 <= first <= 5.0


async def test_budget_pressure_reflects_waiting_on_the_bucket() -> None:
    ft = FakeTime()
    budget = make_budget(ft, initial_rate=10.0, max_rate=10.0)
    assert not budget.pressured

    async def request() -> None:
        async with budget.slot(Priority.SUBMIT):
            pass

    await ft.run(*(request() for _ in range(30)))
    assert budget.pressured
    ft.now += 10.0
    assert not budget.pressured


def test_scheduler_under_pressure_scouts_an_unknown_model_with_a_few_tasks() -> None:
    s = PollScheduler(first=(2.0, 3.0), interval=(5.0, 10.0), rng=random.Random(8))
    delays = [s.first_delay("new") for _ in range(3 * SCOUTS)]
    assert all(2.0 <= d <= 3.0 for d in delays[:SCOUTS])
    # waiting for the estimate, long enough for a slow model's scouts to bring it
    assert all(33.0 <= d <= 63.0 for d in delays[SCOUTS:])


def test_scheduler_mixed_latencies_few_polls_per_task_for_every_model() -> None:
    """Models with medians 0.8 s, 3 s and 15 s submitted together while requests are scarce:
    each model's polls follow its own durations, the slow one's tasks wait for its scouts."""
    rng = random.Random(5)
    s = PollScheduler(rng=random.Random(6), pressured=lambda: True)
    medians = {"fast": 0.8, "mid": 3.0, "slow": 15.0}
    done_at: dict[str, float] = {}
    model_of: dict[str, str] = {}
    submitted: dict[str, float] = {}
    polls = dict.fromkeys(medians, 0)
    now, step, n = 0.0, 0.02, 0
    while n < 1500 or len(s):
        if n < 1500:  # 50 submits a second, the models in turn
            model = list(medians)[n % 3]
            task = f"t{n}"
            done_at[task] = now + medians[model] * math.exp(rng.gauss(0.0, 0.4))
            model_of[task] = model
            submitted[task] = now
            s.add(task, model, now)
            n += 1
        for task in s.pop_due(now):
            polls[model_of[task]] += 1
            if now >= done_at[task]:
                s.observe(model_of[task], done_at[task] - submitted[task], exact=True)
                s.remove(task)
            else:
                s.reschedule(task, now)
        now += step
    per_task = {m: polls[m] / 500 for m in medians}
    assert all(p <= 1.5 for p in per_task.values()), per_task
    assert per_task["slow"] >= 1.0


# -- pacing: small bucket, competing budgets, recovery ---------------------------------------


def rate_headers(server: TokenBucketServer) -> dict[str, str]:
    """The account bucket's headers, as the simulator sends them."""
    return {
        "X-RateLimit-Limit": str(int(server.burst)),
        "X-RateLimit-Remaining": str(int(server.tokens)),
    }


async def saturate(
    ft: FakeTime,
    budget: RequestBudget,
    server: TokenBucketServer,
    until: float,
    *,
    start: float = 0.0,
    headers: bool = True,
    senders: int = 32,
) -> None:
    """``senders`` senders with unbounded demand from ``start`` to ``until``, 10-20 ms round
    trips, every 429 carrying ``Retry-After: 1`` (whole seconds, as most services send)."""

    async def sender(i: int) -> None:
        await ft.sleep(start)
        rng = random.Random(i)
        while ft.now < until:
            async with budget.slot(Priority.POLL) as slot:
                await ft.sleep(0.01 + rng.random() * 0.01)
                ok = server.answer()
                budget.on_response(
                    200 if ok else 429,
                    rate_headers(server) if headers else {},
                    None if ok else 1.0,
                    started=slot.started,
                )

    await ft.run(*(sender(i) for i in range(senders)))


def accepted_between(server: TokenBucketServer, t0: float, t1: float) -> float:
    return sum(1 for t, ok in server.log if ok and t0 <= t < t1) / (t1 - t0)


@pytest.mark.parametrize("headers", [True, False])
async def test_small_bucket_is_used_fully_without_whole_second_pauses(headers: bool) -> None:
    # R = 100/s but the service's bucket holds only 10 tokens: a 1 s pause on each 429 would
    # lose that second's capacity; a 429 close to the limit only lowers the rate.
    ft = FakeTime()
    budget = make_budget(ft, initial_rate=100.0)
    server = TokenBucketServer(ft, rate=100.0, burst=10.0)
    await saturate(ft, budget, server, 40.0, headers=headers)
    assert budget.decreases >= 3
    assert accepted_between(server, 5.0, 40.0) >= 0.92 * 100.0
    total = server.accepted + server.refused
    assert server.refused / total <= 0.03


async def test_a_429_pauses_only_when_far_from_the_limit() -> None:
    ft = FakeTime()
    budget = make_budget(ft, initial_rate=100.0)
    for i in range(1, 101):  # the service took our 100/s for a second
        ft.now = i * 0.01
        budget.on_response(200, {}, started=ft.now - 0.01)
    budget.on_response(429, {}, 1.0, started=ft.now - 0.01)
    assert budget.decreases == 1
    assert budget.paused_until == -math.inf  # close to the limit: no whole-second pause
    for i in range(1, 4):  # then only 429s come back: the service refuses everything
        ft.now = 1.0 + i * 0.1
        budget.on_response(429, {}, 1.0, started=ft.now - 0.05)
    assert budget.decreases == 4
    assert budget.paused_until == pytest.approx(2.3)  # four in a row: honour Retry-After
    # a fresh budget with nothing accepted yet honours it at once (as before)
    fresh = make_budget(ft, initial_rate=100.0)
    fresh.on_response(429, {}, 1.0, started=1.2)
    assert fresh.paused_until == pytest.approx(2.3)


async def test_competing_budgets_on_one_account_converge_on_fair_shares(tmp_path: Path) -> None:
    # Four runs on one account (R = 100/s, 10-token bucket) starting 0.5 s apart.
    ft = FakeTime()
    server = TokenBucketServer(ft, rate=100.0, burst=10.0)
    budgets = [
        make_budget(ft, initial_rate=100.0, share=AccountShare(tmp_path, clock=ft.clock))
        for _ in range(4)
    ]
    counts: list[list[float]] = [[] for _ in range(4)]
    await ft.run(*(_run_with_log(ft, budgets[i], server, counts[i], 0.5 * i) for i in range(4)))
    shares = [sum(1 for t in c if t >= 10.0) / 30.0 for c in counts]
    assert sum(shares) >= 0.95 * 100.0  # the account's rate is used fully
    assert max(shares) <= 1.15 * min(shares), shares  # and fairly
    for b in budgets:
        b.close()
    assert not tmp_path.exists()


async def _run_with_log(
    ft: FakeTime, budget: RequestBudget, server: TokenBucketServer, log: list[float], start: float
) -> None:
    async def sender(i: int) -> None:
        await ft.sleep(start)
        rng = random.Random(i + int(start * 1000))
        while ft.now < 40.0:
            async with budget.slot(Priority.POLL) as slot:
                await ft.sleep(0.01 + rng.random() * 0.01)
                ok = server.answer()
                if ok:
                    log.append(ft.now)
                budget.on_response(
                    200 if ok else 429,
                    rate_headers(server),
                    None if ok else 1.0,
                    started=slot.started,
                )

    await asyncio.gather(*(sender(i) for i in range(32)))


async def test_recovery_reaches_80_percent_of_a_raised_limit_within_3_s() -> None:
    ft = FakeTime()
    budget = make_budget(ft, initial_rate=100.0)
    server = TokenBucketServer(ft, rate=30.0, burst=30.0)
    await saturate(ft, budget, server, 20.0)
    assert budget.rate < 45.0
    # the limit returns to 100/s; the account's bucket keeps what it holds
    server.rate, server.burst = 100.0, 100.0
    await saturate(ft, budget, server, 30.0, start=0.0)
    back = [t for t in range(200, 300) if accepted_between(server, t / 10, t / 10 + 1.0) >= 80.0]
    assert back and back[0] / 10 + 1.0 - 20.0 <= 3.0
