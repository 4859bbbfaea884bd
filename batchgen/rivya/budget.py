"""Flow control shared by every request: :class:`RequestBudget` and :class:`PollScheduler`.

The service rate-limits the *account*, not the endpoint, so uploads, submits and polls all draw
from one :class:`RequestBudget`:

* a concurrency cap (``max_in_flight``), asserted by measurement in the tests;
* a token bucket whose rate is *discovered*, with no user tuning:

  - it starts optimistic (``initial_rate``); with ``trust_limit_header=True`` it starts at
    ``X-RateLimit-Limit`` the first time a successful answer carries it. Off by default: the
    header's unit is undocumented (the simulator sends its bucket size, other services a count
    per minute or hour), and a wrong start costs more than the 429s it would save;
  - before the first 429 it grows exponentially ("slow start": it doubles every
    ``slow_start_doubling`` seconds during which senders actually waited for tokens);
  - requests leave evenly spaced at the current rate (the bucket holds ``BURST_SECONDS`` of
    tokens), so a service whose own bucket is small is never overrun by a burst;
  - on a 429 it drops multiplicatively to ``beta`` times its own rate, or times the rate the
    service was measured accepting if that is lower (once per round trip: 429s for requests
    sent before the last decrease are not counted again) and empties the bucket. ``Retry-After``
    (or ``X-RateLimit-Reset``) is information, not always a stop: it comes in whole seconds,
    far longer than a small overshoot needs. When the service took at least ``CLOSE_SHARE``
    of our rate lately and fewer than ``CLOSE_STRIKES`` answers in a row were 429s, the
    decrease alone answers it; otherwise (slow start overshot, the service refuses everything)
    *every* sender pauses until then;
  - with no 429s it probes upward along a cubic curve (as TCP CUBIC does): fast while far below
    the rate where the last 429 happened, flat near it, then accelerating beyond it, on a clock
    of round trips (``RECOVERY_RTTS``, at least ``RECOVERY_REQUESTS`` requests' worth). Growth
    only accrues while senders are waiting on the bucket, so an idle or concurrency-bound client
    never inflates its rate;
  - an accepted answer whose ``X-RateLimit-Remaining`` is at least ``HEADROOM_SHARE`` of
    ``X-RateLimit-Limit`` says the account's bucket is filling, so the account has rate to
    spare: the rate then doubles every ``PROBE_DOUBLING_RTTS`` round trips (beyond the rate of
    the last 429 only while that lasts ``HEADROOM_PERSIST_RTTS``): a limit that rises is found
    again within a few seconds;
  - several runs on one account converge on fair shares as competing TCP flows do, and runs
    on one machine also share what they get through an :class:`~batchgen.rivya.share.AccountShare`
    (a small folder keyed by the account): a run above the fair share eases down, one below
    it rises;
  - ``max_rate`` is an optional hard ceiling.

  The aim is to run near the account's limit with only a few percent of requests answered 429.
  :attr:`RequestBudget.pressured` says whether senders waited on the bucket lately: the poll
  scheduler spends fewer polls per task while requests are the scarce resource.
* priorities: when requests wait, polls go before submits before uploads (one heap of waiters);
* a retry budget (as in gRPC / Finagle): each request deposits ``retry_ratio`` of a token, each
  retry of a failed request (5xx, transport error) withdraws one, plus a small floor of
  ``retry_floor_rate`` tokens per second; a retry waits for a token, so a failing service sees a
  bounded trickle of retries, not a storm.

:class:`~batchgen.pipeline.polling.PollScheduler` decides when to poll each task.

Clock and sleep are injectable so the tests are deterministic and never assert wall-clock timing.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import IntEnum
from types import TracebackType
from typing import Any

from batchgen.rivya.share import AccountShare

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]

DEFAULT_MAX_IN_FLIGHT = 32
DEFAULT_INITIAL_RATE = 100.0
"""Requests per second before anything is known: optimistic; slow start grows it quickly."""
DEFAULT_MIN_RATE = 0.2
BETA = 0.7
"""Multiplicative decrease on a 429 (TCP CUBIC's value)."""
RECOVERY_RTTS = 30.0
"""Round trips (of rate-limited time) the cubic probe takes at least to climb back to the rate
of the last 429: recovery runs on a clock of round trips, not seconds..."""
RECOVERY_REQUESTS = 120.0
"""...and lasts at least this many requests' worth of time, so the 429s of each probe stay a
small fraction of the requests."""
DEFAULT_RTT = 0.05
"""Seconds of a round trip before one is measured."""
RTT_GAIN = 0.125
"""Weight of a new round-trip sample in the smoothed round trip (as TCP's SRTT)."""
HEADROOM_SHARE = 0.5
"""An accepted answer whose ``X-RateLimit-Remaining`` is at least this share of
``X-RateLimit-Limit`` says the account's bucket is filling: the account is below its limit."""
HEADROOM_RTTS = 4.0
"""Headroom seen within this many round trips (at least ``HEADROOM_MEMORY`` s) still counts."""
HEADROOM_MEMORY = 0.25
PROBE_DOUBLING_RTTS = 8.0
"""With headroom, the rate doubles every this many round trips of rate-limited time..."""
PROBE_MIN_DOUBLING = 0.25
"""...but no faster than once per this many seconds."""
CLOSE_SHARE = 0.5
"""A 429 comes "close to the limit" when the service accepted at least this share of our rate
over the last window, and fewer than ``CLOSE_STRIKES`` answers in a row were 429s: then it is a
small overshoot (or another client on the account took the last token), and the decrease alone
answers it, without a ``Retry-After`` pause."""
CLOSE_STRIKES = 4
SLOW_START_DOUBLING = 0.25
"""Rate-limited seconds per doubling of the rate before the first 429."""
BURST_SECONDS = 0.05
"""The bucket holds this many seconds' worth of tokens (at least one token)."""
RATE_WINDOW = 1.0
"""Seconds of the sliding window that measures the accepted request rate (at least)..."""
WINDOW_EVENTS = 10.0
"""...or as long as it takes to see about this many answers at the current rate..."""
MAX_RATE_WINDOW = 30.0
"""...but never longer than this."""
HEADROOM_PERSIST_RTTS = 10.0
"""Beyond the rate of the last 429, fast growth needs headroom seen without a break for this
many round trips (at least ``HEADROOM_PERSIST`` s): a limit that rose, not a bucket refilling
after the last decrease."""
HEADROOM_PERSIST = 0.5
FAIR_CUT = 1.1
"""With an :class:`~batchgen.rivya.share.AccountShare`: a run that gets more than this many times the
fair share of the account eases its rate down (by ``FAIR_EASE`` per sync at most)..."""
FAIR_EASE = 0.9
FAIR_SLACK = 1.03
"""...to about this many times it; one that gets less than the fair share divided by this
raises its rate (by ``FAIR_RAISE`` per sync at most)."""
FAIR_RAISE = 1.1
PAUSE_CAP = 120.0
"""A Retry-After / X-RateLimit-Reset pause is clamped to this many seconds."""
EPOCH_THRESHOLD = 1e9
"""An X-RateLimit-Reset above this is an epoch time, below it a number of seconds."""
DEFAULT_RETRY_RATIO = 0.2
DEFAULT_RETRY_FLOOR_RATE = 2.0
DEFAULT_RETRY_CAP = 20.0
PRESSURE_MEMORY = 2.0
"""Seconds after the last wait on the bucket during which the budget counts as rate-bound."""
_ONE = 1.0 - 1e-9  # a token, give or take float rounding (else a 1e-17 s sleep never ends)


__all__ = ["Priority", "RequestBudget", "Slot"]


class Priority(IntEnum):
    """Order in which waiting requests are let through (lowest value first)."""

    POLL = 0
    SUBMIT = 1
    UPLOAD = 2
    OTHER = 3


class _Waiter:
    __slots__ = ("fut", "key")

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key
        self.fut: asyncio.Future[None] | None = None

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class Slot:
    """One permission to send a request; ``async with budget.slot(priority) as slot``.

    ``slot.started`` (the budget's clock when it was granted) may be passed back to
    :meth:`RequestBudget.on_response` so one burst of 429s counts as one congestion event.
    """

    __slots__ = ("_budget", "_priority", "started")

    def __init__(self, budget: RequestBudget, priority: int) -> None:
        self._budget = budget
        self._priority = priority
        self.started = 0.0

    async def __aenter__(self) -> Slot:
        self.started = await self._budget._acquire(self._priority)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._budget._release()


class RequestBudget:
    """One adaptive request budget shared by every request (see the module docstring)."""

    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_rate: float | None = None,
        initial_rate: float = DEFAULT_INITIAL_RATE,
        min_rate: float = DEFAULT_MIN_RATE,
        beta: float = BETA,
        recovery_rtts: float = RECOVERY_RTTS,
        slow_start_doubling: float = SLOW_START_DOUBLING,
        retry_ratio: float = DEFAULT_RETRY_RATIO,
        retry_floor_rate: float = DEFAULT_RETRY_FLOOR_RATE,
        retry_cap: float = DEFAULT_RETRY_CAP,
        trust_limit_header: bool = False,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
        share: AccountShare | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if max_rate is not None and max_rate <= 0:
            max_rate = None
        self.max_in_flight = max_in_flight
        self.max_rate = max_rate
        self.min_rate = min_rate
        self._beta = beta
        self._recovery_rtts = recovery_rtts
        self._srtt = DEFAULT_RTT
        self._k = self._recovery_k(max(initial_rate, min_rate))
        self._cubic_c = (1.0 - beta) / self._k**3
        self._doubling = slow_start_doubling
        self._clock = clock
        self._sleep = sleep
        self._wall = wall_clock
        now = clock()
        self._rate = self._clamp(initial_rate)
        self._tokens = max(1.0, self._rate * BURST_SECONDS)  # a full bucket
        self._refilled = now
        self._paused_until = -math.inf
        self._waiters: list[_Waiter] = []
        self._seq = 0
        self._rate_waited_at = -math.inf
        self.in_flight = 0
        self.max_in_flight_seen = 0
        # rate discovery
        self._slow_start = True
        self._trust_limit = trust_limit_header
        self._limit_seen = False
        self._w_max = self._rate
        self._grow_time = 0.0  # rate-limited seconds since the last decrease
        self._last_decrease = -math.inf
        self._strikes = 0  # 429s in a row since the last accepted answer
        self._headroom_at = -math.inf  # last accepted answer showing a filling account bucket
        self._headroom_since = math.inf  # start of the current run of such answers
        # accepted (non-429) responses in a sliding window
        self._win_start = -math.inf
        self._win_len = RATE_WINDOW
        self._win_count = 0
        self._prev_count = 0
        self._prev_len = 0.0
        # counters
        self.granted = 0
        self.responses = 0
        self.throttled = 0
        self.decreases = 0
        self._share = share
        # retry budget
        self._retry_ratio = retry_ratio
        self._retry_floor = retry_floor_rate
        self._retry_cap = retry_cap
        self._retry_tokens = retry_cap / 2.0
        self._retry_refilled = now

    # -- public ------------------------------------------------------------------------------

    def slot(self, priority: int = Priority.OTHER) -> Slot:
        """An async context manager holding one request slot of ``priority`` while inside."""
        return Slot(self, int(priority))

    @property
    def rate(self) -> float:
        """The current request rate (requests per second) the bucket lets through."""
        return self._rate

    @property
    def paused_until(self) -> float:
        """Budget-clock time before which no request is let through (0 when not paused)."""
        return self._paused_until

    @property
    def pressured(self) -> bool:
        """True while requests are the scarce resource: a sender waited on the bucket (or a
        Retry-After pause) within the last ``PRESSURE_MEMORY`` seconds."""
        return self._clock() - self._rate_waited_at < PRESSURE_MEMORY

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    def on_response(
        self,
        status: int | None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        *,
        started: float | None = None,
    ) -> None:
        """Report the outcome of one request (``status`` None: no answer, a transport error).

        ``retry_after`` is the parsed ``Retry-After`` in seconds; ``started`` is the
        :attr:`Slot.started` of the request, used to count one burst of 429s once.
        """
        self.responses += 1
        now = self._clock()
        if started is not None and status is not None and now >= started:
            self._srtt += RTT_GAIN * (now - started - self._srtt)
        if status != 429:
            if status is None:
                return
            if self._trust_limit and not self._limit_seen and headers is not None:
                self._first_limit(headers)
            # X-RateLimit-Remaining is information about the rate, never a stop: answers arrive
            # out of order, and zeroing the bucket on every "0" starves a sender that runs
            # right at the limit. A bucket that fills says the account has rate to spare.
            if headers is not None:
                self._note_headroom(headers, now)
            self._count_accepted(now)
            self._strikes = 0
            if self._share is not None and self._share.due():
                self._sync_share(now)
            return
        self.throttled += 1
        self._headroom_at, self._headroom_since = -math.inf, math.inf
        prev_pause = self._paused_until
        new_event = not (
            (started is not None and started < self._last_decrease)
            or (started is None and now - self._last_decrease < 1.0 / self._rate)
        )
        self._strikes += 1
        # Close to the limit: the service took about our rate until now, and not only 429s
        # came back lately. Retry-After comes in whole seconds, a far longer wait than a small
        # overshoot needs: the decrease answers it, and our bucket is emptied. Far from it
        # (slow start overshot, or the service refuses everything): honour the pause.
        close = (
            self._strikes < CLOSE_STRIKES and self._accepted_rate(now) >= CLOSE_SHARE * self._rate
        )
        if not close:
            pause = retry_after
            if pause is None and headers is not None:
                pause = self._reset_seconds(headers.get("X-RateLimit-Reset"))
            if pause is not None and pause > 0:
                self._paused_until = max(self._paused_until, now + min(pause, PAUSE_CAP))
        self._refill(now)
        self._tokens = min(self._tokens, 0.0)
        if not new_event:
            return  # sent before the last decrease: same congestion event
        # Decrease from the rate the service was accepting when that is below our own setting
        # (slow start can overshoot the limit many times over before the first 429 comes back).
        # A pause inside the measuring window makes that measure too low when the service's
        # burst is small: then it may pull the rate down by one more factor beta, no further.
        base = self._rate
        accepted = self._accepted_rate(now)
        if now - prev_pause < self._win_len:
            accepted = max(accepted, base * self._beta)
        if 0.0 < accepted < base:
            base = accepted
        self._w_max = max(base, self.min_rate)
        self._rate = self._clamp(base * self._beta)
        self._k = self._recovery_k(self._w_max)
        self._cubic_c = (1.0 - self._beta) / self._k**3
        self._slow_start = False
        self._grow_time = 0.0
        self._last_decrease = now
        self.decreases += 1

    async def retry_permit(self) -> None:
        """Wait for a token of the retry budget (call before retrying a 5xx/transport error)."""
        while True:
            now = self._clock()
            self._refill_retry(now)
            if self._retry_tokens >= 1.0:
                self._retry_tokens -= 1.0
                return
            await self._sleep((1.0 - self._retry_tokens) / max(self._retry_floor, 1e-3))

    def retry_available(self) -> float:
        """Retry tokens available now (for status displays and tests)."""
        self._refill_retry(self._clock())
        return self._retry_tokens

    # -- slot machinery ----------------------------------------------------------------------

    async def _acquire(self, priority: int) -> float:
        if not self._waiters and self.in_flight < self.max_in_flight:
            now = self._clock()
            if now >= self._paused_until:
                self._refill(now)
                if self._tokens >= _ONE:
                    return self._grant(now)
        self._seq += 1
        waiter = _Waiter((priority, self._seq))
        heapq.heappush(self._waiters, waiter)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._waiters[0] is waiter and self.in_flight < self.max_in_flight:
                    # The head of the queue with a free slot: it alone waits for the bucket.
                    now = self._clock()
                    if now < self._paused_until:
                        self._rate_waited_at = now
                        await self._sleep(self._paused_until - now)
                        continue
                    self._refill(now)
                    if self._tokens >= _ONE:
                        heapq.heappop(self._waiters)
                        started = self._grant(now)
                        self._wake_head()
                        return started
                    # Waiting on the bucket means the rate is the bottleneck: only this time
                    # counts as growth time, so an idle or concurrency-bound client never
                    # inflates its rate.
                    wait = (1.0 - self._tokens) / self._rate
                    self._rate_waited_at = now
                    await self._sleep(wait)
                    self._grow(min(max(self._clock() - now, 0.0), wait))
                else:
                    waiter.fut = loop.create_future()
                    await waiter.fut
                    waiter.fut = None
        except BaseException:
            if waiter in self._waiters:
                was_head = self._waiters[0] is waiter
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
                if was_head:
                    self._wake_head()
            raise

    def _grant(self, now: float) -> float:
        self._tokens -= 1.0
        self.in_flight += 1
        self.granted += 1
        if self.in_flight > self.max_in_flight_seen:
            self.max_in_flight_seen = self.in_flight
        self._deposit_retry()
        return now

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake_head()

    def _wake_head(self) -> None:
        if self._waiters:
            fut = self._waiters[0].fut
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _refill(self, now: float) -> None:
        dt = now - self._refilled
        if dt > 0.0:
            self._refilled = now
            burst = max(1.0, self._rate * BURST_SECONDS)
            tokens = self._tokens + dt * self._rate
            self._tokens = tokens if tokens < burst else burst

    def close(self) -> None:
        """Leave the account's share, if any (the run is over)."""
        if self._share is not None:
            self._share.close()

    def _sync_share(self, now: float) -> None:
        assert self._share is not None
        mine = self._accepted_rate(now)
        fair = self._share.sync(mine, self.pressured)
        if fair is None or mine <= 0.0:
            return
        # Accepted rates are compared with accepted rates (our own setting may run ahead of
        # what we manage to send): above our share of what the rate-bound runs on this account
        # get together, ease down; below it, rise. The 429s still set the total.
        if mine > FAIR_CUT * fair:
            self._rate = self._clamp(self._rate * max(FAIR_EASE, FAIR_SLACK * fair / mine))
            self._w_max = min(self._w_max, self._rate)
        elif mine * FAIR_SLACK < fair:
            self._rate = self._clamp(self._rate * min(FAIR_RAISE, fair / mine))
            self._w_max = max(self._w_max, self._rate)

    def _recovery_k(self, w_max: float) -> float:
        """Rate-limited seconds of the cubic climb back to ``w_max``: a number of round trips,
        and at least ``RECOVERY_REQUESTS`` requests' worth of time."""
        return max(self._recovery_rtts * self._srtt, RECOVERY_REQUESTS / max(w_max, 1e-9))

    def _grow(self, dt: float) -> None:
        if dt <= 0.0 or (self.max_rate is not None and self._rate >= self.max_rate):
            return
        if self._slow_start:
            self._rate = self._clamp(self._rate * 2.0 ** (dt / self._doubling))
            return
        now = self._clock()
        if now - self._headroom_at <= max(HEADROOM_MEMORY, HEADROOM_RTTS * self._srtt) and (
            self._rate < self._w_max
            or now - self._headroom_since
            >= max(HEADROOM_PERSIST, HEADROOM_PERSIST_RTTS * self._srtt)
        ):
            # The account's bucket fills while we wait on ours: the limit is above our rate.
            # Double on a clock of round trips; beyond the rate of the last 429 only while the
            # headroom persists, and the cubic resumes from there, flat at first.
            doubling = max(PROBE_MIN_DOUBLING, PROBE_DOUBLING_RTTS * self._srtt)
            self._rate = self._clamp(self._rate * 2.0 ** (dt / doubling))
            if self._rate > self._w_max:
                self._w_max = self._rate
                self._grow_time = self._k
            return
        # Relative CUBIC: beta * w_max right after the decrease, w_max again after
        # ``recovery_seconds`` of growth time, then accelerating beyond it.
        self._grow_time += dt
        t = self._grow_time - self._k
        target = self._w_max * (1.0 + self._cubic_c * t * t * t)
        if target > self._rate:
            self._rate = self._clamp(target)

    def _clamp(self, rate: float) -> float:
        if self.max_rate is not None and rate > self.max_rate:
            rate = self.max_rate
        return max(rate, self.min_rate)

    # -- measurement and headers -------------------------------------------------------------

    def _count_accepted(self, now: float) -> None:
        elapsed = now - self._win_start
        if elapsed >= self._win_len:
            if elapsed < 2 * self._win_len:
                self._prev_count, self._prev_len = self._win_count, self._win_len
                self._win_start += self._win_len
            else:  # the first response, or after a silence: start afresh
                self._prev_count, self._prev_len = 0, 0.0
                self._win_start = now
            self._win_count = 0
            # At low rates a one-second window holds too few answers to measure anything.
            self._win_len = min(MAX_RATE_WINDOW, max(RATE_WINDOW, WINDOW_EVENTS / self._rate))
        self._win_count += 1

    def _accepted_rate(self, now: float) -> float:
        """Accepted (non-429) responses per second over about the last window."""
        elapsed = now - self._win_start
        if elapsed > self._win_len:
            return self._win_count / elapsed
        # sliding window: the current window plus the unexpired part of the previous one
        keep = 1.0 - elapsed / self._win_len
        covered = self._prev_len * keep + elapsed
        return (self._prev_count * keep + self._win_count) / max(covered, 0.05 * RATE_WINDOW)

    def _first_limit(self, headers: Mapping[str, str]) -> None:
        raw = headers.get("X-RateLimit-Limit")
        if raw is None:
            return
        self._limit_seen = True
        try:
            limit = float(raw.split(",")[0].split(";")[0])
        except ValueError:
            return
        if limit > 0 and self.decreases == 0:
            # A starting point only, taken from a successful answer before any 429: whether it
            # counts per second, per window or the burst is not documented, and the 429s correct
            # it either way. On a 429 it is ignored: the rate the service was accepting is a
            # better measure than a number of unknown unit.
            self._rate = self._clamp(limit)
            self._w_max = self._rate

    def _note_headroom(self, headers: Mapping[str, str], now: float) -> None:
        limit = _first_number(headers.get("X-RateLimit-Limit"))
        remaining = _first_number(headers.get("X-RateLimit-Remaining"))
        if limit is None or remaining is None or limit < 2:
            return
        if remaining >= HEADROOM_SHARE * limit:
            self._headroom_at = now
            if self._headroom_since == math.inf:
                self._headroom_since = now
        else:
            self._headroom_since = math.inf

    def _reset_seconds(self, raw: str | None) -> float | None:
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        if value > EPOCH_THRESHOLD:
            value -= self._wall()
        return value if value > 0 else None

    # -- retry budget ------------------------------------------------------------------------

    def _deposit_retry(self) -> None:
        tokens = self._retry_tokens + self._retry_ratio
        self._retry_tokens = tokens if tokens < self._retry_cap else self._retry_cap

    def _refill_retry(self, now: float) -> None:
        dt = now - self._retry_refilled
        if dt > 0:
            self._retry_refilled = now
            self._retry_tokens = min(self._retry_cap, self._retry_tokens + dt * self._retry_floor)


def _first_number(raw: str | None) -> float | None:
    """The first number of a rate-limit header (``"100"``, ``"100, 100;w=60"``), or None."""
    if raw is None:
        return None
    try:
        return float(raw.split(",")[0].split(";")[0])
    except ValueError:
        return None
