"""Processes on one machine that drive one account share its rate fairly: :class:`AccountShare`.

Several batchgen runs on one account (overlapping cron jobs, shards of one job) each discover the
account's limit on their own, as competing TCP flows do; alone, that converges on a fair share
only slowly (growth and decrease are both relative to each run's own rate). Runs on one machine
also publish what they get through a small folder keyed by the account, one file per process:

    <tmp>/batchgen-share-<uid>/<account digest>/<pid>-<token>   "accepted rate pressured time"

Each run reads the others' files now and then (``SYNC_INTERVAL``) and learns the *fair share*:
the rate the rate-bound runs get together, divided among them (runs that are not rate-bound keep
what they use, max-min fairness). The request budget then stops growing above the fair share and
eases down towards it; the 429s still set the total. Nothing is locked: each process writes only
its own file (written whole, then renamed), and files not refreshed for ``STALE`` seconds are
ignored (a crashed run) and removed later.

The folder name is a keyed digest of the base URL and the API key, never the key itself; the
files hold no secret. Any error of the file system turns sharing off for that run, silently: it is
an optimisation, never a reason to stop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SYNC_INTERVAL = 0.25
"""Seconds between two reads of the others' files (and writes of our own)."""
STALE = 2.0
"""A participant whose file is older than this many seconds is ignored..."""
FORGET = 60.0
"""...and its file removed once it is this old."""


def account_digest(base_url: str, api_key: str) -> str:
    """A name for the account: a keyed BLAKE2b of the base URL and the key (not reversible)."""
    h = hashlib.blake2b(digest_size=16, person=b"batchgen-share")
    h.update(base_url.rstrip("/").encode("utf-8") + b"\0" + api_key.encode("utf-8"))
    return h.hexdigest()


def default_folder() -> Path:
    """``<tmp>/batchgen-share-<uid>``: private to the user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"batchgen-share-{uid}"


class AccountShare:
    """One process's membership of an account's share folder (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        *,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        self.folder = folder
        self._clock = clock
        self._name = name or f"{os.getpid()}-{secrets.token_hex(4)}"
        self._path = folder / self._name
        self._next_sync = -float("inf")
        self.fair: float | None = None
        """The fair share of the account's rate (requests/s) for this process, or None when no
        other rate-bound process is known."""
        self.others = 0
        self.enabled = True

    @classmethod
    def for_account(
        cls, base_url: str, api_key: str, folder: Path | None = None
    ) -> AccountShare | None:
        """The share of the account behind ``base_url`` and ``api_key``; None if the folder
        cannot be made."""
        path = (folder or default_folder()) / account_digest(base_url, api_key)
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return None
        return cls(path)

    def due(self) -> bool:
        """Whether a :meth:`sync` is due."""
        return self.enabled and self._clock() >= self._next_sync

    def sync(self, accepted: float, pressured: bool) -> float | None:
        """Publish our accepted rate and whether we are rate-bound; return the fair share."""
        if not self.enabled:
            return None
        now = self._clock()
        self._next_sync = now + SYNC_INTERVAL
        try:
            self._write(f"{accepted:.3f} {int(pressured)} {now:.3f}\n")
            total_bound, n_bound, others = accepted if pressured else 0.0, int(pressured), 0
            for entry in os.scandir(self.folder):
                if entry.name == self._name or entry.name.startswith("."):
                    continue
                peer = self._read(entry, now)
                if peer is None:
                    continue
                others += 1
                rate, bound = peer
                if bound:
                    total_bound += rate
                    n_bound += 1
        except OSError:
            self.enabled, self.fair = False, None
            return None
        self.others = others
        self.fair = total_bound / n_bound if others and pressured and n_bound > 1 else None
        return self.fair

    def close(self) -> None:
        """Leave the share: remove our file, and the account's folder if nobody is left."""
        self.enabled, self.fair = False, None
        with contextlib.suppress(OSError):
            self._path.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # fails while another run's file is in it

    def _write(self, text: str) -> None:
        tmp = self.folder / f".{self._name}.tmp"
        try:
            tmp.write_text(text, encoding="ascii")
        except FileNotFoundError:  # the last run to leave removed the folder: make it again
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(text, encoding="ascii")
        os.replace(tmp, self._path)

    def _read(self, entry: os.DirEntry[str], now: float) -> tuple[float, bool] | None:
        try:
            with open(entry.path, encoding="ascii") as f:
                accepted, bound, at = f.read().split()
            age = now - float(at)
        except (OSError, ValueError):
            return None
        if age > FORGET:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        if age > STALE:
            return None
        return float(accepted), bound == "1"
