"""Files that may live in object storage: ``s3://``, ``gs://``, ``az://`` (read and write) and
``https://`` (read), through fsspec and the backend each scheme needs (``pip install
'batchgen[s3]'`` brings s3fs, ``[gcs]`` gcsfs, ``[azure]`` adlfs).

Credentials come from each backend's own chain (environment, config files, instance roles); this
module never takes, logs or stores one. Every backend exception is translated here, at one choke
point, into :class:`StorageError` (a :class:`~batchgen.errors.UsageError` for a file the user
named), with signed-URL query strings and anything that looks like a credential removed.

A remote manifest is copied once into a local spool file (re-used while the object's ETag, size
and modification time stay the same), so the readers keep streaming a local file in batches.
Writes of whole objects are atomic on object stores (an object appears whole or not at all).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from batchgen.errors import BatchgenError, UsageError

WRITABLE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})
"""Schemes batchgen reads and writes (``memory://`` is fsspec's in-process store)."""
READABLE_SCHEMES = WRITABLE_SCHEMES | {"http", "https"}
EXTRA_OF = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
EXTRA_OF["abfss"] = "azure"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_SECRET = re.compile(
    r"(?i)((?:x-amz-[a-z-]+|signature|awsaccesskeyid|sig|se|sv|sp|token|access_token|"
    r"x-goog-[a-z-]+|key)=)[^&\s'\"]+"
)


class StorageError(BatchgenError):
    """A remote file could not be read or written (not found, denied, unreachable)."""


def scheme(text: str) -> str | None:
    """The URL scheme of ``text`` in lower case, or None for a local path."""
    m = _SCHEME.match(text)
    return m.group(1).lower() if m else None


def is_store_url(text: str) -> bool:
    """An object-store URL (``s3://``, ``gs://``, ``az://``, ...), not http(s)."""
    return scheme(text) in WRITABLE_SCHEMES


def redact(text: str) -> str:
    """``text`` without signed-URL parameters and credential-like values."""
    return _SECRET.sub(r"\1***", text)


def join(base: str, name: str) -> str:
    """``name`` inside the folder URL ``base``."""
    return base.rstrip("/") + "/" + name.lstrip("/")


def parent(url: str) -> str:
    """The folder URL of ``url``."""
    head, _, _ = url.rstrip("/").rpartition("/")
    return head


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with every backend extra
        raise UsageError(
            "reading URLs needs fsspec", url, "pip install 'batchgen[s3]' (or [gcs], [azure])"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        extra = EXTRA_OF.get(scheme(url) or "", "s3")
        raise UsageError(
            f"no fsspec backend installed for {scheme(url)}:// URLs",
            url,
            f"pip install 'batchgen[{extra}]'",
        ) from None
    except ValueError as exc:
        raise UsageError(f"not a usable URL: {redact(str(exc))}", url, "check the URL") from None


def _failure(action: str, url: str, exc: BaseException) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        reason = "not found"
    elif isinstance(exc, PermissionError):
        reason = "access denied (check the credentials of the storage backend)"
    else:
        reason = redact(str(exc) or type(exc).__name__)
    return StorageError(f"cannot {action} {redact(url)}: {reason}")


def info(url: str) -> dict[str, Any]:
    """The object's metadata (size, ETag, modification time, as the backend gives them)."""
    fs, path = _fs(url)
    try:
        return dict(fs.info(path))
    except Exception as exc:  # the backend's exceptions, translated at this one point
        raise _failure("read", url, exc) from None


def read_bytes(url: str, *, max_bytes: int | None = None) -> bytes:
    """The whole object (at most ``max_bytes`` + 1 bytes are read, so a caller can tell)."""
    fs, path = _fs(url)
    try:
        with fs.open(path, "rb") as fh:
            return bytes(fh.read(-1 if max_bytes is None else max_bytes + 1))
    except Exception as exc:
        raise _failure("read", url, exc) from None


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole object (atomic on object stores: it appears whole or not at all)."""
    fs, path = _fs(url)
    try:
        fs.pipe_file(path, data)
    except Exception as exc:
        raise _failure("write", url, exc) from None


def exists(url: str) -> bool:
    fs, path = _fs(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        raise _failure("read", url, exc) from None


def upload(local: Path, url: str) -> None:
    """Copy the local file ``local`` to ``url`` (one whole object)."""
    fs, path = _fs(url)
    try:
        fs.put_file(str(local), path)
    except Exception as exc:
        raise _failure("write", url, exc) from None


# --------------------------------------------------------------------------- spooled manifests

_spool_lock = threading.Lock()
_spool_dir: Path | None = None
_spooled: dict[str, tuple[str, Path]] = {}


def _spool_folder() -> Path:
    global _spool_dir
    if _spool_dir is None:
        _spool_dir = Path(tempfile.mkdtemp(prefix="batchgen-spool-"))
        atexit.register(shutil.rmtree, _spool_dir, True)
    return _spool_dir


def spool(url: str, where: str) -> Path:
    """A local copy of the remote file ``url``, downloaded again only when it changed.

    ``where`` names the setting, for the error a user sees when the file cannot be read.
    """
    try:
        meta = info(url)
    except StorageError as exc:
        raise UsageError(str(exc), where, "check the URL and the storage credentials") from None
    version = "|".join(
        str(meta.get(k)) for k in ("ETag", "etag", "size", "LastModified", "mtime", "md5_hash")
    )
    with _spool_lock:
        known = _spooled.get(url)
        if known is not None and known[0] == version and known[1].exists():
            return known[1]
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + url.rsplit("/", 1)[-1]
        local = _spool_folder() / name
        fs, path = _fs(url)
        tmp = local.with_name(local.name + ".part")
        try:
            fs.get_file(path, str(tmp))
            tmp.replace(local)
        except Exception as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise UsageError(
                str(_failure("read", url, exc)), where, "check the URL and the storage credentials"
            ) from None
        _spooled[url] = (version, local)
        return local


_stdin_copy: Path | None = None


def stdin_copy() -> Path:
    """Standard input, copied once into a local spool file (``--manifest -``): a manifest is
    read more than once (its header, then its rows), which a pipe cannot be."""
    global _stdin_copy
    import sys

    with _spool_lock:
        if _stdin_copy is None:
            fd, name = tempfile.mkstemp(prefix="stdin-", dir=_spool_folder())
            with open(fd, "wb") as fh:
                shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
            _stdin_copy = Path(name)
        return _stdin_copy
