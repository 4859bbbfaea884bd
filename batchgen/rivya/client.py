"""The only code that speaks HTTP: a thin async client of the Rivya Public API v1.

:class:`RivyaClient` owns one ``aiohttp.ClientSession`` (pooled connections, explicit timeouts),
builds URLs and headers, maps answers to typed records (:class:`Task`, :class:`UploadedFile`) and
errors to :mod:`batchgen.errors` classes by ``error.code``. Library exceptions (connection
refused or dropped, timeouts, a 2xx body that is not JSON) are translated into
:class:`~batchgen.errors.TransportError` at one choke point, :meth:`RivyaClient._send`.

Every request passes through the optional :class:`~batchgen.rivya.budget.RequestBudget` with a
priority (poll > submit > upload > other) and reports its outcome to it. Retries happen here,
per :mod:`batchgen.rivya.retry`. The API key never appears in a repr, str or exception message.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from batchgen.errors import (
    ApiError,
    NotSentError,
    TooLargeError,
    TransportError,
    UsageError,
    api_error_class,
)
from batchgen.job.apikey import ApiKey
from batchgen.rivya.budget import Priority, RequestBudget
from batchgen.rivya.records import (
    TERMINAL,
    ClientStats,
    Task,
    UploadedFile,
    as_int,
    as_str,
    first_of,
    parse_retry_after,
    unwrap,
)
from batchgen.rivya.retry import DISABLED_CODE, RetryPolicy, retry_delay, should_retry

__all__ = [
    "TERMINAL",
    "ApiKey",
    "ClientStats",
    "RivyaClient",
    "Task",
    "UploadedFile",
    "parse_retry_after",
]

API_PREFIX = "/api/v1"
USER_AGENT = "batchgen/0.1"
MAX_ERROR_TEXT = 300
"""Characters of an error message (or of a non-JSON error body) kept in an exception."""
MEDIA_CHUNK = 256 * 1024

# Library exceptions that mean "no usable answer". ValueError covers a 2xx body that is not
# JSON (json.JSONDecodeError, UnicodeDecodeError) and aiohttp's InvalidURL.
_TRANSPORT_EXCEPTIONS = (aiohttp.ClientError, TimeoutError, OSError, ValueError)


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Media:
    """The answer to a media GET: its status (304: not modified, empty body), body, content
    type without parameters, and the validators that allow a conditional GET later."""

    status: int
    body: bytes
    content_type: str | None
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class _NoSlot:
    __slots__ = ()
    started = None

    async def __aenter__(self) -> _NoSlot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_SLOT = _NoSlot()
_PRIORITY = {
    "poll": Priority.POLL,
    "create": Priority.SUBMIT,
    # An upload is what a waiting submission needs next; bounded by upload_concurrency it goes
    # with the polls, ahead of the creates, so uploads overlap the submissions instead of
    # waiting behind every create of a row without a reference.
    "upload": Priority.POLL,
}
GATED = frozenset({"create", "upload"})
"""Endpoints that start new work (and spend credits or storage): checked against ``gate``."""


class RivyaClient:
    """Async client of the Rivya Public API v1; use as ``async with RivyaClient(...) as c``."""

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey | str | None,
        *,
        budget: RequestBudget | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, immutable default
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_connections: int = 100,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(
                f"not an http(s) base URL: {base_url!r}", "api.base_url", "e.g. https://rivya.ai"
            )
        self._origin = (parts.scheme, parts.netloc.lower())
        self._api = self.base_url + API_PREFIX
        self._key = ApiKey(api_key) if isinstance(api_key, str) else api_key
        self.budget = budget
        self.retry = retry
        self.stats = ClientStats()
        # Asked once a create or upload holds its request slot, right before it is sent: False
        # means the run stopped submitting, and the request is dropped (NotSentError).
        self.gate: Callable[[], bool] | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._max_connections = max_connections
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        auth = {"Authorization": f"Bearer {self._key.reveal()}"} if self._key else {}
        self._h_auth: dict[str, str] = {**auth, "Accept": "application/json"}
        self._h_json: dict[str, str] = {**self._h_auth, "Content-Type": "application/json"}
        self._h_public: dict[str, str] = {"Accept": "application/json"}

    def __repr__(self) -> str:
        return f"RivyaClient(base_url={self.base_url!r}, api_key={self._key!r})"

    async def __aenter__(self) -> RivyaClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session and its connections (idempotent)."""
        session, self._session = self._session, None
        if self.budget is not None:
            self.budget.close()
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
            )
        return self._session

    # -- endpoints ---------------------------------------------------------------------------

    async def list_models(self) -> dict[str, Any]:
        """``GET /api/v1/models`` (public, sent without a key): the raw payload."""
        payload = await self._json("models", "GET", "/models", self._h_public)
        if not isinstance(payload, dict):
            raise TransportError("unexpected response: the models payload is not an object")
        return payload

    async def get_models(
        self, *, etag: str | None = None, last_modified: str | None = None
    ) -> Media:
        """``GET /api/v1/models`` without a key, conditional when given the validators of an
        earlier answer: a 304 comes back as ``not_modified`` with an empty body. The body is
        left unparsed (the caller judges it: a malformed catalog is not a transport error)."""
        return await self._conditional_get(
            "models",
            self._api + "/models",
            dict(self._h_public),
            etag,
            last_modified,
            use_budget=False,
        )

    async def upload_file(
        self,
        data: bytes,
        *,
        filename: str,
        kind: str,
        mime_type: str,
        model: str | None = None,
        client_request_id: str | None = None,
    ) -> UploadedFile:
        """``POST /api/v1/files`` (multipart). Retried on transient errors: a duplicate upload
        costs nothing."""

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("file", data, filename=filename, content_type=mime_type)
            fd.add_field("kind", kind)
            if model:
                fd.add_field("model", model)
            if client_request_id:
                fd.add_field("client_request_id", client_request_id)
            return fd

        payload = await self._json("upload", "POST", "/files", self._h_auth, form=form)
        return UploadedFile.from_payload(payload)

    async def get_file(self, file_id: str) -> UploadedFile:
        """``GET /api/v1/files/{fileId}``."""
        payload = await self._json("file", "GET", "/files/" + quote(file_id, safe=""), self._h_auth)
        return UploadedFile.from_payload(payload)

    async def create_generation(
        self, body: Mapping[str, Any], *, idempotency_key: str | None
    ) -> Task:
        """``POST /api/v1/generations``; any 2xx is accepted. Retried on 5xx and transport
        errors only when ``idempotency_key`` is given (429 is always safe to retry)."""
        headers = self._h_json
        if idempotency_key:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        payload = await self._json(
            "create", "POST", "/generations", headers, data=data, idempotent=bool(idempotency_key)
        )
        return Task.from_payload(payload)

    async def get_generation(self, task_id: str) -> Task:
        """``GET /api/v1/generations/{taskId}``."""
        path = "/generations/" + quote(task_id, safe="")
        return Task.from_payload(await self._json("poll", "GET", path, self._h_auth))

    async def get_credits(self) -> int:
        """``GET /api/v1/credits``: the current balance."""
        payload = await self._json("credits", "GET", "/credits", self._h_auth)
        obj = unwrap(payload, "data")
        value = first_of(obj, "current_credits", "currentCredits", "credits", "balance")
        if value is None:
            raise TransportError("unexpected response: no current_credits in the credits answer")
        return as_int(value)

    async def fetch(self, url: str, *, max_bytes: int) -> tuple[bytes, str | None]:
        """Download result media: ``(bytes, content type without parameters)``.

        The Authorization header is sent only to the API's own origin (and aiohttp drops it on a
        redirect to another origin); only same-origin downloads draw from the request budget.
        A body over ``max_bytes`` raises TooLargeError and is not retried; an expired URL
        gives an ApiError such as code ``http_404`` / ``http_403``.
        """
        media = await self.fetch_media(url, max_bytes=max_bytes)
        return media.body, media.content_type

    async def fetch_media(
        self,
        url: str,
        *,
        max_bytes: int,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> Media:
        """:meth:`fetch` with the whole answer; given ``etag`` or ``last_modified`` (validators
        of an earlier answer), a conditional GET whose 304 comes back as ``not_modified``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TransportError(f"cannot download {url[:200]!r}: not an http(s) URL")
        same = (parts.scheme, parts.netloc.lower()) == self._origin
        headers = dict(self._h_auth) if same else {}
        return await self._conditional_get(
            "media", url, headers, etag, last_modified, max_bytes=max_bytes, use_budget=same
        )

    async def _conditional_get(
        self,
        endpoint: str,
        url: str,
        headers: dict[str, str],
        etag: str | None,
        last_modified: str | None,
        **call: Any,
    ) -> Media:
        """A GET whose answer is kept whole; with validators of an earlier answer it is
        conditional, and a 304 comes back as a Media with an empty body."""
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            status, resp_headers, body = await self._call(endpoint, "GET", url, headers, **call)
        except ApiError as exc:
            if exc.status != 304 or not (etag or last_modified):
                raise
            status, resp_headers, body = 304, exc.headers, b""
        ctype = resp_headers.get("Content-Type")
        return Media(
            status=status,
            body=body,
            content_type=(ctype.split(";", 1)[0].strip().lower() or None) if ctype else None,
            etag=resp_headers.get("ETag"),
            last_modified=resp_headers.get("Last-Modified"),
        )

    # -- request machinery -------------------------------------------------------------------

    async def _json(
        self,
        endpoint: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        data: bytes | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        idempotent: bool = True,
    ) -> Any:
        _status, _headers, payload = await self._call(
            endpoint,
            method,
            self._api + path,
            headers,
            data=data,
            form=form,
            idempotent=idempotent,
            parse=True,
        )
        return payload

    async def _call(
        self,
        endpoint: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        data: bytes | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        idempotent: bool = True,
        parse: bool = False,
        max_bytes: int | None = None,
        use_budget: bool = True,
    ) -> tuple[int, Mapping[str, str], Any]:
        """Send with retries per the policy; returns ``(status, headers, payload)`` of a 2xx."""
        budget = self.budget if use_budget else None
        priority = _PRIORITY.get(endpoint, Priority.OTHER)
        attempt = 0
        while True:
            attempt += 1
            error: ApiError | TransportError
            try:
                status, resp_headers, payload, retry_after = await self._send(
                    endpoint, method, url, headers, data, form, budget, priority, parse, max_bytes
                )
            except TransportError as exc:
                error, retry_after = exc, None
            except _TooLarge:
                raise TooLargeError(
                    f"{method} {endpoint}: the body is larger than {max_bytes} bytes",
                    limit=max_bytes or 0,
                ) from None
            else:
                if 200 <= status < 300:
                    return status, resp_headers, payload
                error = self._api_error(status, resp_headers, payload, retry_after)
            if not should_retry(error, attempt, idempotent=idempotent, policy=self.retry):
                raise error
            code = error.code if isinstance(error, ApiError) else None
            delay = retry_delay(attempt, retry_after, policy=self.retry, rng=self._rng, code=code)
            self.stats.retries += 1
            if budget is not None and error.status != 429 and code != DISABLED_CODE:
                # Retries of server faults draw on the retry budget, so an outage meets a
                # bounded trickle of retries rather than a storm; 429s are paced by the rate.
                await budget.retry_permit()
            await self._sleep(delay)

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: bytes | None,
        form: Callable[[], aiohttp.FormData] | None,
        budget: RequestBudget | None,
        priority: int,
        parse: bool,
        max_bytes: int | None,
    ) -> tuple[int, Mapping[str, str], Any, float | None]:
        """One attempt: the single place where library exceptions become TransportError.

        (aiohttp itself replays a GET once when a pooled keep-alive connection turns out to be
        closed, RFC 9112 9.3.1; that replay is below this layer and never applies to a POST.)
        """
        session = self._session or self._open()
        slot = budget.slot(priority) if budget is not None else _NO_SLOT
        async with slot:
            if endpoint in GATED and self.gate is not None and not self.gate():
                raise NotSentError(endpoint)
            # Counted here, once the request really goes out: a request cancelled while it
            # waited for its slot (SIGINT) was never seen by the service and is not counted.
            self.stats.requests[endpoint] += 1
            try:
                async with session.request(
                    method,
                    url,
                    data=form() if form is not None else data,
                    headers=headers,
                    allow_redirects=max_bytes is not None,
                ) as resp:
                    status = resp.status
                    resp_headers = resp.headers
                    if max_bytes is None:
                        body = await resp.read()
                    else:
                        body = await self._read_limited(resp, max_bytes)
                payload = json.loads(body) if parse and 200 <= status < 300 else body
            except _TRANSPORT_EXCEPTIONS as exc:
                self.stats.transport_errors += 1
                if budget is not None:
                    budget.on_response(None, None, None, started=slot.started)
                # A ClientResponseError's request_info holds our request headers (the key):
                # do not chain it. Everything else is chained for debugging.
                cause = None if isinstance(exc, aiohttp.ClientResponseError) else exc
                raise TransportError(self._describe(method, url, exc)) from cause
            self.stats.responses[status] += 1
            retry_after = None
            if status == 429 or status >= 500:
                retry_after = parse_retry_after(resp_headers.get("Retry-After"))
                if status == 429:
                    self.stats.rate_limited += 1
            if budget is not None:
                budget.on_response(status, resp_headers, retry_after, started=slot.started)
            return status, resp_headers, payload, retry_after

    @staticmethod
    async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
        length = resp.content_length
        if length is not None and length > max_bytes and 200 <= resp.status < 300:
            raise _TooLarge
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.content.iter_chunked(MEDIA_CHUNK):
            total += len(chunk)
            if total > max_bytes and 200 <= resp.status < 300:
                raise _TooLarge
            if total <= max_bytes:
                chunks.append(chunk)
        return b"".join(chunks)

    def _api_error(
        self, status: int, headers: Mapping[str, str], body: bytes, retry_after: float | None
    ) -> ApiError:
        """Map a non-2xx answer to an ApiError subclass by ``error.code`` (HTML bodies too)."""
        code = message = request_id = None
        try:
            obj = json.loads(body) if body else None
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            err = obj.get("error")
            if isinstance(err, dict):
                code = as_str(err.get("code"))
                message = as_str(err.get("message"))
                request_id = as_str(err.get("requestId") or err.get("request_id"))
            elif isinstance(err, str):
                code = err
            message = message or as_str(obj.get("message"))
        if not code:
            code = f"http_{status}"
        if not message:
            text = body[:MAX_ERROR_TEXT].decode("utf-8", "replace").strip() if body else ""
            kind = "an empty body" if not text else "a non-JSON body" if obj is None else "a body"
            message = f"HTTP {status} with {kind}" + (f": {' '.join(text.split())}" if text else "")
        request_id = request_id or headers.get("X-Request-Id")
        if retry_after is None:
            retry_after = parse_retry_after(headers.get("Retry-After"))
        return api_error_class(code, status)(
            self._redact(message[:MAX_ERROR_TEXT]),
            status=status,
            code=code,
            request_id=request_id,
            retry_after=retry_after,
            headers=dict(headers),
        )

    def _describe(self, method: str, url: str, exc: BaseException) -> str:
        path = url[len(self.base_url) :] if url.startswith(self.base_url) else url
        detail = str(exc).strip()
        if isinstance(exc, TimeoutError) and not detail:
            detail = f"timed out after {self._timeout.total:g}s"
        elif isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError):
            detail = f"the answer is not valid JSON ({detail[:120]})"
        text = f"{method} {path[:200]}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        return self._redact(text[:MAX_ERROR_TEXT])

    def _redact(self, text: str) -> str:
        if self._key is not None:
            secret = self._key.reveal()
            if secret in text:
                text = text.replace(secret, str(self._key))
        return text
