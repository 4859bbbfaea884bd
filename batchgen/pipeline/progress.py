"""Progress and logs on stderr: tqdm bars in a terminal, a status line every N seconds elsewhere,
one JSON object per line with ``--log-format json``, nothing but errors with ``--quiet``.

Status lines come on a timer of their own (inside the run's event loop), so they keep coming while
nothing else happens, during downloads for instance.

Library code reports through :class:`Reporter` (``emit(event, **fields)``) and never prints.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm

# Events that are worth a line of their own in the human log (the rest only move counters).
_LOUD = frozenset(
    {"stop", "lock_taken_over", "run_start", "run_end", "fatal", "warning", "invalid"}
)


class Reporter:
    """Counts pipeline events and shows them as bars, status lines or JSON log lines."""

    def __init__(
        self,
        *,
        mode: str = "auto",
        log_format: str = "human",
        quiet: bool = False,
        status_interval: float = 30.0,
        stream: IO[str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
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
        if self.json and not self.quiet:
            record = {"ts": _utc_stamp(), "event": event}
            record.update({k: v for k, v in fields.items() if v is not None})
            self._write(json.dumps(record, ensure_ascii=False, default=str))
        elif event in _LOUD and not self.quiet:
            text = fields.get("message") or " ".join(
                f"{k}={v}" for k, v in fields.items() if v is not None
            )
            self._write(f"batchgen: {event.replace('_', ' ')}: {text}")
        self._update_bars(event)
        if self.mode == "lines" and self._begun:  # before begin() there is nothing to count
            now = self.clock()
            if now - self._last_status >= self.status_interval:
                self._last_status = now
                self._write_status()

    def warn(self, message: str) -> None:
        if self.json:
            self.emit("warning", message=message)
        elif not self.quiet:
            self._write(f"Warning: {message}")

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
        if self.json:  # the log stays one JSON object per line
            record = {"ts": _utc_stamp(), "event": "status", "message": self.status_line()}
            self._write(json.dumps(record, ensure_ascii=False))
        else:
            self._write(self.status_line())

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

    def _write(self, line: str) -> None:
        if self._bars:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


def _utc_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
