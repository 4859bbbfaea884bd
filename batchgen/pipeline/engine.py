"""The work phase: submit rows within the caps, poll their tasks from one scheduler, settle them.

Every request goes through the one client and its shared request budget. Rows and tasks in
flight are held in one table (:mod:`batchgen.pipeline.inflight`), bounded by a window
(``max_tasks_in_flight``) and, in credits, by the governor; the run's phase is one value
(:mod:`batchgen.pipeline.runstate`). Row state changes are committed to the journal as they
happen; the table only holds what is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from batchgen.errors import (
    ApiError,
    AuthError,
    BatchgenError,
    InsufficientCreditsError,
    NotFoundError,
    NotSentError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from batchgen.pipeline.inflight import CreditGovernor, InFlight
from batchgen.pipeline.plan import canonical_json, idempotency_key, request_body, variant_of
from batchgen.pipeline.prices import PriceBook
from batchgen.pipeline.runstate import (
    STOP_AUTH,
    STOP_BUDGET,
    STOP_CREDITS,
    STOP_ERROR,
    RunState,
)
from batchgen.pipeline.upload import RowFailure, Uploader
from batchgen.rivya.records import Task
from batchgen.store import journal as J

if TYPE_CHECKING:
    from batchgen.pipeline.polling import PollScheduler
    from batchgen.rivya.client import RivyaClient


COMMIT_DELAY = 0.005
"""Seconds a row change may wait to share a transaction with others (a few ms of latency
against one commit per row: at a thousand rows a second, commits dominate otherwise)."""


class Committer:
    """Groups the row changes of a few milliseconds into one SQLite transaction.

    ``await committer.commit(key, fields)`` returns once the change is committed: a caller never
    lets a later step depend on a change (e.g. poll a task id) before its commit, so the
    journal's invariants hold while a busy run pays one commit per batch, not one per row.
    """

    def __init__(self, journal: J.Journal) -> None:
        self.journal = journal
        self._pending: list[tuple[J.TaskRef, dict[str, Any]]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False

    def commit(self, key: J.TaskRef, fields: dict[str, Any]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((key, fields))
        self._waiters.append(fut)
        if not self._scheduled:
            self._scheduled = True
            loop.call_later(COMMIT_DELAY, self.flush)
        return fut

    def flush(self) -> None:
        """Commit everything queued now (also called once at the end of a run)."""
        self._scheduled = False
        pending, waiters = self._pending, self._waiters
        if not pending:
            return
        self._pending, self._waiters = [], []
        try:
            self.journal.update_rows(pending)
        except BaseException as exc:
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class Engine:
    """Drives one run's submissions and polls to the end (or to a stop).

    The run's phase lives in one :class:`RunState` (``state``); what is in flight in one
    :class:`InFlight` table (``inflight``), which the poll scheduler and the credit governor
    share. The client's gate asks ``state`` before each create or upload goes out.
    """

    def __init__(
        self,
        *,
        job_id: str,
        run_id: int,
        journal: J.Journal,
        client: RivyaClient,
        uploader: Uploader,
        scheduler: PollScheduler,
        inflight: InFlight,
        governor: CreditGovernor,
        state: RunState,
        max_tasks_in_flight: int,
        max_polls_in_flight: int,
        task_timeout: float,
        emit: Callable[..., None],
        on_success: Callable[[Mapping[str, Any]], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        prices: PriceBook | None = None,
    ) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.journal = journal
        self.client = client
        self.uploader = uploader
        self.scheduler = scheduler
        self.inflight = inflight
        self.governor = governor
        self.state = state
        self.window = max(1, max_tasks_in_flight)
        self.poll_slots = asyncio.Semaphore(max(1, max_polls_in_flight))
        self.task_timeout = task_timeout
        self.emit = emit
        self.on_success = on_success
        self.clock = clock
        self.prices = prices
        self.committer = Committer(journal)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        client.gate = lambda: state.submitting
        uploader.proceed = lambda: state.submitting
        budget = getattr(client, "budget", None)
        if budget is not None:
            # Few polls per task while requests are scarce, low latency while they are not.
            scheduler.pressured = lambda: budget.pressured

    # -- control --------------------------------------------------------------------------------

    def drain(self, reason: str, error: BaseException | None = None) -> None:
        """Stop new submissions and uploads; in-flight tasks are still polled."""
        if self.state.drain(reason, error):
            self.emit("stop", reason=reason, error_code=getattr(error, "code", None))
        self._wake.set()

    def abort(self, reason: str, error: BaseException | None = None) -> None:
        """Stop everything now (signal): the journal already holds every state."""
        if self.state.stop(reason, error):
            self.emit("stop", reason=reason, error_code=getattr(error, "code", None))
        self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the run --------------------------------------------------------------------------------

    async def run(self, resume: Iterable[Any], submit: Iterable[Any]) -> None:
        """Poll ``resume`` rows' tasks and submit ``submit`` rows (journal rows, read by name)."""
        poller = asyncio.create_task(self._poll_loop())
        state = self.state
        try:
            for row in resume:
                if not await self.inflight.wait_room(self.window, state.stopped):
                    break
                now = self.clock()
                # What the server reserved for the task, when it said (the catalog's guess else).
                held = int(row["reserved_credits"] or row["cost"])
                self.inflight.resume(
                    row["task_id"],
                    (row["key"], variant_of(row)),
                    row["model"],
                    held,
                    now,
                    now + self.task_timeout,
                )
                self.scheduler.add(row["task_id"], row["model"], now, due=now)
                self._wake.set()
            for row in submit:
                if not await self.inflight.wait_room(self.window, state.draining):
                    break
                cost = int(row["cost"])
                if self.prices is not None:  # the server's price, once it has shown it
                    cost = await self.prices.cost(row["model"], cost)
                admitted = await self.governor.admit(cost, state.draining)
                if not admitted:
                    self._priced(row["model"], None)
                if admitted is None:
                    break
                if not admitted:
                    message = "--max-credits would be exceeded by this task"
                    ref = (row["key"], variant_of(row))
                    self.journal.update_row(
                        ref,
                        state=J.BLOCKED,
                        error_code=STOP_BUDGET,
                        error_field=None,
                        error_message=message,
                        request_id=None,
                    )
                    self.emit("blocked", **_who(ref), error_code=STOP_BUDGET)
                    self.drain(STOP_BUDGET)
                    break
                self._spawn(self._submit(dict(row), cost))
            # Nothing left to submit: requests are about to become plentiful, so the last tasks'
            # first polls move to a lower quantile (less latency at the end of the run).
            self.scheduler.replan(relaxed=True)
            self._wake.set()
            changed = self.inflight.changed
            while state.polling and not poller.done() and (len(self.inflight) or self._tasks):
                if len(self.inflight):
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), 0.5)
                else:  # the last polls and submits are settling
                    await asyncio.wait(set(self._tasks), timeout=0.5)
        finally:
            if state.submitting and sys.exc_info()[0] is not None:
                self.abort(STOP_ERROR)  # left by an exception: nothing more goes out
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            self.committer.flush()
            if not state.polling:
                for task in list(self._tasks):
                    task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.committer.flush()

    # -- submit ---------------------------------------------------------------------------------

    def _priced(self, model: str, task: Task | None) -> None:
        """Tell the price book what the server reserved for ``model`` (None: no answer)."""
        if self.prices is None:
            return
        if task is not None and task.reserved_credits > 0:
            self.prices.observe(model, task.reserved_credits)
        else:
            self.prices.release(model)

    async def _submit(self, row: dict[str, Any], cost: int) -> None:
        key = (row["key"], variant_of(row))
        created = False
        answered: Task | None = None
        try:
            if not self.state.submitting:
                return
            items = await self.uploader.items_for(row)
            body = request_body(row, items)
            ikey = idempotency_key(
                self.job_id, key[0], int(row["epoch"]), canonical_json(body), key[1]
            )
            if not self.state.submitting:
                return
            task = await self.client.create_generation(body, idempotency_key=ikey)
            answered = task
        except NotSentError:
            return  # the run stopped before it went out: the row is blocked with the rest
        except RowFailure as exc:
            if exc.invalid:
                self._invalid(row, exc)
            else:
                self._fail(key, exc.code, exc.message, field=exc.field, request_id=exc.request_id)
        except InsufficientCreditsError as exc:
            self._block(key, exc)
            self.drain(STOP_CREDITS, exc)
        except AuthError as exc:
            self._unsent(key, exc)
            self.drain(STOP_AUTH, exc)
        except (TransportError, ServerError, RateLimitedError) as exc:
            # Outcome unknown: the row stays resendable; the same key replays any task it made.
            self._unsent(key, exc)
        except ApiError as exc:
            self._fail(key, exc.code, exc.message, request_id=exc.request_id)
        else:
            # Committed before the task id is tracked (and so polled): invariant 2.
            await self.committer.commit(
                key,
                {
                    "state": J.SUBMITTED,
                    "task_id": task.id,
                    "idempotency_key": ikey,
                    "reserved_credits": task.reserved_credits,
                    "attempts": int(row["attempts"]) + 1,
                    "submitted_at": J.now_iso(),
                    "error_code": None,
                    "error_field": None,
                    "error_message": None,
                    "request_id": None,
                },
            )
            self.emit("submitted", **_who(key), task_id=task.id)
            if task.reserved_credits > 0 and task.reserved_credits != cost:
                # The service is the truth for money: hold the cap with its figure.
                self.inflight.reprice(cost, task.reserved_credits)
                cost = task.reserved_credits
            now = self.clock()
            self.inflight.created(task.id, key, row["model"], cost, now, now + self.task_timeout)
            created = True
            self.scheduler.add(task.id, row["model"], now)
            self._wake.set()
            if task.terminal:
                await self._finish(task)
        finally:
            self._priced(row["model"], answered)
            if not created:
                self.inflight.unadmit(cost)
                self._wake.set()

    def _fail(
        self,
        key: J.TaskRef,
        code: str,
        message: str,
        *,
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.journal.update_row(
            key,
            state=J.FAILED,
            error_code=code,
            error_field=field,
            error_message=message,
            request_id=request_id,
            finished_at=J.now_iso(),
        )
        self.emit("failed", **_who(key), error_code=code, request_id=request_id, message=message)

    def _invalid(self, row: Mapping[str, Any], exc: RowFailure) -> None:
        """A row found invalid only when submitted (its URL reference): never sent, reported
        on a line of its own with its row number, like the rows the scan found invalid."""
        task = (row["key"], variant_of(row))
        self.journal.update_row(
            task,
            state=J.INVALID,
            error_code=exc.code,
            error_field=exc.field,
            error_message=exc.message,
            request_id=None,
        )
        where = f"row {row['row_number']}" + (f", variant {task[1]}" if task[1] else "")
        self.emit("invalid", **_who(task), error_code=exc.code, message=f"{where}: {exc.message}")

    def _block(self, key: J.TaskRef, exc: ApiError) -> None:
        self.journal.update_row(
            key,
            state=J.BLOCKED,
            error_code=exc.code,
            error_field=None,
            error_message=exc.message,
            request_id=exc.request_id,
        )
        self.emit("blocked", **_who(key), error_code=exc.code, request_id=exc.request_id)

    def _unsent(self, key: J.TaskRef, exc: BatchgenError) -> None:
        code = getattr(exc, "code", None) or "transport_error"
        self.journal.update_row(
            key,
            state=J.READY,
            error_code=code,
            error_field=None,
            error_message=str(getattr(exc, "message", None) or exc),
            request_id=getattr(exc, "request_id", None),
        )
        self.emit(
            "unsent", **_who(key), error_code=code, request_id=getattr(exc, "request_id", None)
        )

    # -- poll -----------------------------------------------------------------------------------

    def _end(self, task_id: str, charged: int) -> None:
        """A task reached its end: free its slot and reservation, count what it cost."""
        if self.inflight.finish(task_id) is not None:
            self.governor.charge(charged)
            self._wake.set()

    async def _poll_loop(self) -> None:
        state = self.state
        while state.polling:  # until the run cancels it
            for task_id in self.scheduler.pop_due(self.clock()):
                if task_id not in self.inflight:
                    continue
                await self.poll_slots.acquire()
                self._spawn(self._poll(task_id))
            next_due = self.scheduler.next_due()
            timeout = 1.0 if next_due is None else min(1.0, max(0.0, next_due - self.clock()))
            self._wake.clear()
            if timeout > 0:
                # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow the cancel
                # that ends this loop when the wake-up lands at the same moment.
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waiter}, timeout=timeout)
                finally:
                    waiter.cancel()

    async def _poll(self, task_id: str) -> None:
        try:
            task = await self.client.get_generation(task_id)
        except NotFoundError as exc:
            t = self.inflight.get(task_id)
            if t is not None:
                self._fail(t.key, exc.code, exc.message, request_id=exc.request_id)
                self._end(task_id, 0)
            return
        except AuthError as exc:
            self.drain(STOP_AUTH, exc)
            self.abort(STOP_AUTH, exc)
            return
        except BatchgenError:
            self._after_unfinished(task_id)
            return
        finally:
            self.poll_slots.release()
        if task.terminal:
            await self._finish(task)
        else:
            self._after_unfinished(task_id)

    def _after_unfinished(self, task_id: str) -> None:
        t = self.inflight.get(task_id)
        if t is None:
            return
        now = self.clock()
        if now >= t.deadline:
            self.journal.update_row(
                t.key,
                state=J.TIMED_OUT,
                error_code="timed_out",
                error_message=f"task {task_id} not finished after {self.task_timeout:g} s; "
                "the next run polls it again",
            )
            self.emit("timed_out", **_who(t.key), task_id=task_id)
            self.inflight.give_up(task_id)  # its reservation stays: it may still be charged
            self._wake.set()
        else:
            self.scheduler.reschedule(task_id, now)

    def _observe(self, model: str, task: Task, noticed: float) -> None:
        exact = task.seconds_to_done
        if exact is not None:
            self.scheduler.observe(model, exact, exact=True)
        else:
            self.scheduler.observe(model, noticed, task_id=task.id)

    async def _finish(self, task: Task) -> None:
        t = self.inflight.get(task.id)
        if t is None:
            return
        seconds = max(0.0, self.clock() - t.submitted)
        if task.status == "succeeded":
            fields = {
                "state": J.SUCCEEDED,
                "final_credits": task.final_credits,
                "reserved_credits": task.reserved_credits,
                "primary_url": task.primary_url,
                "urls": json.dumps(
                    list(task.urls) or ([task.primary_url] if task.primary_url else [])
                ),
                "finished_at": J.now_iso(),
                "duration_s": round(seconds, 3),
                "generated_run": self.run_id,
                "error_code": None,
                "error_field": None,
                "error_message": None,
            }
            await self.committer.commit(t.key, fields)
            self._observe(t.model, task, seconds)
            self._end(task.id, task.final_credits)
            self.emit("succeeded", **_who(t.key), task_id=task.id, credits=task.final_credits)
            if self.on_success is not None:
                self.on_success(
                    {"key": t.key[0], "variant": t.key[1], "task_id": task.id, **fields}
                )
            return
        code = task.error_code or "generation_failed"
        if code == "insufficient_credits":
            row = self.journal.get_row(t.key)
            epoch = int(row["epoch"]) + 1 if row is not None else 1
            self.journal.update_row(
                t.key,
                state=J.BLOCKED,
                epoch=epoch,  # the same key would replay this failed task
                error_code=code,
                error_message=task.error_message or code,
                finished_at=J.now_iso(),
            )
            self.drain(STOP_CREDITS, ApiError(task.error_message or code, status=200, code=code))
            self._end(task.id, task.final_credits)
            self.emit("blocked", **_who(t.key), task_id=task.id, error_code=code)
            return
        await self.committer.commit(
            t.key,
            {
                "state": J.FAILED,
                "final_credits": task.final_credits,
                "error_code": code,
                "error_message": task.error_message or "the generation failed",
                "finished_at": J.now_iso(),
                "duration_s": round(seconds, 3),
                "generated_run": self.run_id,
            },
        )
        self._observe(t.model, task, seconds)
        self._end(task.id, task.final_credits)
        self.emit(
            "failed", **_who(t.key), task_id=task.id, error_code=code, message=task.error_message
        )


def _who(task: J.TaskRef) -> dict[str, str]:
    """The event fields naming a task: its row key, and its variant when it has one."""
    return {"key": task[0], "variant": task[1]} if task[1] else {"key": task[0]}
