"""Seeded randomness of the simulator: latencies, task outcomes, injected faults, rate limit."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from batchgen.sim.state import SimConfig


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one token-bucket check."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until one token is available (0 when allowed)


class TokenBucket:
    """One account's bucket: ``rate`` tokens per second, at most ``burst``; a request costs 1."""

    __slots__ = ("_last", "_tokens", "burst", "clock", "rate")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def retune(self, rate: float, burst: int) -> None:
        """A new limit from now on: the tokens held so far stay (up to the new size), as a
        service changing its limit does not hand out a fresh full bucket."""
        self._refill()
        self.rate, self.burst = rate, burst
        self._tokens = min(self._tokens, float(burst))

    def _refill(self) -> None:
        now = self.clock()
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)

    def take(self) -> RateDecision:
        """Spend one token if there is one."""
        self._refill()
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        missing = self.burst - self._tokens
        reset = math.ceil(missing / self.rate) if missing > 1e-9 else 0
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - self._tokens) / self.rate))
        return RateDecision(allowed, self.burst, int(self._tokens), reset, retry_after)


class RateLimiter:
    """Token buckets per account, built lazily from the (runtime-changeable) config."""

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, account_id: str) -> RateDecision | None:
        """Spend one token of the account's bucket; None when rate limiting is off."""
        rate = self.config.rate
        if rate is None or rate <= 0:
            return None
        burst = self.config.burst or max(1, math.ceil(rate))
        bucket = self._buckets.get(account_id)
        if bucket is None:
            bucket = self._buckets[account_id] = TokenBucket(rate, burst, self.clock)
        elif bucket.rate != rate or bucket.burst != burst:
            bucket.retune(rate, burst)
        return bucket.take()


class Faults:
    """Every random decision of the simulator, from one seeded RNG."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)

    def hit(self, probability: float) -> bool:
        """True with ``probability`` (never draws when it is 0, keeping runs comparable)."""
        return probability > 0 and (probability >= 1 or self.rng.random() < probability)

    def lognormal(self, median: float) -> float:
        """A log-normal duration with the given median (0 stays 0)."""
        if median <= 0:
            return 0.0
        sigma = self.config.latency_sigma
        if sigma <= 0:
            return median
        return median * math.exp(self.rng.gauss(0.0, sigma))

    def task_timing(self, model: str | None = None) -> tuple[float, float, str, bool]:
        """``(queue seconds, processing seconds, outcome, stuck)`` of a new task of ``model``
        (its median from ``latency_by_model``, else ``latency``)."""
        cfg = self.config
        queue_s = self.lognormal(cfg.queue_time)
        run_s = self.lognormal((cfg.latency_by_model or {}).get(model or "", cfg.latency))
        outcome = "failed" if self.hit(cfg.failure_rate) else "succeeded"
        return queue_s, run_s, outcome, self.hit(cfg.stuck_rate)

    def before_effect(self) -> str | None:
        """A fault replacing the request before it has any effect, or None.

        ``"drop"`` (connection dropped), ``"internal_error"`` (500 JSON) or ``"html_502"``.
        """
        cfg = self.config
        if self.hit(cfg.drop_rate):
            return "drop"
        if self.hit(cfg.error_rate):
            return "internal_error"
        if self.hit(cfg.html_error_rate):
            return "html_502"
        return None

    def drop_after(self) -> bool:
        """Drop the connection after the effect (task created / file stored)."""
        return self.hit(self.config.drop_after_rate)

    def slow(self) -> float:
        """Seconds to delay this request (0 most of the time)."""
        return self.config.slow_seconds if self.hit(self.config.slow_rate) else 0.0

    def token(self, nbytes: int = 12) -> str:
        """A deterministic (for a seed) random hex id."""
        return f"{self.rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"
