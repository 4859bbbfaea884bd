"""When to poll each task in flight: :class:`PollScheduler`, one min-heap of next-poll times.

Never one sleeping coroutine per task. The first poll of a task lands on a *quantile* of the
completion times observed so far for its model (and parameters, if the caller puts them in the
key), from a bounded sample of recent durations:

* while requests are the scarce resource (the shared budget is rate-bound, see
  :attr:`batchgen.rivya.budget.RequestBudget.pressured`), a high quantile (``Q_PRESSURED``): nearly
  every task is done at its first poll, so a row costs about one submit and one poll;
* otherwise a middle one (``Q_RELAXED``): requests are free, latency is what counts.

A task not done at a poll is polled again at the next rung of a ladder of quantiles, each rung
leaving ``1 / LADDER`` of the previous rung's chance of missing; past the durations seen it
backs off geometrically with the task's age (``AGE_BACKOFF``) up to the longest interval.
Every delay carries a little jitter. Before ``MIN_SAMPLES`` durations are known, the
documented guidance applies: first poll 2–3 s after submit, then every 5–10 s; while requests
are scarce only the first ``SCOUTS`` tasks of a model are polled that early, the others wait
for the estimate (their first polls are re-placed when it comes; without one, they are polled
after about a minute). Each model has its own sample, so a job that mixes a 1 s model with a
15 s one polls each at its own quantiles. Polling every task of an
unknown model at 2–3 s costs extra polls, and the first durations learnt would be those of the
fastest tasks only.

Pure bookkeeping with an injectable RNG and an explicit ``now``: the tests are deterministic.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from typing import Any

DEFAULT_POLL_FIRST = (2.0, 3.0)
"""Seconds after submit of the first poll while nothing is known about the model (the docs)."""
DEFAULT_POLL_INTERVAL = (5.0, 10.0)
"""Seconds between later polls without an estimate (the docs); the ceiling of backed-off gaps."""
DEFAULT_FIRST_MIN = 0.25
"""A poll is never sooner than this many seconds after submit or after the previous poll."""
SAMPLE_SIZE = 256
"""Recent durations kept per model key (a ring): the estimate follows drift, memory is bounded."""
MIN_SAMPLES = 8
"""Durations needed before the quantiles replace the documented defaults."""
SCOUTS = MIN_SAMPLES
"""Tasks of a model without an estimate polled at the documented 2–3 s under pressure."""
SCOUT_WAIT_INTERVALS = 6.0
"""The other tasks wait for the scouts' estimate, and are polled anyway after the first-poll
time plus this many of the longest intervals (about a minute by default) if none comes. A
shorter wait polls the tasks of a slow model before it has any chance to be done, then again
on the documented ladder: 2 to 3 polls each instead of 1."""
RESORT_EVERY = 16
"""New durations between two sorts of the sample (quantiles are read from the sorted copy)."""
Q_PRESSURED = 0.95
"""First-poll quantile while the request budget is the bottleneck: few polls per task."""
Q_RELAXED = 0.6
"""First-poll quantile while requests are plentiful: low latency."""
LADDER = 4.0
"""Each later poll targets the quantile that leaves 1/LADDER of the previous chance of a miss."""
POLL_BACKOFF = 1.5
"""Growth of the gap between later polls without an estimate."""
AGE_BACKOFF = 1.4
"""A task older than the durations seen is polled again at about this many times its age."""
JITTER = 0.05
"""A poll time is the target give or take this fraction of the delay."""
NO_ESTIMATE_LIMIT = 3600.0
"""A first poll is never later than this many seconds, whatever the durations seen."""


class _Durations:
    """A ring of recent durations and a lazily sorted copy for quantiles."""

    __slots__ = ("_dirty", "_next", "_sorted", "ring")

    def __init__(self) -> None:
        self.ring: list[float] = []
        self._next = 0
        self._sorted: list[float] = []
        self._dirty = 0

    def __len__(self) -> int:
        return len(self.ring)

    def add(self, x: float) -> None:
        if len(self.ring) < SAMPLE_SIZE:
            self.ring.append(x)
        else:
            self.ring[self._next] = x
            self._next = (self._next + 1) % SAMPLE_SIZE
        self._dirty += 1

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile ``q`` in [0, 1] of the sample (which must not be empty)."""
        if self._dirty and (self._dirty >= RESORT_EVERY or len(self.ring) <= 4 * RESORT_EVERY):
            self._sorted = sorted(self.ring)
            self._dirty = 0
        s = self._sorted
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


