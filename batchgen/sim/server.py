"""Running the simulator on 127.0.0.1: in the current loop (:class:`SimServer`) or in a
background thread with its own loop (:class:`SimThread`, for tests that drive a CLI subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from batchgen.job.catalog import Catalog
from batchgen.sim.app import Simulator
from batchgen.sim.state import SimConfig


class SimServer:
    """The simulator served over real HTTP; an async context manager.

    ``async with SimServer(SimConfig(...)) as srv:`` gives ``srv.base_url``, ``srv.api_key`` and
    ``srv.sim`` (the :class:`Simulator`, whose ``ledger`` tests read). Port 0 = ephemeral.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        catalog: Catalog | None = None,
        access_log: bool = False,
    ) -> None:
        self.sim = Simulator(config, clock=clock, catalog=catalog)
        self.host = host
        self.port = port
        self._access_log = access_log
        self._runner: web.AppRunner | None = None

    @property
    def config(self) -> SimConfig:
        """The simulator's configuration (knobs may be changed while it runs)."""
        return self.sim.config

    def set_catalog(self, catalog: Catalog) -> None:
        """Serve and enforce ``catalog`` from now on (a changed price, a new model, ...)."""
        self.sim.set_catalog(catalog)

    @property
    def api_key(self) -> str:
        """A ready key of the default account, with every scope."""
        return self.sim.api_key

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving."""
        kwargs: dict[str, Any] = {"handle_signals": False}
        if not self._access_log:
            kwargs["access_log"] = None
        runner = web.AppRunner(self.sim.make_app(), **kwargs)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def close(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SimThread:
    """A :class:`SimServer` running in a background thread with its own event loop.

    ``with SimThread(SimConfig(...)) as srv:`` gives ``srv.base_url``, ``srv.api_key`` and
    ``srv.sim``; read ``srv.sim.ledger.snapshot()`` (or :meth:`snapshot`) from any thread.
    """

    def __init__(self, config: SimConfig | None = None, **kwargs: Any) -> None:
        self.server = SimServer(config, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def sim(self) -> Simulator:
        """The simulator (its ledger is safe to read from any thread)."""
        return self.server.sim

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self.server.base_url

    @property
    def api_key(self) -> str:
        """A ready key of the default account."""
        return self.server.api_key

    def snapshot(self) -> dict[str, Any]:
        """The ledger snapshot, thread-safe."""
        return self.sim.ledger.snapshot()

    def start(self, timeout: float = 30.0) -> None:
        """Start the thread and wait until the server listens."""
        self._thread = threading.Thread(target=self._run, name="batchgen-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator thread did not start in time")
        if self._error is not None:
            raise RuntimeError(f"simulator thread failed to start: {self._error}") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> SimThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
