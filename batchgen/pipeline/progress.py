"""Run events, logged through the standard library; tqdm bars for terminals.

Library code reports through :class:`Reporter` (``emit(event, **fields)``), which counts the
event and sends it to ``logging.getLogger("batchgen")``: the record's ``event`` attribute names
it, each field is an attribute of its own (``record.key``, ``record.task_id``,
``record.error_code``, ...) and all of them are in ``record.fields``. Events worth a line of
their own (a run starting or stopping, an invalid row, a warning) are logged at INFO or above,
per-row events (``submitted``, ``succeeded``, ``uploaded``, ...) at DEBUG, status lines at INFO
as ``event="status"``. The library attaches no handler but a NullHandler, so it prints nothing;
an orchestrator's handlers receive everything.

The CLI attaches :func:`console_handler` for stderr: human lines, or one JSON object per line
with ``--log-format json`` (its :class:`JsonFormatter`), nothing with ``--quiet``. Bars are drawn
only in ``bar`` mode (a terminal), and log lines are written around them.

Status lines come on a timer of their own (inside the run's event loop), so they keep coming while
nothing else happens, during downloads for instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Any

from tqdm import tqdm

LOGGER = logging.getLogger("batchgen")
LOGGER.addHandler(logging.NullHandler())  # a library prints nothing unless asked to

# Events that are worth a line of their own in the human log (the rest only move counters).
_LOUD = frozenset(
    {"stop", "lock_taken_over", "run_start", "run_end", "fatal", "warning", "invalid"}
)
_LEVELS = {"fatal": logging.ERROR, "stop": logging.WARNING, "warning": logging.WARNING}
# LogRecord attributes a field must not overwrite (such a field is only in record.fields).
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "event",
    "fields",
    "job_id",
}


def level_of(event: str) -> int:
    """The logging level of an event."""
    return _LEVELS.get(
        event, logging.INFO if event in _LOUD or event == "status" else logging.DEBUG
    )


def log_event(event: str, fields: dict[str, Any], job_id: str | None = None) -> None:
    """Send one event to the ``batchgen`` logger (cheaply skipped when nobody listens).
    ``job_id`` (as ``record.job_id``) tells apart the events of jobs run side by side."""
    level = level_of(event)
    if not LOGGER.isEnabledFor(level):
        return
    fields = {k: v for k, v in fields.items() if v is not None}
    text = fields.get("message") or " ".join(f"{k}={v}" for k, v in fields.items())
    extra = {k: v for k, v in fields.items() if k not in _RESERVED}
    extra.update(event=event, fields=fields, job_id=job_id)
    LOGGER.log(level, "%s: %s", event, text, extra=extra)


class Reporter:
    """Counts pipeline events, logs each one (see the module docstring), draws tqdm bars in
    ``bar`` mode on ``stream`` and logs a status line every ``status_interval`` seconds in
    ``lines`` mode. ``log_format`` only picks the default mode (JSON logs never get bars)."""

    def __init__(
        self,
        *,
        mode: str = "auto",
        log_format: str = "human",
        quiet: bool = False,
        status_interval: float = 30.0,
        stream: IO[str] | None = None,
        clock: Any = time.monotonic,
        job_id: str | None = None,
    ) -> None:
        self.job_id = job_id  # on every event's log record
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.json = log_format == "json"
        if mode == "auto":
            mode = "bar" if self.stream.isatty() and not self.json else "lines"
        self.mode = "none" if quiet else mode
        self.status_interval = status_interval
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.credits = 0
        self.total_to_submit = 0
        self.started = clock()
        self._last_status = self.started
        self._bars: dict[str, tqdm[Any]] = {}
        self._begun = False
        self._timer: asyncio.TimerHandle | None = None
        self._downloads_pending: Callable[[], int] | None = None
        self.catalog: str | None = None  # which catalog prices the run, for status lines

    # -- lifecycle ------------------------------------------------------------------------------

    def begin(self, to_submit: int, to_resume: int, uploads: int = 0) -> None:
        """The work phase starts: ``to_submit`` rows to send, ``to_resume`` tasks to poll."""
        self.total_to_submit = to_submit
        self._begun = True
        if self.mode == "bar":
            opts: dict[str, Any] = {"file": self.stream, "dynamic_ncols": True, "leave": True}
            if uploads:
                self._bars["uploaded"] = tqdm(total=uploads, desc="uploads  ", unit="file", **opts)
            self._bars["submitted"] = tqdm(total=to_submit, desc="submitted", unit="row", **opts)
            self._bars["finished"] = tqdm(
                total=to_submit + to_resume, desc="finished ", unit="row", **opts
            )
        if self.mode == "lines":
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: lines come with events only
                return
            self._timer = loop.call_later(self.status_interval, self._tick)

    def watch_downloads(self, pending: Callable[[], int]) -> None:
        """Results are downloaded in this run: status lines show downloads done, ``pending()``
        and failed."""
        self._downloads_pending = pending

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _tick(self) -> None:
        """A status line when none was written for ``status_interval``; then the next tick."""
        wait = self.status_interval - (self.clock() - self._last_status)
        if wait <= 0:
            self._last_status = self.clock()
            self._write_status()
            wait = self.status_interval
        self._timer = asyncio.get_running_loop().call_later(max(wait, 0.01), self._tick)

    # -- events ---------------------------------------------------------------------------------

    def emit(self, event: str, **fields: Any) -> None:
        self.counts[event] += 1
        code = fields.get("error_code")
        if code and event in ("failed", "blocked", "unsent", "invalid", "timed_out"):
            self.errors[code] += 1
        if event == "succeeded":
            self.credits += int(fields.get("credits") or 0)
        log_event(event, fields, self.job_id)
        self._update_bars(event)
        if self.mode == "lines" and self._begun:  # before begin() there is nothing to count
            now = self.clock()
            if now - self._last_status >= self.status_interval:
                self._last_status = now
                self._write_status()

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)

    def status_line(self) -> str:
        c = self.counts
        done = c["succeeded"] + c["failed"]
        elapsed = self.clock() - self.started
        priced = f" ({self.catalog})" if self.catalog else ""
        line = (
            f"batchgen: {elapsed:,.0f}s{priced} submitted {c['submitted']}/{self.total_to_submit} "
            f"finished {done} (ok {c['succeeded']}, failed {c['failed']}) "
            f"credits {self.credits} uploads {c['uploaded']}"
        )
        if self._downloads_pending is not None:
            line += (
                f" downloads {c['downloaded']} done, {self._downloads_pending()} pending,"
                f" {c['download_failed']} failed"
            )
        return line

    def _write_status(self) -> None:
        log_event("status", {"message": self.status_line()}, self.job_id)

    def _update_bars(self, event: str) -> None:
        if not self._bars:
            return
        if event == "uploaded" and "uploaded" in self._bars:
            self._bars["uploaded"].update(1)
        elif event == "submitted":
            self._bars["submitted"].update(1)
        elif event in ("succeeded", "failed", "timed_out", "blocked"):
            bar = self._bars["finished"]
            bar.update(1)
            bar.set_postfix(
                ok=self.counts["succeeded"],
                failed=self.counts["failed"],
                credits=self.credits,
                refresh=False,
            )


def _utc_stamp(created: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


class HumanFormatter(logging.Formatter):
    """``batchgen: <event>: <message>``; status lines as they are; warnings as ``Warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        fields = getattr(record, "fields", {})
        if event == "status":
            return str(fields.get("message", record.getMessage()))
        if event == "warning":
            return f"Warning: {fields.get('message', record.getMessage())}"
        if event is None:
            return f"batchgen: {record.getMessage()}"
        text = record.getMessage().split(": ", 1)[-1]
        return f"batchgen: {event.replace('_', ' ')}: {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``event`` and the event's fields (``key``,
    ``task_id``, ``error_code``, ``request_id``, ``message``, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        out: dict[str, Any] = {"ts": _utc_stamp(record.created)}
        if event is None:  # a record that is not a run event
            out.update(event="log", level=record.levelname, message=record.getMessage())
        else:
            out["event"] = event
            if getattr(record, "job_id", None):
                out["job_id"] = record.job_id  # type: ignore[attr-defined]
            out.update(getattr(record, "fields", {}))
        return json.dumps(out, ensure_ascii=False, default=str)


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes around tqdm's bars (``tqdm.write``), so a log line never breaks a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:
            self.handleError(record)


def console_handler(log_format: str = "human", stream: IO[str] | None = None) -> logging.Handler:
    """The CLI's handler for stderr: human lines at INFO, or every event as JSON (DEBUG)."""
    handler = _ConsoleHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        handler.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(HumanFormatter())
        handler.setLevel(logging.INFO)
    return handler


@contextlib.contextmanager
def console_logging(
    log_format: str = "human", *, quiet: bool = False, stream: IO[str] | None = None
) -> Iterator[None]:
    """Attach :func:`console_handler` to the ``batchgen`` logger for a command (none when
    ``quiet``), and take it off afterwards."""
    if quiet:
        yield
        return
    handler = console_handler(log_format, stream)
    previous = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(handler.level)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous)
