"""Download file names from ``output.download_name``: a template over the row's columns,
``{key}``, ``{variant}``, the variant axes (``{style}``, ``{image_size}``, ``{candidate}``, ...)
and ``{ext}``.

Every value is made safe for any file system before it goes into the name: ASCII letters, digits
and ``._-`` only (``16:9`` becomes ``16x9``), never empty, never ``.`` or ``..``, so a value can
never add a folder or climb out of the download folder; only the template's own ``/`` make
folders. Two tasks that would get one name are a usage error found by the scan, before anything
is sent (see :class:`NameRegistry`).
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from batchgen.errors import UsageError

DEFAULT_VARIANT_NAME = "{key}/{variant}.{ext}"
"""The default name of a job with variants (a job without keeps ``<key>-<hash>.<ext>``)."""
EXT_MARK = "\x1fext\x1f"
"""Stands for the extension in a stored name until the result's real format is known."""
VALUE_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class NameTemplate:
    """A parsed download-name template: (literal, placeholder or None) parts."""

    text: str
    parts: tuple[tuple[str, str | None], ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for _, f in self.parts if f is not None))

    def render(self, values: Mapping[str, str]) -> str:
        """The relative path of one task, with :data:`EXT_MARK` for ``{ext}``."""
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name == "ext":
                out.append(EXT_MARK)
            elif name is not None:
                out.append(safe_value(values.get(name, "")))
        return "".join(out)


@functools.lru_cache(maxsize=4096)
def safe_value(value: str) -> str:
    """One placeholder's value as a safe piece of a file name (no separators, no dot names)."""
    text = value if value.isascii() else unicodedata.normalize("NFKD", value)
    text = text.encode("ascii", "ignore").decode("ascii").replace(":", "x")
    text = _UNSAFE.sub("_", text)[:VALUE_CHARS]
    if text in ("", ".", ".."):
        return "_"
    return "_" + text if text.startswith(".") else text


def parse_download_name(text: str, where: str) -> NameTemplate:
    """Parse and check a template; UsageError names the setting and the fix."""
    fix = "use {column}, {key}, {variant}, an axis such as {image_size}, and {ext}"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UsageError(f"download name template is malformed: {exc}", where, fix) from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if spec or conversion or (name is not None and (not name.strip() or name.isdigit())):
            raise UsageError(
                f"download name placeholder {{{name}}} is not a plain name", where, fix
            )
        if "\\" in literal or ":" in literal:
            raise UsageError(
                "download name template holds '\\' or ':'", where, "use / between folders"
            )
        parts.append((literal, name))
    shape = "".join(lit + ("x" if name is not None else "") for lit, name in parts)
    if shape.startswith("/") or any(seg in ("", ".", "..") for seg in shape.split("/")):
        raise UsageError(
            "download name template must stay inside the download folder",
            where,
            "remove the leading /, any empty, . or .. folder",
        )
    if not any(name is not None for _, name in parts):
        raise UsageError(
            "download name template has no placeholder, so every task would get one name",
            where,
            "use e.g. {key}/{variant}.{ext}",
        )
    return NameTemplate(text, tuple(parts))


def finish(name: str, ext: str) -> str:
    """A stored name with its extension filled in."""
    return name.replace(EXT_MARK, ext.lstrip("."))
