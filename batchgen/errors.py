"""Errors of batchgen, classified by what the caller must do about them.

::

    BatchgenError                    base of everything batchgen raises on purpose
    ├── UsageError                   bad flag, job file or manifest: nothing sent (exit 2)
    ├── ApiError                     the service refused a request (status, code, request_id)
    │   ├── AuthError                api_key_* (401) / api_scope_denied (403): fatal for the run
    │   ├── RateLimitedError         rate_limited (429): back off, retry
    │   ├── InsufficientCreditsError insufficient_credits: stop submitting, keep polling
    │   ├── ValidationFailedError    validation_failed (400): the row fails, never retried
    │   ├── IdempotencyConflictError idempotency_conflict (409): the row fails, never retried
    │   ├── NotFoundError            not_found (404): the row fails
    │   └── ServerError              internal_error, public_api_disabled, other 5xx: retried
    ├── TransportError               no usable answer: refused/dropped, timeout, non-JSON body
    │   └── TooLargeError            a media body over the size the caller allowed: not retried
    ├── TaskFailedError              the task was accepted, ran, and failed (task.error)
    └── NotSentError                 the run stopped submitting: the request was never sent

Classification is by ``error.code`` first; the HTTP status only decides for codes batchgen does
not know (429 and 5xx are transient, anything else is a per-row failure).
"""

from __future__ import annotations

from typing import Any

# Exit codes of the commands (README.md): 0 every row succeeded; 1 some rows failed, were invalid
# or are unfinished; 2 bad usage; 3 the run stopped early (auth, credits, not affordable); 4
# another run of the job holds the lock; 130/143 interrupted by SIGINT/SIGTERM.
EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class BatchgenError(Exception):
    """Base class of every error batchgen raises on purpose."""


class UsageError(BatchgenError):
    """A user's mistake in a flag, job file or manifest, found before anything is sent.

    ``where`` names the flag, file, row or column; ``fix`` says how to fix it. ``str()`` gives
    the one-line ``<what> (<where>): <fix>`` form the CLI prints after ``Error:``.
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        text = what
        if where:
            text += f" ({where})"
        if fix:
            text += f": {fix}"
        super().__init__(text)


class ApiError(BatchgenError):
    """The service answered with an error object ``{"error": {code, message, requestId}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        request_id: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        super().__init__(
            f"{code} (HTTP {status}): {message}" + (f" [{request_id}]" if request_id else "")
        )

    def __reduce__(self) -> tuple[Any, ...]:  # keep picklable across processes
        return (
            _rebuild_api_error,
            (type(self), self.message, self.status, self.code, self.request_id, self.retry_after),
        )


def _rebuild_api_error(
    cls: type[ApiError],
    message: str,
    status: int,
    code: str,
    request_id: str | None,
    retry_after: float | None,
) -> ApiError:
    return cls(message, status=status, code=code, request_id=request_id, retry_after=retry_after)


class AuthError(ApiError):
    """The key is missing, invalid, revoked, expired, or lacks a scope. Fatal for the run."""


class RateLimitedError(ApiError):
    """``rate_limited``: too many requests in the current window."""


class InsufficientCreditsError(ApiError):
    """``insufficient_credits``: the balance cannot cover the reservation."""


class ValidationFailedError(ApiError):
    """``validation_failed``: body, model, prompt or params invalid."""


class IdempotencyConflictError(ApiError):
    """``idempotency_conflict``: the key was reused with another body, or is still in flight."""


class NotFoundError(ApiError):
    """``not_found``: the task or file is missing or belongs to another account."""


class ServerError(ApiError):
    """A server-side fault (``internal_error``, ``public_api_disabled``, any other 5xx)."""


class TransportError(BatchgenError):
    """No usable answer: connection refused or dropped, timeout, or a body that is not the API's."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TooLargeError(TransportError):
    """A downloaded body went over ``limit`` bytes, the most the caller allowed."""

    def __init__(self, message: str, *, limit: int) -> None:
        self.limit = limit
        super().__init__(message)


class TaskFailedError(BatchgenError):
    """A task that was accepted and ran, then ended ``failed`` with ``task.error``."""

    def __init__(self, message: str, *, code: str, task_id: str | None = None) -> None:
        self.code = code
        self.message = message
        self.task_id = task_id
        super().__init__(f"{code}: {message}")


class NotSentError(BatchgenError):
    """A create or upload the client did not send because its gate said no (the run stopped
    submitting: credits, ``--max-credits``, auth). Nothing reached the service."""

    code = "not_sent"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: not sent, the run stopped submitting")


AUTH_CODES = frozenset(
    {"api_key_missing", "api_key_invalid", "api_key_revoked", "api_key_expired", "api_scope_denied"}
)

_CODE_TO_CLASS: dict[str, type[ApiError]] = {
    **{code: AuthError for code in AUTH_CODES},
    "rate_limited": RateLimitedError,
    "insufficient_credits": InsufficientCreditsError,
    "validation_failed": ValidationFailedError,
    "idempotency_conflict": IdempotencyConflictError,
    "not_found": NotFoundError,
    "internal_error": ServerError,
    "public_api_disabled": ServerError,
}


def api_error_class(code: str, status: int) -> type[ApiError]:
    """Pick the error class for an error ``code``; unknown codes fall back on the status."""
    cls = _CODE_TO_CLASS.get(code)
    if cls is not None:
        return cls
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ServerError
    return ApiError
