"""Retry policy: pure functions and named constants, no I/O.

``attempt`` is always the 1-based number of the attempt that just failed: after the first try
failed, ``attempt == 1``. The client calls :func:`should_retry` with the error it got and, when
that says yes, sleeps :func:`retry_delay` seconds before trying again.

What is retried, and why:

* ``rate_limited`` / any 429, ``auth`` never: a 429 is a refusal before any effect, so it is safe
  to repeat even a create that has no Idempotency-Key.
* ``public_api_disabled``: the API is switched off; also a refusal before any effect, retried with
  a long backoff (``disabled_delay``) for up to ``disabled_max_attempts`` attempts.
* other 5xx and transport errors: the request may or may not have taken effect, so they are
  retried only when repeating it is harmless (``idempotent``: every GET, an upload, a create
  that carries an Idempotency-Key).
* ``idempotency_conflict`` on a *retry* of a create (see :func:`should_retry`).
* everything else (validation, auth, not_found, insufficient_credits, unknown 4xx codes): never.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from batchgen.errors import ApiError, TransportError

DEFAULT_MAX_ATTEMPTS = 6
"""Attempts in all (the first one included) for transient errors."""
DEFAULT_BASE_DELAY = 0.5
"""Seconds: the backoff cap after the first failure; it doubles per attempt."""
DEFAULT_MAX_DELAY = 30.0
"""Seconds: the exponential backoff never exceeds this."""
DEFAULT_RETRY_AFTER_CAP = 120.0
"""Seconds: a server's Retry-After is honoured up to this (a bigger value is clamped)."""
DEFAULT_DISABLED_DELAY = 60.0
"""Seconds: first wait after ``public_api_disabled``; doubles up to ``disabled_max_delay``."""
DEFAULT_DISABLED_MAX_DELAY = 300.0
DEFAULT_DISABLED_MAX_ATTEMPTS = 10
DEFAULT_CONFLICT_MAX_ATTEMPTS = 5
"""Attempts in all during which an ``idempotency_conflict`` on a replayed create is retried."""
DEFAULT_CONFLICT_MIN_DELAY = 1.0
"""Seconds: a replayed create that met a conflict waits at least this before trying again."""

RETRY_AFTER_JITTER = 0.1
"""Fraction of the Retry-After added as jitter, so paused senders do not return in one burst."""

DISABLED_CODE = "public_api_disabled"
CONFLICT_CODE = "idempotency_conflict"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long to wait; see the module docstring for what is retried."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP
    disabled_delay: float = DEFAULT_DISABLED_DELAY
    disabled_max_delay: float = DEFAULT_DISABLED_MAX_DELAY
    disabled_max_attempts: int = DEFAULT_DISABLED_MAX_ATTEMPTS
    conflict_max_attempts: int = DEFAULT_CONFLICT_MAX_ATTEMPTS
    conflict_min_delay: float = DEFAULT_CONFLICT_MIN_DELAY

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries (one attempt)."""
        return cls(max_attempts=1, disabled_max_attempts=1, conflict_max_attempts=1)


def should_retry(
    exc: BaseException, attempt: int, *, idempotent: bool, policy: RetryPolicy
) -> bool:
    """Whether to try again after attempt number ``attempt`` (1-based) failed with ``exc``.

    ``idempotent`` says whether repeating the request is harmless even if the failed attempt took
    effect on the server (GETs, uploads, creates carrying an Idempotency-Key).
    """
    if isinstance(exc, TransportError):
        return idempotent and attempt < policy.max_attempts
    if not isinstance(exc, ApiError):
        return False
    code = exc.code
    if code == DISABLED_CODE:
        # Refused before any effect: safe even for a create without a key.
        return attempt < policy.disabled_max_attempts
    if code == CONFLICT_CODE:
        # The contract answers 409 idempotency_conflict "while the first request is still being
        # processed". On a retry of a create (attempt >= 2) the earlier attempt, whose answer we
        # lost, may still be running server-side: wait and replay the same key a few times; once
        # it has finished the service answers with the original task. On a first attempt the
        # conflict is genuine (key reused with another body): the row fails.
        return idempotent and 2 <= attempt < min(policy.conflict_max_attempts, policy.max_attempts)
    if exc.status == 429 or code == "rate_limited":
        return attempt < policy.max_attempts
    if exc.status >= 500 and code not in _NEVER_RETRIED:
        return idempotent and attempt < policy.max_attempts
    return False


_NEVER_RETRIED = frozenset(
    {
        "validation_failed",
        "idempotency_conflict",
        "not_found",
        "insufficient_credits",
        "api_key_missing",
        "api_key_invalid",
        "api_key_revoked",
        "api_key_expired",
        "api_scope_denied",
    }
)


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    policy: RetryPolicy,
    rng: random.Random,
    code: str | None = None,
) -> float:
    """Seconds to wait after attempt number ``attempt`` (1-based) failed.

    * a server ``Retry-After`` wins, clamped to ``policy.retry_after_cap``, plus up to 10 % jitter;
    * ``public_api_disabled``: ``disabled_delay`` doubling per attempt up to
      ``disabled_max_delay``, "equal jitter" (between half and all of it);
    * ``idempotency_conflict``: the exponential backoff, at least ``conflict_min_delay``;
    * otherwise capped exponential backoff with full jitter: uniform in
      ``[0, min(max_delay, base_delay * 2 ** (attempt - 1))]``.
    """
    exp = max(0, attempt - 1)
    if retry_after is not None and retry_after >= 0:
        wait = min(retry_after, policy.retry_after_cap)
        return wait + rng.uniform(0.0, wait * RETRY_AFTER_JITTER)
    if code == DISABLED_CODE:
        cap = min(policy.disabled_max_delay, policy.disabled_delay * 2.0 ** min(exp, 30))
        return cap / 2.0 + rng.uniform(0.0, cap / 2.0)
    cap = min(policy.max_delay, policy.base_delay * 2.0 ** min(exp, 30))
    if code == CONFLICT_CODE:
        low = min(policy.conflict_min_delay, policy.max_delay)
        return low + rng.uniform(0.0, max(cap - low, 0.0))
    return rng.uniform(0.0, cap)
