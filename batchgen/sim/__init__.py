"""A local Rivya Public API v1 (``batchgen sim``), built from the contract in rivya-api.md.

::

    async with SimServer(SimConfig(latency=0.1, rate=None)) as srv:
        ...  # talk to srv.base_url with srv.api_key; assert on srv.sim.ledger.snapshot()
"""

from batchgen.sim.app import SCOPES, Simulator
from batchgen.sim.faults import RateLimiter, TokenBucket
from batchgen.sim.server import SimServer, SimThread
from batchgen.sim.state import (
    ALL_SCOPES,
    DEFAULT_ACCOUNT,
    RUNTIME_KNOBS,
    AccountConfig,
    FakeClock,
    KeyConfig,
    Ledger,
    SimConfig,
)

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_ACCOUNT",
    "RUNTIME_KNOBS",
    "SCOPES",
    "AccountConfig",
    "FakeClock",
    "KeyConfig",
    "Ledger",
    "RateLimiter",
    "SimConfig",
    "SimServer",
    "SimThread",
    "Simulator",
    "TokenBucket",
]
