"""Coercion of setting values (from flags, environment or TOML) with errors that name the source.

Every function takes a :class:`Value` (the raw value, where it came from, the folder relative paths
are resolved against) and raises :class:`~batchgen.errors.UsageError` naming ``Value.where``.
"""

from __future__ import annotations

import codecs
import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from batchgen.errors import UsageError

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", ""})
ENCODING_FIX = "give e.g. utf-8, cp1252 (Windows spreadsheet exports), latin-1 or utf-16"


class Value(NamedTuple):
    value: Any
    where: str  # "--flag", "ENV_VAR", "file.toml: section.key" or "default"
    base: Path | None  # folder relative paths are resolved against (None for defaults)


def suggest(word: str, choices: Mapping[str, Any] | list[str], label: str) -> str:
    names = sorted(choices)
    close = difflib.get_close_matches(word, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}{label}: {', '.join(names)}"


def as_int(v: Value, minimum: int) -> int:
    value = v.value
    if isinstance(value, bool):
        raise UsageError(f"expected a whole number, got {value!r}", v.where, "give e.g. 8")
    if isinstance(value, str):
        try:
            value = int(value.strip().replace("_", ""))
        except ValueError:
            raise UsageError(
                f"expected a whole number, got {v.value!r}", v.where, "give e.g. 8"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise UsageError(f"expected a whole number, got {v.value!r}", v.where, "give e.g. 8")
    if value < minimum:
        raise UsageError(
            f"must be at least {minimum}, got {value}", v.where, f"give a number >= {minimum}"
        )
    return value


def as_float(v: Value, *, what: Any = None) -> float:
    value = v.value if what is None else what
    if isinstance(value, bool):
        raise UsageError(f"expected a number, got {value!r}", v.where, "give e.g. 2.5")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(
                f"expected a number, got {value!r}", v.where, "give e.g. 2.5"
            ) from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"expected a number, got {value!r}", v.where, "give e.g. 2.5")
    if value < 0:
        raise UsageError(f"must not be negative, got {value}", v.where, "give a number >= 0")
    return float(value)


def as_range(v: Value) -> tuple[float, float]:
    value = v.value
    if isinstance(value, str):
        value = [part for part in value.replace(" ", "").split(",")]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise UsageError(
            f"expected two numbers [min, max], got {v.value!r}",
            v.where,
            "give e.g. [5.0, 10.0] in a job file or 5,10 on the command line",
        )
    low, high = (as_float(v, what=x) for x in value)
    if low > high:
        raise UsageError(
            f"min {low:g} is more than max {high:g}", v.where, "give [min, max] with min <= max"
        )
    if high == 0:
        raise UsageError("poll delays must not both be 0", v.where, "give e.g. [5.0, 10.0]")
    return (low, high)


def as_bool(v: Value) -> bool:
    if isinstance(v.value, bool):
        return v.value
    if isinstance(v.value, str) and v.value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return v.value.strip().lower() in TRUE_WORDS
    raise UsageError(f"expected true or false, got {v.value!r}", v.where, "give true or false")


def as_str(v: Value, *, optional: bool) -> str | None:
    if v.value is None:
        return None
    if not isinstance(v.value, str):
        raise UsageError(f"expected text, got {v.value!r}", v.where, "quote the value")
    if optional and not v.value.strip():
        return None
    return v.value


def as_choice(text: str, choices: tuple[str, ...], where: str) -> str:
    if text.strip() in choices:
        return text.strip()
    close = difflib.get_close_matches(text, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown value {text!r}", where, f"{hint}choose one of {', '.join(choices)}")


def as_encoding(v: Value) -> str:
    """A text encoding's canonical codec name (``UTF8`` -> ``utf-8``, ``latin1`` -> ``iso8859-1``)."""
    if not isinstance(v.value, str) or not v.value.strip():
        raise UsageError(f"expected an encoding name, got {v.value!r}", v.where, ENCODING_FIX)
    try:
        info = codecs.lookup(v.value.strip())
    except LookupError:
        raise UsageError(f"unknown encoding {v.value!r}", v.where, ENCODING_FIX) from None
    if not info._is_text_encoding:  # type: ignore[attr-defined]
        raise UsageError(f"{v.value!r} is not a text encoding", v.where, ENCODING_FIX)
    return "utf-8" if info.name == "utf-8-sig" else info.name  # utf-8 reads a BOM anyway


def as_delimiter(v: Value) -> str:
    """One delimiter character (``tab`` or ``\\t`` for a tab), or ``auto``."""
    value = v.value
    if isinstance(value, str) and value.strip().lower() in ("auto", "tab", "\\t"):
        return "auto" if value.strip().lower() == "auto" else "\t"
    if not isinstance(value, str) or len(value) != 1 or value in ('"', "\r", "\n"):
        raise UsageError(
            f"delimiter must be one character or auto, got {value!r}",
            v.where,
            "give e.g. ';', tab or auto (sniffs , ; tab or pipe from the header)",
        )
    return value


def as_str_list(v: Value) -> tuple[str, ...]:
    value = v.value
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",") if x.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
        raise UsageError(
            f"expected a list of column names, got {v.value!r}",
            v.where,
            'give e.g. ["title", "category"]',
        )
    return tuple(value)


def expand_path(path: Path, base: Path, home: str | None) -> Path:
    text = str(path)
    if text == "~" or text.startswith("~/"):
        path = Path(home) / text[2:] if home else path.expanduser()
    elif text.startswith("~"):
        path = path.expanduser()
    return path if path.is_absolute() else base / path


# --------------------------------------------------------------------------- params
