"""The one table of work in flight, and the credit governor that reads it.

:class:`InFlight` owns every fact about what is in flight: the rows admitted for submission
(their upload and create under way), the tasks created and not finished (one
:class:`InFlightTask` each, which is also the poll scheduler's record of the task: the
scheduler is handed :attr:`InFlight.tasks`), and the credits all of these may still cost,
including those of tasks given up after the task timeout (the service may still charge them).
The window (``max_tasks_in_flight``) and the governor (``--max-credits``) are both read from it.
"""

from __future__ import annotations

import asyncio

from batchgen.pipeline.polling import PollState


class InFlightTask(PollState):
    """A task created and not finished: its row and cost, and its poll schedule."""

    __slots__ = ("cost", "deadline", "key", "model")

    def __init__(
        self, key: tuple[str, str], model: str, cost: int, submitted: float, deadline: float
    ) -> None:
        super().__init__(model, submitted)
        self.key = key
        self.model = model
        self.cost = cost
        self.deadline = deadline


class InFlight:
    """Rows admitted and tasks in flight, with the credits they hold (see the module docstring)."""

    def __init__(self) -> None:
        self.tasks: dict[str, InFlightTask] = {}  # task id -> task; shared with the scheduler
        self.admitted = 0  # rows admitted whose create has not come back yet
        self.credits = 0  # reserved by admitted rows, tasks in flight and tasks given up
        self.changed = asyncio.Event()

    def __len__(self) -> int:
        """Rows holding a window slot: admitted ones and tasks in flight."""
        return self.admitted + len(self.tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def get(self, task_id: str) -> InFlightTask | None:
        return self.tasks.get(task_id)

    def _changed(self) -> None:
        self.changed.set()

    async def wait_room(self, limit: int, cancel: asyncio.Event) -> bool:
        """Wait until fewer than ``limit`` rows are in flight; False if ``cancel`` is set first."""
        while len(self) >= limit:
            if cancel.is_set():
                return False
            self.changed.clear()
            waiter = asyncio.ensure_future(self.changed.wait())
            cancelled = asyncio.ensure_future(cancel.wait())
            try:
                await asyncio.wait({waiter, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                cancelled.cancel()
        return not cancel.is_set()

    def admit(self, cost: int) -> None:
        """A row goes out (upload, then create): it holds a slot and its cost."""
        self.admitted += 1
        self.credits += cost

    def unadmit(self, cost: int) -> None:
        """An admitted row made no task: its slot and cost are free again."""
        self.admitted -= 1
        self.credits -= cost
        self._changed()

    def reprice(self, cost: int, actual: int) -> None:
        """A reservation of ``cost`` turned out to be ``actual`` (the server's figure)."""
        self.credits += actual - cost
        self._changed()

    def add(
        self,
        task_id: str,
        key: tuple[str, str],
        model: str,
        cost: int,
        submitted: float,
        deadline: float,
    ) -> InFlightTask:
        """A task exists (created now, or resumed from the journal: then ``admitted=False``)."""
        task = InFlightTask(key, model, cost, submitted, deadline)
        self.tasks[task_id] = task
        return task

    def created(
        self,
        task_id: str,
        key: tuple[str, str],
        model: str,
        cost: int,
        submitted: float,
        deadline: float,
    ) -> InFlightTask:
        """An admitted row's create came back with a task: the row becomes a task in flight."""
        self.admitted -= 1  # its cost stays reserved, now by the task
        return self.add(task_id, key, model, cost, submitted, deadline)

    def resume(
        self,
        task_id: str,
        key: tuple[str, str],
        model: str,
        cost: int,
        submitted: float,
        deadline: float,
    ) -> InFlightTask:
        """A task of an earlier run, polled again: it holds a slot and its cost."""
        self.credits += cost
        return self.add(task_id, key, model, cost, submitted, deadline)

    def finish(self, task_id: str) -> InFlightTask | None:
        """A task reached its end: its slot and reservation are free."""
        task = self.tasks.pop(task_id, None)
        if task is not None:
            self.credits -= task.cost
            self._changed()
        return task

    def give_up(self, task_id: str) -> InFlightTask | None:
        """A task past the task timeout: its slot is free, its cost stays held (it may still
        be charged; the next run polls it again)."""
        task = self.tasks.pop(task_id, None)
        if task is not None:
            self._changed()
        return task


class CreditGovernor:
    """Never lets charged + in-flight reservations exceed the cap (``None``: no cap).

    The reservations in flight are read from the :class:`InFlight` table; the governor itself
    only counts what was charged.
    """

    def __init__(self, cap: int | None, table: InFlight) -> None:
        self.cap = cap
        self.table = table
        self.charged = 0

    @property
    def inflight(self) -> int:
        return self.table.credits

    async def admit(self, cost: int, cancel: asyncio.Event) -> bool | None:
        """Admit a row of ``cost`` into the table; wait while tasks in flight may still refund.

        True: admitted. False: it can never fit (even if every task in flight failed).
        None: ``cancel`` was set while waiting (nothing admitted).
        """
        if self.cap is not None:
            while self.charged + self.table.credits + cost > self.cap:
                if self.charged + cost > self.cap:
                    return False
                if cancel.is_set():
                    return None
                self.table.changed.clear()
                waiter = asyncio.ensure_future(self.table.changed.wait())
                cancelled = asyncio.ensure_future(cancel.wait())
                try:
                    await asyncio.wait({waiter, cancelled}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    cancelled.cancel()
        if cancel.is_set():
            return None
        self.table.admit(cost)
        return True

    def charge(self, credits: int) -> None:
        """A task finished and was charged ``credits``."""
        self.charged += credits
