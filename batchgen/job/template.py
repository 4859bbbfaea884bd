"""Prompt templates: ``{column}`` placeholders over a manifest row's cells."""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping
from dataclasses import dataclass

from batchgen.errors import UsageError


@dataclass(frozen=True)
class Template:
    """A parsed prompt template: literal text and ``{column}`` placeholders."""

    parts: tuple[tuple[str, str | None], ...]  # (literal, column or None)

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        """Columns used, in order of first use."""
        return tuple(dict.fromkeys(c for _, c in self.parts if c is not None))

    def render(self, cells: Mapping[str, str]) -> str:
        """Fill the placeholders with ``cells`` (stripped)."""
        return "".join(lit + (cells.get(col, "").strip() if col else "") for lit, col in self.parts)


@functools.lru_cache(maxsize=64)
def parse_template(text: str, where: str = "generation.template") -> Template:
    """Parse ``{column}`` placeholders (``{{``/``}}`` are literal braces); UsageError if bad.

    Parsed once per text: settings validation and every manifest reader share the result.
    """
    fix = "use {column} placeholders, and {{ or }} for literal braces"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UsageError(f"prompt template is malformed: {exc}", where, fix) from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        if not name.strip() or name.isdigit():
            raise UsageError(
                "prompt template has an empty or numbered placeholder {" + name + "}", where, fix
            )
        if spec or conversion:
            raise UsageError(
                f"prompt template placeholder {{{name}}} has a format spec or conversion",
                where,
                "use a plain {column} placeholder",
            )
        parts.append((literal, name))
    return Template(tuple(parts))
