"""The retry policy, as a table: which failures are retried, and how long to wait."""

from __future__ import annotations

import random

import pytest

from batchgen.errors import ApiError, TransportError, api_error_class
from batchgen.rivya.retry import (
    DEFAULT_MAX_ATTEMPTS,
    RetryPolicy,
    retry_delay,
    should_retry,
)

POLICY = RetryPolicy()


def api(code: str, status: int) -> ApiError:
    return api_error_class(code, status)("x", status=status, code=code)


@pytest.mark.parametrize(
    ("exc", "attempt", "idempotent", "expected"),
    [
        # transient: retried while attempts remain, only when repeating is harmless
        (TransportError("dropped"), 1, True, True),
        (TransportError("dropped"), 1, False, False),
        (TransportError("dropped"), DEFAULT_MAX_ATTEMPTS - 1, True, True),
        (TransportError("dropped"), DEFAULT_MAX_ATTEMPTS, True, False),
        (api("internal_error", 500), 1, True, True),
        (api("internal_error", 500), 1, False, False),
        (api("http_502", 502), 2, True, True),
        (api("http_504", 504), 1, False, False),
        (api("something_new", 503), 1, True, True),
        # refusals before any effect: retried even without an idempotency key
        (api("rate_limited", 429), 1, False, True),
        (api("rate_limited", 429), DEFAULT_MAX_ATTEMPTS, True, False),
        (api("slow_down_please", 429), 1, True, True),
        (api("public_api_disabled", 503), 1, False, True),
        (api("public_api_disabled", 503), 9, True, True),
        (api("public_api_disabled", 503), 10, True, False),
        # per-row and run-wide errors: never
        (api("validation_failed", 400), 1, True, False),
        (api("not_found", 404), 1, True, False),
        (api("insufficient_credits", 402), 1, True, False),
        (api("insufficient_credits", 400), 1, True, False),
        (api("api_key_invalid", 401), 1, True, False),
        (api("api_key_missing", 401), 1, True, False),
        (api("api_key_revoked", 401), 1, True, False),
        (api("api_key_expired", 401), 1, True, False),
        (api("api_scope_denied", 403), 1, True, False),
        (api("something_new", 418), 1, True, False),
        (api("http_404", 404), 1, True, False),
        (api("validation_failed", 500), 1, True, False),
        # idempotency_conflict: genuine on a first attempt, possibly "still processing" on a replay
        (api("idempotency_conflict", 409), 1, True, False),
        (api("idempotency_conflict", 409), 2, True, True),
        (api("idempotency_conflict", 409), 4, True, True),
        (api("idempotency_conflict", 409), 5, True, False),
        (api("idempotency_conflict", 409), 2, False, False),
        # not ours
        (ValueError("bug"), 1, True, False),
    ],
)
def test_should_retry(exc: BaseException, attempt: int, idempotent: bool, expected: bool) -> None:
    assert should_retry(exc, attempt, idempotent=idempotent, policy=POLICY) is expected


def test_policy_none_never_retries() -> None:
    policy = RetryPolicy.none()
    for exc in (TransportError("x"), api("rate_limited", 429), api("public_api_disabled", 503)):
        assert not should_retry(exc, 1, idempotent=True, policy=policy)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "code", "low", "high"),
    [
        # full jitter under the exponential cap: base 0.5 doubling, capped at 30
        (1, None, None, 0.0, 0.5),
        (2, None, None, 0.0, 1.0),
        (3, None, "internal_error", 0.0, 2.0),
        (10, None, None, 0.0, 30.0),
        (500, None, None, 0.0, 30.0),
        # Retry-After wins, clamped to the cap, plus at most 10 % jitter
        (1, 3.0, "rate_limited", 3.0, 3.3),
        (5, 0.0, "rate_limited", 0.0, 0.0),
        (1, 10_000.0, None, 120.0, 132.0),
        # public_api_disabled: long, doubling, equal jitter
        (1, None, "public_api_disabled", 30.0, 60.0),
        (2, None, "public_api_disabled", 60.0, 120.0),
        (9, None, "public_api_disabled", 150.0, 300.0),
        # a replayed create meeting a conflict waits at least conflict_min_delay
        (2, None, "idempotency_conflict", 1.0, 1.0 + 1e-9),
        (4, None, "idempotency_conflict", 1.0, 4.0),
    ],
)
def test_retry_delay_bounds(
    attempt: int, retry_after: float | None, code: str | None, low: float, high: float
) -> None:
    rng = random.Random(7)
    delays = [
        retry_delay(attempt, retry_after, policy=POLICY, rng=rng, code=code) for _ in range(300)
    ]
    assert min(delays) >= low
    assert max(delays) <= high


def test_retry_delay_is_jittered_and_deterministic_with_a_seed() -> None:
    a = [retry_delay(3, None, policy=POLICY, rng=random.Random(1)) for _ in range(3)]
    b = [retry_delay(3, None, policy=POLICY, rng=random.Random(1)) for _ in range(3)]
    assert a == b
    rng = random.Random(2)
    spread = {round(retry_delay(3, None, policy=POLICY, rng=rng), 6) for _ in range(50)}
    assert len(spread) > 40


def test_custom_policy_caps() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0, retry_after_cap=5.0)
    rng = random.Random(3)
    assert max(retry_delay(8, None, policy=policy, rng=rng) for _ in range(200)) <= 4.0
    assert retry_delay(1, 60.0, policy=policy, rng=rng) <= 5.5
