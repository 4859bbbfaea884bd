"""The simulator's configuration, bookkeeping (:class:`Ledger`) and in-memory service state.

Task status is never advanced by a timer: each task stores the times at which it becomes
``processing`` and terminal, and its status is derived from the clock when it is read. Credits
are settled (charged or refunded) the first time anything looks at the clock after a task's end:
every request and every ledger read call :meth:`SimState.settle_due`, which pops a min-heap of
end times, so a run nobody polls still settles.

All mutations happen under one lock (``ledger.lock``) so a test thread can read the ledger of a
simulator that runs in another thread (:class:`batchgen.sim.SimThread`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ALL_SCOPES = frozenset(
    {
        "models:read",
        "generations:create",
        "generations:read",
        "files:create",
        "files:read",
        "credits:read",
        "webhooks:manage",
        "chat:create",
        "chat:read",
    }
)
"""Every documented scope."""

KEY_STATUSES = ("active", "revoked", "expired")
DEFAULT_ACCOUNT = "acct_default"


@dataclass(frozen=True)
class KeyConfig:
    """One API key of an account: its secret, scopes and status."""

    key: str
    scopes: frozenset[str] = ALL_SCOPES
    status: str = "active"  # "active" | "revoked" | "expired"
    expires_at: float | None = None  # epoch seconds; expired from then on


@dataclass(frozen=True)
class AccountConfig:
    """One account: its id, starting credits (None = ``SimConfig.credits``) and keys."""

    id: str
    keys: tuple[KeyConfig, ...]
    credits: int | None = None


def knob(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    zero_is_none: bool = False,
    negate: bool = False,
    show_default: bool = True,
) -> Any:
    """A :class:`SimConfig` field that ``batchgen sim`` offers as a flag (sim/cli.py builds the
    flags from these): its help, and how the flag maps to the value.

    ``flag`` names the flag when it is not the field's name; ``choices`` are its only values (as
    text, converted to the field's type); ``zero_is_none``: the flag's 0 means None; ``negate``:
    an on/off field offered as a ``--no-...`` switch.
    """
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "zero_is_none": zero_is_none,
        "negate": negate,
        "show_default": show_default,
    }
    return field(default=default, metadata=meta)


@dataclass
class SimConfig:
    """Every knob of the simulator. Rates are probabilities per request (or per task).

    A field made with :func:`knob` is a flag of ``batchgen sim``, its default and help taken from
    here; the others are set by tests and the Python API only.
    """

    credits: int = knob(10_000, "Starting balance.")
    rate: float | None = knob(20.0, "Requests/s per account; 0 = off.", zero_is_none=True)
    burst: int | None = knob(
        None, "Token bucket size [default: ceil(rate)].", show_default=False
    )  # None = max(1, ceil(rate))
    rate_limit_headers: bool = knob(
        True, "Omit X-RateLimit-* headers on 429.", flag="--no-rate-headers", negate=True
    )
    create_status: int = knob(
        202, "Status of a successful create.", choices=("200", "201", "202")
    )  # of a successful (non-replayed) create
    insufficient_status: int = knob(402, "Status of insufficient_credits.")
    latency: float = knob(2.0, "Median seconds per task.")  # log-normal
    # model id -> its median seconds (``--latency-by-model``); the others take ``latency``
    latency_by_model: dict[str, float] = field(default_factory=dict)
    latency_sigma: float = knob(0.4, "Sigma of the log-normal latency.")  # and of queue time
    queue_time: float = knob(0.2, "Median queued seconds.")  # before processing (0 = none)
    failure_rate: float = knob(0.0, "Tasks that fail.")  # ending failed with failure_code
    failure_code: str = knob(
        "generation_failed", "error.code of a failed task (e.g. insufficient_credits)."
    )
    error_rate: float = knob(0.0, "500 answers.")  # internal_error before any effect
    html_error_rate: float = knob(0.0, "502 HTML.")  # an HTML body, before any effect
    drop_rate: float = knob(0.0, "Dropped, no effect.")  # connections dropped before any effect
    drop_after_rate: float = knob(
        0.0, "Dropped after effect."
    )  # creates/uploads done, then dropped
    stuck_rate: float = knob(0.0, "Tasks never end.")  # credits stay reserved
    slow_rate: float = knob(0.0, "Requests slowed.")  # delayed by slow_seconds
    slow_seconds: float = knob(2.0, "Delay of a slowed request.")
    create_delay: float = 0.0  # seconds a create holds its Idempotency-Key before the task exists
    api_disabled: bool = False  # every /api/v1 request -> 503 public_api_disabled
    idempotency_ttl: float = 86_400.0
    image_long_side: int = knob(256, "Long side of result images, pixels.", flag="--image-size")
    media_delay: float = knob(0.0, "Seconds before a result image is served.")  # a slow CDN
    upload_delay: float = knob(0.0, "Seconds each file upload takes.")  # a slow file store
    seed: int | None = knob(None, "Seed of every random choice.", show_default=False)
    api_key: str | None = knob(
        None, "Use this key (rvya_sk_...) instead of a new one.", show_default=False
    )  # the default account's key; derived from seed when None
    accounts: tuple[AccountConfig, ...] = ()  # empty: one account DEFAULT_ACCOUNT with api_key
    max_upload_bytes: int = 64_000_000  # bytes read from one upload before giving up


RUNTIME_KNOBS = frozenset(
    {
        "rate",
        "burst",
        "rate_limit_headers",
        "create_status",
        "insufficient_status",
        "latency",
        "latency_by_model",
        "latency_sigma",
        "queue_time",
        "failure_rate",
        "failure_code",
        "error_rate",
        "html_error_rate",
        "drop_rate",
        "drop_after_rate",
        "stuck_rate",
        "slow_rate",
        "slow_seconds",
        "create_delay",
        "media_delay",
        "upload_delay",
        "api_disabled",
    }
)
"""SimConfig fields that may be changed on a running simulator (``POST /_sim/config``)."""


class FakeClock:
    """A settable clock for deterministic tests: ``clock()`` returns the current epoch seconds."""

    def __init__(self, start: float = 1_778_457_600.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def iso(ts: float) -> str:
    """Epoch seconds as ``2026-05-11T00:00:00.000Z``."""
    ms = int(ts * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


class Ledger:
    """What happened, for tests to assert on: tasks, credits, requests, responses, concurrency."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tasks_created = 0
        self.tasks_by_idempotency_key: Counter[str] = Counter()
        self.tasks_by_client_request_id: Counter[str] = Counter()
        self.tasks_without_key = 0
        self.replays = 0
        self.settled: Counter[str] = Counter()
        self.credits: dict[str, dict[str, int]] = {}
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.files_uploaded = 0
        self.files_by_client_request_id: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.polls_by_model: Counter[str] = Counter()
        # rate-limited requests by tenth of a second (epoch * 10): [allowed, refused with 429]
        self.rate_timeline: dict[int, list[int]] = {}
        self.before_read: Callable[[], object] | None = None
        # Every request in order: [start seq, route, end seq, status, error code, the caller's
        # client_request_id of a create or upload]; one counter
        # numbers starts and ends, so a test can tell what was sent after an answer came back.
        self.log: list[list[Any]] = []
        self._seq = 0

    def account(self, account_id: str) -> dict[str, int]:
        """The credit book of one account (balance, reserved, charged, refunded)."""
        with self.lock:
            book = self.credits.get(account_id)
            if book is None:
                book = self.credits[account_id] = {
                    "balance": 0,
                    "reserved": 0,
                    "charged": 0,
                    "refunded": 0,
                }
            return book

    def request_started(self, route: str) -> int:
        """Count a request on ``"METHOD /route/{param}"`` and one more in flight; returns its
        index in :attr:`log` (pass it to :meth:`request_finished`)."""
        with self.lock:
            self.requests[route] += 1
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            self._seq += 1
            self.log.append([self._seq, route, None, None, None, None])
            return len(self.log) - 1

    def request_finished(
        self,
        status: int | str,
        code: str | None = None,
        index: int | None = None,
        *,
        trace: str | None = None,
    ) -> None:
        """Count a response by status (``"dropped"`` for a dropped connection) and error code."""
        with self.lock:
            self.in_flight -= 1
            self.responses[str(status)] += 1
            if code:
                self.errors[code] += 1
            if index is not None:
                self._seq += 1
                entry = self.log[index]
                entry[2], entry[3], entry[4], entry[5] = self._seq, status, code, trace

    def request_log(self) -> list[dict[str, Any]]:
        """Every request so far in the order it arrived: ``start`` and ``end`` (one sequence
        numbers both; ``end`` None while it runs), ``route``, ``status``, error ``code`` and
        ``trace`` (the client_request_id of a create or upload)."""
        with self.lock:
            return [
                {"start": e[0], "route": e[1], "end": e[2], "status": e[3], "code": e[4]}
                | {"trace": e[5]}
                for e in self.log
            ]

    def rate_decision(self, now: float, allowed: bool) -> None:
        """Count one request checked against the rate limit, by tenth of a second."""
        with self.lock:
            slot = self.rate_timeline.get(int(now * 10))
            if slot is None:
                slot = self.rate_timeline[int(now * 10)] = [0, 0]
            slot[0 if allowed else 1] += 1

    def poll(self, model: str) -> None:
        """Count one answered poll of a task of ``model``."""
        with self.lock:
            self.polls_by_model[model] += 1

    def fault(self, name: str) -> None:
        """Count an injected fault."""
        with self.lock:
            self.faults[name] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of everything, after settling the tasks that are due."""
        if self.before_read is not None:
            self.before_read()
        with self.lock:
            return {
                "tasks_created": self.tasks_created,
                "tasks_by_idempotency_key": dict(self.tasks_by_idempotency_key),
                "tasks_by_client_request_id": dict(self.tasks_by_client_request_id),
                "tasks_without_key": self.tasks_without_key,
                "replays": self.replays,
                "settled": dict(self.settled),
                "credits": {
                    acct: {
                        **book,
                        "outstanding": book["reserved"] - book["charged"] - book["refunded"],
                    }
                    for acct, book in self.credits.items()
                },
                "requests": dict(self.requests),
                "responses": dict(self.responses),
                "errors": dict(self.errors),
                "faults": dict(self.faults),
                "files_uploaded": self.files_uploaded,
                "files_by_client_request_id": dict(self.files_by_client_request_id),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "polls_by_model": dict(self.polls_by_model),
                "rate_timeline": {str(k): v for k, v in sorted(self.rate_timeline.items())},
            }


@dataclass(slots=True, eq=False)
class Task:
    """One generation task; its status is a function of the clock."""

    id: str
    account: str
    model: str
    cost: int
    aspect: str
    fmt: str
    created_at: float
    processing_at: float
    done_at: float  # math.inf for a stuck task
    outcome: str  # "succeeded" | "failed", revealed at done_at
    idempotency_key: str | None
    client_request_id: str | None
    settled: bool = False

    def status_at(self, now: float) -> tuple[str, float]:
        """``(status, updated_at)`` at time ``now``."""
        if now < self.processing_at:
            return "queued", self.created_at
        if now < self.done_at:
            return "processing", self.processing_at
        return self.outcome, self.done_at


@dataclass
class FileRecord:
    """One uploaded file."""

    id: str
    account: str
    kind: str
    name: str
    mime_type: str
    size: int
    sha256: str
    created_at: float
    data: bytes = field(repr=False)
    client_request_id: str | None = None


@dataclass
class _IdemEntry:
    fingerprint: str
    expires_at: float
    task_id: str | None = None  # None while the first request is still being processed


@dataclass
class Account:
    """An account at run time."""

    id: str
    idem: dict[str, _IdemEntry] = field(default_factory=dict)


class InsufficientCredits(Exception):
    """The balance cannot cover a reservation."""

    def __init__(self, balance: int, cost: int) -> None:
        self.balance = balance
        self.cost = cost
        super().__init__(f"balance {balance} cannot cover {cost} credits")


class SimState:
    """Accounts, keys, tasks, files and idempotency records; every method is thread-safe."""

    def __init__(self, config: SimConfig, clock: Callable[[], float], ledger: Ledger) -> None:
        self.config = config
        self.clock = clock
        self.ledger = ledger
        self.lock = ledger.lock
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, tuple[str, KeyConfig]] = {}  # secret -> (account id, key)
        self.tasks: dict[str, Task] = {}
        self.files: dict[str, FileRecord] = {}
        self._due: list[tuple[float, int, str]] = []  # (done_at, seq, task id), unsettled
        self._seq = 0
        ledger.before_read = self.settle_due

    # ---------------------------------------------------------------- accounts and keys

    def add_account(self, account: AccountConfig) -> None:
        """Register an account with its keys and starting credits."""
        with self.lock:
            self.accounts.setdefault(account.id, Account(account.id))
            book = self.ledger.account(account.id)
            credits = self.config.credits if account.credits is None else account.credits
            book["balance"] = credits
            for key in account.keys:
                self.keys[key.key] = (account.id, key)

    def add_key(self, account_id: str, key: KeyConfig) -> None:
        """Add a key to an existing account (or replace one with the same secret)."""
        with self.lock:
            self.accounts.setdefault(account_id, Account(account_id))
            self.ledger.account(account_id)
            self.keys[key.key] = (account_id, key)

    def lookup_key(self, secret: str) -> tuple[str, KeyConfig] | None:
        """The account and key of a secret, or None."""
        return self.keys.get(secret)

    def balance(self, account_id: str) -> int:
        """Current credits of an account (after settling due tasks)."""
        self.settle_due()
        with self.lock:
            return self.ledger.account(account_id)["balance"]

    def set_credits(self, account_id: str, credits: int) -> int:
        """Set an account's balance; returns it."""
        with self.lock:
            self.accounts.setdefault(account_id, Account(account_id))
            book = self.ledger.account(account_id)
            book["balance"] = int(credits)
            return book["balance"]

    def add_credits(self, account_id: str, credits: int) -> int:
        """Add (or, negative, remove) credits; returns the new balance."""
        with self.lock:
            self.accounts.setdefault(account_id, Account(account_id))
            book = self.ledger.account(account_id)
            book["balance"] += int(credits)
            return book["balance"]

    # ---------------------------------------------------------------- idempotency

    def begin_create(self, account_id: str, key: str, fingerprint: str) -> tuple[str, Task | None]:
        """Claim an Idempotency-Key: ``("new", None)``, ``("replay", task)``,
        ``("conflict_body", None)`` or ``("conflict_in_flight", None)``."""
        now = self.clock()
        with self.lock:
            account = self.accounts.setdefault(account_id, Account(account_id))
            entry = account.idem.get(key)
            if entry is not None and entry.expires_at <= now:
                entry = None
            if entry is None:
                account.idem[key] = _IdemEntry(fingerprint, now + self.config.idempotency_ttl)
                return "new", None
            if entry.fingerprint != fingerprint:
                return "conflict_body", None
            if entry.task_id is None:
                return "conflict_in_flight", None
            self.ledger.replays += 1
            return "replay", self.tasks[entry.task_id]

    def release_key(self, account_id: str, key: str) -> None:
        """Forget a claimed key whose request created nothing (invalid body, no credits...)."""
        with self.lock:
            account = self.accounts.get(account_id)
            if account is not None:
                entry = account.idem.get(key)
                if entry is not None and entry.task_id is None:
                    del account.idem[key]

    # ---------------------------------------------------------------- tasks

    def create_task(
        self,
        *,
        task_id: str,
        account_id: str,
        model: str,
        cost: int,
        aspect: str,
        fmt: str,
        queue_s: float,
        run_s: float,
        outcome: str,
        stuck: bool,
        idempotency_key: str | None,
        client_request_id: str | None,
    ) -> Task:
        """Reserve the credits and create a task (raises :class:`InsufficientCredits`)."""
        now = self.clock()
        with self.lock:
            book = self.ledger.account(account_id)
            if book["balance"] < cost:
                raise InsufficientCredits(book["balance"], cost)
            book["balance"] -= cost
            book["reserved"] += cost
            task = Task(
                id=task_id,
                account=account_id,
                model=model,
                cost=cost,
                aspect=aspect,
                fmt=fmt,
                created_at=now,
                processing_at=now + queue_s,
                done_at=math.inf if stuck else now + queue_s + run_s,
                outcome=outcome,
                idempotency_key=idempotency_key,
                client_request_id=client_request_id,
            )
            self.tasks[task_id] = task
            led = self.ledger
            led.tasks_created += 1
            if idempotency_key is not None:
                led.tasks_by_idempotency_key[idempotency_key] += 1
                self.accounts[account_id].idem[idempotency_key].task_id = task_id
            else:
                led.tasks_without_key += 1
            if client_request_id is not None:
                led.tasks_by_client_request_id[client_request_id] += 1
            if stuck:
                led.faults["stuck"] += 1
            else:
                self._seq += 1
                heapq.heappush(self._due, (task.done_at, self._seq, task_id))
            return task

    def get_task(self, account_id: str, task_id: str) -> Task | None:
        """The task if it exists and belongs to the account."""
        task = self.tasks.get(task_id)
        if task is None or task.account != account_id:
            return None
        return task

    def view(self, task: Task, now: float | None = None) -> tuple[str, float]:
        """``(status, updated_at)`` now, settling the task first if it just ended."""
        now = self.clock() if now is None else now
        status, updated = task.status_at(now)
        if not task.settled and status in ("succeeded", "failed"):
            self.settle_due(now)
        return status, updated

    def settle_due(self, now: float | None = None) -> int:
        """Charge or refund every task whose end time has passed; returns how many."""
        due = self._due
        now = self.clock() if now is None else now
        count = 0
        with self.lock:  # also guards the peek: another thread may be reading the ledger
            while due and due[0][0] <= now:
                _, _, task_id = heapq.heappop(due)
                task = self.tasks[task_id]
                if task.settled:
                    continue
                task.settled = True
                book = self.ledger.account(task.account)
                if task.outcome == "succeeded":
                    book["charged"] += task.cost
                else:
                    book["refunded"] += task.cost
                    book["balance"] += task.cost
                self.ledger.settled[task.outcome] += 1
                count += 1
        return count

    # ---------------------------------------------------------------- files

    def add_file(self, record: FileRecord) -> None:
        """Store an uploaded file."""
        with self.lock:
            self.files[record.id] = record
            self.ledger.files_uploaded += 1
            if record.client_request_id is not None:
                self.ledger.files_by_client_request_id[record.client_request_id] += 1

    def get_file(self, account_id: str | None, file_id: str) -> FileRecord | None:
        """The file if it exists and (when ``account_id`` is given) belongs to the account."""
        record = self.files.get(file_id)
        if record is None or (account_id is not None and record.account != account_id):
            return None
        return record


def fingerprint(body: Any) -> str:
    """Stable hash of a parsed JSON body (key order does not matter)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
