"""One run of a job at a time: an advisory ``flock`` on ``<journal>.lock``.

The kernel drops the lock when its holder dies (crash, SIGKILL), so a lock left by a crashed run
is never stale: the next run takes it and says whose it was.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from batchgen.errors import BatchgenError


class LockHeld(BatchgenError):
    """Another live process runs this job."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"this job is already running ({who}, lock {path}): wait for it to finish, "
            "or stop it; runs of one job never overlap"
        )


class JobLock:
    """Exclusive lock of a job, held for the life of a run."""

    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path.with_name(journal_path.name + ".lock")
        self.fd: int | None = None
        self.previous_pid: int | None = None  # a crashed holder whose lock we took over

    def acquire(self) -> JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(self.path, pid) from None
        old = _read_pid(fd)
        if old and old != os.getpid():
            self.previous_pid = old  # a clean release empties the file: its holder crashed
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
