"""batchgen: batch image generation through the Rivya Public API v1.

The package is laid out by stage (docs/architecture.md): ``job/`` what the user asks for,
``rivya/`` how we speak to the service, ``pipeline/`` running a job, ``store/`` what lasts,
``views/`` what people see, ``sim/`` the local simulator of the service.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchgen")  # one owner: pyproject.toml
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"
