"""Typed records of the API's answers (task, uploaded file) and client counters.

Parsing is tolerant: unknown fields are ignored and a few other spellings of ``id``/``url`` are
accepted, so the client keeps working when the service adds fields (rivya-api.md).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from batchgen.errors import TransportError

TERMINAL = frozenset({"succeeded", "failed"})
"""Task statuses after which a task never changes."""


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def first_of(payload: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = payload.get(key)
        if value is not None and value != "":
            return value
    return None


def unwrap(payload: Any, *wrappers: str) -> Mapping[str, Any]:
    """The object itself, or the one inside ``{"data": {...}}``-like envelopes."""
    if not isinstance(payload, Mapping):
        raise TransportError(f"unexpected response: a JSON {type(payload).__name__}, not an object")
    if "id" not in payload:
        for key in wrappers:
            inner = payload.get(key)
            if isinstance(inner, Mapping):
                return inner
    return payload


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Task:
    """The public task object of ``POST``/``GET /api/v1/generations``; unknown fields ignored."""

    id: str
    status: str
    model: str | None
    reserved_credits: int
    final_credits: int
    created_at: str | None
    updated_at: str | None
    primary_url: str | None
    urls: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """True once the task has succeeded or failed."""
        return self.status in TERMINAL

    @property
    def seconds_to_done(self) -> float | None:
        """``updated_at - created_at`` of a terminal task (server clock), else None."""
        if self.status not in TERMINAL:
            return None
        start, end = _parse_time(self.created_at), _parse_time(self.updated_at)
        return None if start is None or end is None else max(0.0, end - start)

    @classmethod
    def from_payload(cls, payload: Any) -> Task:
        """Parse a task object tolerantly; raises TransportError if it has no id or status."""
        obj = unwrap(payload, "data", "task", "generation")
        task_id, status = obj.get("id"), obj.get("status")
        if not isinstance(task_id, str) or not task_id or not isinstance(status, str):
            raise TransportError("unexpected response: a task object without id or status")
        result = obj.get("result")
        primary: str | None = None
        urls: tuple[str, ...] = ()
        if isinstance(result, Mapping):
            raw_urls = result.get("urls")
            if isinstance(raw_urls, list):
                urls = tuple(u for u in raw_urls if isinstance(u, str) and u)
            primary = as_str(first_of(result, "primary_url", "primaryUrl", "url")) or (
                urls[0] if urls else None
            )
            if primary and not urls:
                urls = (primary,)
        error = obj.get("error")
        code = message = None
        if isinstance(error, Mapping):
            code, message = as_str(error.get("code")), as_str(error.get("message"))
        elif isinstance(error, str):
            code = error
        return cls(
            id=task_id,
            status=status,
            model=as_str(obj.get("model")),
            reserved_credits=as_int(obj.get("reserved_credits")),
            final_credits=as_int(obj.get("final_credits")),
            created_at=as_str(obj.get("created_at")),
            updated_at=as_str(obj.get("updated_at")),
            primary_url=primary,
            urls=urls,
            error_code=code,
            error_message=message,
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """The answer of ``POST /api/v1/files``, tolerant of other names for its id and url."""

    id: str
    url: str
    kind: str | None
    name: str | None
    mime_type: str | None
    size: int | None
    sha256: str | None
    duration_token: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_payload(cls, payload: Any) -> UploadedFile:
        """Parse an upload answer; raises TransportError if it carries no url."""
        obj = unwrap(payload, "data", "file")
        url = first_of(
            obj, "url", "file_url", "fileUrl", "download_url", "downloadUrl", "public_url", "uri"
        )
        if not isinstance(url, str):
            raise TransportError("unexpected response: a file object without a url")
        size = first_of(obj, "size", "size_bytes", "sizeBytes", "bytes")
        return cls(
            id=as_str(first_of(obj, "id", "file_id", "fileId")) or "",
            url=url,
            kind=as_str(obj.get("kind")),
            name=as_str(first_of(obj, "name", "filename", "file_name", "fileName")),
            mime_type=as_str(first_of(obj, "mimeType", "mime_type", "content_type", "contentType")),
            size=None if size is None else as_int(size),
            sha256=as_str(obj.get("sha256")),
            duration_token=as_str(first_of(obj, "duration_token", "durationToken")),
            raw=obj,
        )


@dataclass(slots=True)
class ClientStats:
    """Counters of one client (every attempt counts, retries included)."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    retries: int = 0
    transport_errors: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy."""
        return {
            "requests": dict(self.requests),
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "rate_limited": self.rate_limited,
            "retries": self.retries,
            "transport_errors": self.transport_errors,
        }


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds == seconds else None