class PollState:
    """What the scheduler knows of one task: its model key, submit time and polls so far.

    The engine's table of tasks in flight holds one per task (a subclass with the row's key and
    cost) and hands the table to the scheduler, so a task in flight has one record, not two.
    """

    __slots__ = ("due", "last_poll", "model_key", "polls", "seq", "submitted")

    def __init__(self, model_key: str, submitted: float) -> None:
        self.model_key = model_key
        self.submitted = submitted
        self.polls = 0
        self.seq = 0
        self.due = 0.0
        self.last_poll = submitted


class PollScheduler:
    """When to poll each task in flight: one min-heap of next-poll times.

    ``add`` schedules the first poll; ``pop_due(now)`` hands out the task ids whose time has
    come (they stay tracked but unscheduled until ``reschedule`` or ``remove``);
    ``reschedule(task_id, now)`` after a non-terminal answer; ``remove`` at a terminal one;
    ``observe(model_key, seconds, exact=True)`` teaches the durations: pass the task's own
    duration (``updated_at - created_at`` of a finished task) whenever the service gives it.
    ``pressured`` (a callable, settable) says whether requests are scarce right now.
    ``table``: the caller's table of tasks in flight (``task_id -> PollState``), shared rather
    than copied; ``remove`` then forgets the task in that table too.
    """

    def __init__(
        self,
        *,
        first: tuple[float, float] = DEFAULT_POLL_FIRST,
        interval: tuple[float, float] = DEFAULT_POLL_INTERVAL,
        first_min: float = DEFAULT_FIRST_MIN,
        rng: random.Random | None = None,
        pressured: Callable[[], bool] | None = None,
        table: dict[str, Any] | None = None,
    ) -> None:
        self.first = (min(first), max(first))
        self.interval = (min(interval), max(interval))
        # A user's shorter poll settings (tests, fast models) lower the floors too.
        self.first_floor = min(first_min, self.first[0])
        self.gap_floor = min(first_min, self.interval[0])
        self.pressured: Callable[[], bool] = pressured or (lambda: True)
        self._rng = rng or random.Random()
        self._heap: list[tuple[float, int, str]] = []
        # The tasks in flight, by id: the caller's table when given (its entries are PollState
        # records the caller created before ``add``), else the scheduler's own.
        self._tasks: dict[str, PollState] = table if table is not None else {}
        self._durations: dict[str, _Durations] = {}
        self._scouts: dict[str, int] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    # -- estimates -----------------------------------------------------------------------------

    def _sample(self, model_key: str) -> _Durations | None:
        d = self._durations.get(model_key)
        return d if d is not None and len(d) >= MIN_SAMPLES else None

    def first_quantile(self) -> float:
        """The quantile the first poll aims at, given the current pressure on requests."""
        return Q_PRESSURED if self.pressured() else Q_RELAXED

    def quantile(self, model_key: str, q: float) -> float | None:
        """Quantile ``q`` of the recent durations of ``model_key`` (None: too few known)."""
        d = self._sample(model_key)
        return None if d is None else d.quantile(q)

    def estimate(self, model_key: str) -> float | None:
        """The median seconds to done of ``model_key`` (None: too few observed)."""
        return self.quantile(model_key, 0.5)

    def _jitter(self, delay: float) -> float:
        return delay * (1.0 + self._rng.uniform(-JITTER, JITTER))

    def first_delay(self, model_key: str) -> float:
        """Seconds after submit of a task's first poll (with jitter)."""
        d = self._sample(model_key)
        if d is None:
            scouts = self._scouts.get(model_key, 0)
            if scouts < SCOUTS or not self.pressured():
                self._scouts[model_key] = scouts + 1
                return self._rng.uniform(*self.first)
            # Wait for the scouts: replan() moves this poll when the estimate is known.
            return self.first[1] + SCOUT_WAIT_INTERVALS * self._rng.uniform(*self.interval)
        delay = self._jitter(d.quantile(self.first_quantile()))
        return min(max(delay, self.first_floor), NO_ESTIMATE_LIMIT)

    def _next_delay(self, tracked: PollState, now: float) -> float:
        """Seconds from ``now`` to the next poll of a task found still running."""
        low, high = self.interval
        d = self._sample(tracked.model_key)
        if d is None:
            base = min(high, low * POLL_BACKOFF ** max(0, tracked.polls - 1))
            delay = self._rng.uniform(base, base + (high - low) * 0.25 + 1e-9)
            return max(self.gap_floor, min(high, delay))
        age = now - tracked.submitted
        miss = (1.0 - self.first_quantile()) / LADDER**tracked.polls
        target = d.quantile(1.0 - miss) if miss * len(d) >= 1.0 else -math.inf
        if target - age >= self.gap_floor:
            return self._jitter(target - age)
        # Beyond what the sample can say: a gap in proportion to the task's age, so the polls
        # of a straggler back off geometrically (each poll at about AGE_BACKOFF times its age).
        gap = max(self.gap_floor, (AGE_BACKOFF - 1.0) * age)
        return max(self.gap_floor, min(high, self._jitter(gap)))

    def observe(
        self,
        model_key: str,
        seconds_to_done: float,
        *,
        exact: bool = False,
        task_id: str | None = None,
    ) -> None:
        """Record how long a task of ``model_key`` took from submit to a terminal status.

        ``exact=True``: the task's real duration (:attr:`batchgen.rivya.client.Task.seconds_to_done`,
        server clock). Otherwise it is the time the task was *noticed* done, an upper bound; with
        ``task_id`` the scheduler knows the task's polls: noticed at the first poll, all that is
        known is "done by then", so it counts as no more than the current median; noticed later,
        it counts as the middle of the last two polls (else the sample would ratchet upward with
        the poll times themselves).
        """
        if seconds_to_done < 0 or math.isnan(seconds_to_done):
            return
        d = self._durations.get(model_key)
        if d is None:
            d = self._durations[model_key] = _Durations()
        if not exact and task_id is not None:
            tracked = self._tasks.get(task_id)
            if tracked is not None and tracked.polls == 0 and len(d) >= MIN_SAMPLES:
                seconds_to_done = min(seconds_to_done, d.quantile(0.5))
            elif tracked is not None and tracked.polls > 0:
                previous = tracked.last_poll - tracked.submitted
                seconds_to_done = min(seconds_to_done, (previous + seconds_to_done) / 2.0)
        d.add(seconds_to_done)
        if len(d) == MIN_SAMPLES:
            # The first estimate of this model: tasks still waiting for a first poll placed by
            # the documented defaults get one placed by the estimate instead.
            self.replan(model_key=model_key)

    def replan(self, *, model_key: str | None = None, relaxed: bool = False) -> int:
        """Re-place the first poll of every task not polled yet (of ``model_key``, or all).

        ``relaxed``: aim at ``Q_RELAXED`` (e.g. nothing is left to submit, so requests are about
        to become plentiful); a poll only ever moves earlier then. Returns the tasks moved.
        """
        moved = 0
        for task_id, t in self._tasks.items():
            if t.polls or not t.seq or (model_key is not None and t.model_key != model_key):
                continue
            d = self._sample(t.model_key)
            if d is None:
                continue
            q = Q_RELAXED if relaxed else self.first_quantile()
            due = t.submitted + min(
                max(self._jitter(d.quantile(q)), self.first_floor), NO_ESTIMATE_LIMIT
            )
            if relaxed and due >= t.due:
                continue
            self._push(task_id, t, due)
            moved += 1
        return moved

    # -- the heap ------------------------------------------------------------------------------

    def add(
        self, task_id: str, model_key: str, submitted_at: float, *, due: float | None = None
    ) -> float:
        """Track a task submitted at ``submitted_at``; returns the time of its first poll
        (``due`` when given, e.g. at once for a task resumed from an earlier run)."""
        tracked = self._tasks.get(task_id)
        if tracked is None:
            tracked = self._tasks[task_id] = PollState(model_key, submitted_at)
        tracked.model_key = model_key
        tracked.submitted = submitted_at
        tracked.polls = 0
        if due is None:
            due = submitted_at + self.first_delay(model_key)
        self._push(task_id, tracked, due)
        return due

    def reschedule(self, task_id: str, now: float) -> float | None:
        """Schedule the next poll of a polled, still running task; returns its time."""
        tracked = self._tasks.get(task_id)
        if tracked is None:
            return None
        tracked.polls += 1
        tracked.last_poll = now
        due = now + self._next_delay(tracked, now)
        self._push(task_id, tracked, due)
        return due

    def remove(self, task_id: str) -> None:
        """Forget a task (terminal, or given up); its heap entry is dropped lazily."""
        self._tasks.pop(task_id, None)

    def next_due(self) -> float | None:
        """The earliest scheduled poll time, or None when nothing is scheduled."""
        heap = self._heap
        while heap:
            due, seq, task_id = heap[0]
            tracked = self._tasks.get(task_id)
            if tracked is not None and tracked.seq == seq:
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float, limit: int | None = None) -> list[str]:
        """Task ids whose poll time is ``<= now``, earliest first (at most ``limit``)."""
        heap = self._heap
        out: list[str] = []
        while heap and heap[0][0] <= now:
            if limit is not None and len(out) >= limit:
                break
            _due, seq, task_id = heapq.heappop(heap)
            tracked = self._tasks.get(task_id)
            if tracked is not None and tracked.seq == seq:
                tracked.seq = 0  # unscheduled until rescheduled
                out.append(task_id)
        return out

    def _push(self, task_id: str, tracked: PollState, due: float) -> None:
        self._seq += 1
        tracked.seq = self._seq
        tracked.due = due
        heapq.heappush(self._heap, (due, self._seq, task_id))
