"""The secret API key, and the one reader of API-key files.

The key is read from a flag, an environment variable or a file (job.settings decides which), and
from then on travels only as an :class:`ApiKey`, which masks itself in ``repr`` and ``str``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchgen.errors import UsageError

KEY_PREFIX = "rvya_sk_"
REDACTED = "…(redacted)"


class ApiKey:
    """A secret API key: masked in ``repr``/``str``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise ValueError("an API key cannot be empty")
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the Authorization header only."""
        return self._value

    def __repr__(self) -> str:
        return f"ApiKey({self!s})"

    def __str__(self) -> str:
        return (KEY_PREFIX if self._value.startswith(KEY_PREFIX) else "") + REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ApiKey, (self._value,))

    @classmethod
    def from_env_or_file(cls, value: str | None, file: Path | None) -> ApiKey | None:
        """The key from ``value`` (a flag or environment variable) if set, else from ``file``.

        Returns None when neither is given. Raises :class:`UsageError` when the file is missing,
        unreadable or empty (never quoting its content).
        """
        if value is not None and value.strip():
            return cls(value)
        if file is None:
            return None
        path = Path(file).expanduser()
        return cls(read_key_file(path, str(path)))


def read_key_file(path: Path, where: str) -> str:
    """The key held by ``path`` (its first line), or a :class:`UsageError` naming ``where``.

    The file's content is never quoted in an error.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"API key file {path} not found",
            where,
            "create it with your rvya_sk_... key on one line, or set RIVYA_API_KEY",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(
            f"cannot read API key file {path}: {reason}",
            where,
            "check the file and its permissions",
        ) from None
    lines = text.strip().splitlines()
    if not lines:
        raise UsageError(f"API key file {path} is empty", where, "put your rvya_sk_... key in it")
    return lines[0].strip()
