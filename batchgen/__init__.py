"""batchgen: batch image generation through the Rivya Public API v1.

The Python API (see README.md, "Python API")::

    import batchgen
    result = batchgen.run("jobs/sample.toml", simulate=True)
    result.to_pandas()
"""

from batchgen.api import EstimateResult, Result, arun, estimate, run, status
from batchgen.errors import BatchgenError, UsageError

__version__ = "0.1.0"

__all__ = [
    "BatchgenError",
    "EstimateResult",
    "Result",
    "UsageError",
    "__version__",
    "arun",
    "estimate",
    "run",
    "status",
]
