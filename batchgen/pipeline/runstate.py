"""The one run-state value: running, draining or stopped, with the reason.

* ``running``: rows are submitted.
* ``draining``: no new create and no new upload starts (the submitter, the uploader and the
  client's gate all ask :attr:`RunState.submitting` before each start); tasks in flight are
  still polled to their end. Entered at the first ``insufficient_credits`` (a refused create
  or a task failing with that code), when ``--max-credits`` is reached, or at an auth or scope
  error. The first reason stays; nothing that happens later (a top-up, say) sends the run back
  to ``running``.
* ``stopped``: nothing more is sent at all (a signal, or an auth error while polling).
"""

from __future__ import annotations

import asyncio

RUNNING = "running"
DRAINING = "draining"
STOPPED = "stopped"

STOP_AUTH = "auth"
STOP_CREDITS = "insufficient_credits"
STOP_BUDGET = "budget_reached"
STOP_SIGNAL = "signal"
STOP_ERROR = "error"
"""The run loop left by an exception (it propagates; nothing more is sent)."""
EARLY = frozenset({STOP_AUTH, STOP_CREDITS, STOP_BUDGET})
"""Reasons that end a run early with rows left unsent (exit 3)."""


class RunState:
    """The phase of a run and why it left ``running`` (see the module docstring)."""

    def __init__(self) -> None:
        self.phase = RUNNING
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.draining = asyncio.Event()  # set when submissions stop
        self.stopped = asyncio.Event()  # set when everything stops

    def __repr__(self) -> str:
        return f"RunState({self.phase}, reason={self.reason})"

    @property
    def submitting(self) -> bool:
        """True while new creates and uploads may start."""
        return self.phase == RUNNING

    @property
    def polling(self) -> bool:
        """True while tasks in flight are polled."""
        return self.phase != STOPPED

    @property
    def stopped_early(self) -> bool:
        """True when the run stopped submitting with rows left unsent (exit 3)."""
        return self.reason in EARLY

    def drain(self, reason: str, error: BaseException | None = None) -> bool:
        """Stop new submissions for ``reason``; True when this call set the reason."""
        changed = self.reason is None
        if changed:
            self.reason = reason
            self.error = error
        if self.phase == RUNNING:
            self.phase = DRAINING
        self.draining.set()
        return changed

    def stop(self, reason: str, error: BaseException | None = None) -> bool:
        """Stop everything now; True when this call set the reason."""
        changed = self.drain(reason, error)
        self.phase = STOPPED
        self.stopped.set()
        return changed
