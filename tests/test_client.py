"""RivyaClient over real HTTP on 127.0.0.1, against tiny scripted aiohttp.web servers."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchgen.errors import (
    ApiError,
    AuthError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    UsageError,
    ValidationFailedError,
)
from batchgen.rivya.budget import RequestBudget
from batchgen.rivya.client import ApiKey, RivyaClient, Task, UploadedFile, parse_retry_after
from batchgen.rivya.retry import RetryPolicy

KEY = "rvya_sk_test_SECRET_0123456789abcdef"
TASK = {
    "id": "task_1",
    "status": "queued",
    "model": "qwen-image",
    "reserved_credits": 4,
    "final_credits": 0,
    "created_at": "2026-05-11T00:00:00.000Z",
    "updated_at": "2026-05-11T00:00:00.000Z",
    "result": None,
    "error": None,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def err(status: int, code: str, message: str = "nope", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = {"error": {"code": code, "message": message, "requestId": "req_42"}}
        return web.json_response(body, status=status, headers=headers)

    return handler


def ok(payload: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(payload, status=status)

    return handler


def raw(status: int, text: str, content_type: str = "text/html") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type=content_type)

    return handler


async def dropped(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    return web.Response(status=499)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.0)
    return web.json_response(TASK)


class Script:
    """Answers each (method, path) from a queue of handlers; the last one repeats."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], deque[Handler]] = defaultdict(deque)
        self.seen: list[Seen] = []

    def on(self, method: str, path: str, *handlers: Handler) -> Script:
        self.routes[(method, path)].extend(handlers)
        return self

    def count(self, method: str, path: str) -> int:
        return sum(1 for s in self.seen if (s.method, s.path) == (method, path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        queue = self.routes.get((request.method, request.path))
        if not queue:
            return web.json_response({"error": {"code": "not_found", "message": "?"}}, status=404)
        handler = queue.popleft() if len(queue) > 1 else queue[0]
        return await handler(request)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield script, str(srv.make_url("")).rstrip("/")
    finally:
        await srv.close()


class Sleeps:
    """A fake sleep that records the delays it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


RAISED: list[BaseException] = []


def no_key_in(exc: BaseException) -> BaseException:
    """Assert the key is nowhere in an exception (and its cause); keep it for a final check."""
    RAISED.append(exc)
    chain: BaseException | None = exc
    while chain is not None:
        for text in (repr(chain), str(chain), repr(getattr(chain, "headers", ""))):
            assert KEY not in text
        chain = chain.__cause__
    return exc


@pytest.fixture
async def client(server: tuple[Script, str]) -> AsyncIterator[RivyaClient]:
    _, base = server
    async with RivyaClient(base, KEY, sleep=Sleeps(), timeout=5.0) as c:
        yield c


def path(p: str) -> str:
    return "/api/v1" + p


# -- error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "api_key_missing", AuthError),
        (401, "api_key_invalid", AuthError),
        (401, "api_key_revoked", AuthError),
        (401, "api_key_expired", AuthError),
        (403, "api_scope_denied", AuthError),
        (400, "validation_failed", ValidationFailedError),
        (402, "insufficient_credits", InsufficientCreditsError),
        (400, "insufficient_credits", InsufficientCreditsError),
        (409, "idempotency_conflict", IdempotencyConflictError),
        (404, "not_found", NotFoundError),
        (418, "brand_new_code", ApiError),
        (429, "rate_limited", RateLimitedError),
        (500, "internal_error", ServerError),
        (503, "public_api_disabled", ServerError),
    ],
)
async def test_errors_map_by_code(
    server: tuple[Script, str], status: int, code: str, cls: type[ApiError]
) -> None:
    script, base = server
    script.on("GET", path("/generations/t1"), err(status, code, "told you"))
    async with RivyaClient(base, KEY, retry=RetryPolicy.none()) as c:
        with pytest.raises(cls) as info:
            await c.get_generation("t1")
    exc = no_key_in(info.value)
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.request_id) == (status, code, "req_42")
    assert exc.message == "told you"
    assert script.count("GET", path("/generations/t1")) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "validation_failed"),
        (401, "api_key_invalid"),
        (403, "api_scope_denied"),
        (402, "insufficient_credits"),
        (404, "not_found"),
        (409, "idempotency_conflict"),
        (422, "some_future_code"),
    ],
)
async def test_non_retryable_codes_are_sent_once(
    server: tuple[Script, str], client: RivyaClient, status: int, code: str
) -> None:
    script, _ = server
    script.on("POST", path("/generations"), err(status, code))
    with pytest.raises(ApiError) as info:
        await client.create_generation({"model": "qwen-image"}, idempotency_key="k1")
    assert no_key_in(info.value).code == code
    assert script.count("POST", path("/generations")) == 1
    assert client.stats.retries == 0


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "rate_limited"), (429, "slow_down"), (500, "internal_error"), (503, "weird_new")],
)
async def test_transient_errors_are_retried(
    server: tuple[Script, str], client: RivyaClient, status: int, code: str
) -> None:
    script, _ = server
    script.on("GET", path("/generations/t1"), err(status, code), err(status, code), ok(TASK))
    task = await client.get_generation("t1")
    assert task.id == "task_1"
    assert script.count("GET", path("/generations/t1")) == 3
    assert client.stats.retries == 2
    assert client.stats.responses[status] == 2 and client.stats.responses[200] == 1


async def test_retries_stop_at_max_attempts(server: tuple[Script, str]) -> None:
    script, base = server
    script.on("GET", path("/credits"), err(500, "internal_error"))
    sleeps = Sleeps()
    async with RivyaClient(base, KEY, sleep=sleeps, retry=RetryPolicy(max_attempts=3)) as c:
        with pytest.raises(ServerError) as info:
            await c.get_credits()
    no_key_in(info.value)
    assert script.count("GET", path("/credits")) == 3
    assert len(sleeps.delays) == 2
    assert all(0.0 <= d <= 1.0 for d in sleeps.delays)


async def test_html_502_body_is_a_server_error(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, base = server
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    script.on("GET", path("/generations/t1"), raw(502, page), ok(TASK))
    assert (await client.get_generation("t1")).id == "task_1"
    script.on("GET", path("/generations/t2"), raw(502, page))
    async with RivyaClient(base, KEY, retry=RetryPolicy.none()) as c:
        with pytest.raises(ServerError) as info:
            await c.get_generation("t2")
    exc = no_key_in(info.value)
    assert (exc.status, exc.code) == (502, "http_502")
    assert "non-JSON" in exc.message and "Bad Gateway" in exc.message


async def test_dropped_connection_is_a_transport_error(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, base = server
    # aiohttp itself replays a GET once on a dropped keep-alive connection (RFC 9112 9.3.1),
    # so it takes two drops in a row to reach the client's own retry
    script.on("GET", path("/generations/t1"), dropped, dropped, ok(TASK))
    assert (await client.get_generation("t1")).id == "task_1"
    assert client.stats.transport_errors == 1 and client.stats.retries == 1
    assert script.count("GET", path("/generations/t1")) == 3
    script.on("GET", path("/generations/t2"), dropped)
    async with RivyaClient(base, KEY, retry=RetryPolicy.none()) as c:
        with pytest.raises(TransportError) as info:
            await c.get_generation("t2")
    no_key_in(info.value)
    assert info.value.__cause__ is not None  # translated from the library's exception


async def test_timeout_is_a_transport_error(server: tuple[Script, str]) -> None:
    script, base = server
    script.on("GET", path("/generations/t1"), slow)
    async with RivyaClient(base, KEY, timeout=0.2, retry=RetryPolicy.none()) as c:
        with pytest.raises(TransportError) as info:
            await c.get_generation("t1")
    assert "timed out" in str(no_key_in(info.value)).lower() or "Timeout" in str(info.value)


async def test_invalid_json_on_2xx_is_a_transport_error(server: tuple[Script, str]) -> None:
    script, base = server
    script.on("GET", path("/generations/t1"), raw(200, "<html>maintenance</html>"), ok(TASK))
    async with RivyaClient(base, KEY, sleep=Sleeps()) as c:
        assert (await c.get_generation("t1")).id == "task_1"
    script.on("GET", path("/generations/t2"), raw(200, "{not json", "application/json"))
    async with RivyaClient(base, KEY, retry=RetryPolicy.none()) as c:
        with pytest.raises(TransportError, match="not valid JSON") as info:
            await c.get_generation("t2")
    no_key_in(info.value)
    # a JSON answer without the task's id is not the API's either
    script.on("GET", path("/generations/t3"), ok({"hello": "world"}))
    async with RivyaClient(base, KEY, retry=RetryPolicy.none()) as c:
        with pytest.raises(TransportError):
            await c.get_generation("t3")


async def test_connection_refused_is_a_transport_error() -> None:
    srv = TestServer(web.Application(), host="127.0.0.1")
    await srv.start_server()
    base = str(srv.make_url("")).rstrip("/")
    await srv.close()
    async with RivyaClient(base, KEY, retry=RetryPolicy(max_attempts=2), sleep=Sleeps()) as c:
        with pytest.raises(TransportError) as info:
            await c.get_credits()
    no_key_in(info.value)
    assert c.stats.transport_errors == 2


# -- Retry-After ---------------------------------------------------------------------------


async def test_retry_after_seconds_is_honoured(server: tuple[Script, str]) -> None:
    script, base = server
    script.on("GET", path("/credits"), err(429, "rate_limited", **{"Retry-After": "3"}))
    script.on("GET", path("/credits"), ok({"current_credits": 77}))
    sleeps = Sleeps()
    async with RivyaClient(base, KEY, sleep=sleeps) as c:
        assert await c.get_credits() == 77
        assert c.stats.rate_limited == 1
    assert len(sleeps.delays) == 1 and 3.0 <= sleeps.delays[0] <= 3.3


async def test_retry_after_http_date_is_honoured_and_capped(server: tuple[Script, str]) -> None:
    script, base = server
    import time

    date = formatdate(time.time() + 30, usegmt=True)
    script.on("GET", path("/credits"), err(503, "public_api_disabled", **{"Retry-After": date}))
    script.on("GET", path("/credits"), err(429, "rate_limited", **{"Retry-After": "99999"}))
    script.on("GET", path("/credits"), ok({"current_credits": 1}))
    sleeps = Sleeps()
    async with RivyaClient(base, KEY, sleep=sleeps, retry=RetryPolicy(retry_after_cap=60)) as c:
        assert await c.get_credits() == 1
    assert 27.0 <= sleeps.delays[0] <= 33.0
    assert 60.0 <= sleeps.delays[1] <= 66.0


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


async def test_public_api_disabled_backs_off_long(server: tuple[Script, str]) -> None:
    script, base = server
    script.on("POST", path("/generations"), err(503, "public_api_disabled"), ok(TASK, 202))
    sleeps = Sleeps()
    async with RivyaClient(base, KEY, sleep=sleeps) as c:
        # refused before any effect: retried even without an idempotency key
        assert (await c.create_generation({"model": "m"}, idempotency_key=None)).id == "task_1"
    assert sleeps.delays[0] >= 30.0


# -- create --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_create_accepts_any_2xx_and_sends_the_right_headers(
    server: tuple[Script, str], client: RivyaClient, status: int
) -> None:
    script, _ = server
    script.on("POST", path("/generations"), ok(TASK, status))
    body = {"model": "qwen-image", "prompt": "a red chair ✓", "params": {"image_size": "square"}}
    task = await client.create_generation(body, idempotency_key="idem-1")
    assert (task.id, task.status, task.reserved_credits) == ("task_1", "queued", 4)
    seen = script.seen[-1]
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.headers["Idempotency-Key"] == "idem-1"
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body) == body


async def test_create_without_key_is_not_retried_on_5xx_or_drops(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, _ = server
    script.on("POST", path("/generations"), err(500, "internal_error"), ok(TASK))
    with pytest.raises(ServerError) as info:
        await client.create_generation({"model": "m"}, idempotency_key=None)
    no_key_in(info.value)
    assert script.count("POST", path("/generations")) == 1
    assert "Idempotency-Key" not in script.seen[-1].headers
    script.routes.clear()
    script.on("POST", path("/generations"), dropped, ok(TASK))
    with pytest.raises(TransportError):
        await client.create_generation({"model": "m"}, idempotency_key=None)
    assert script.count("POST", path("/generations")) == 2
    # but a 429 is a refusal before any effect: safe to repeat even without a key
    script.routes.clear()
    script.on("POST", path("/generations"), err(429, "rate_limited"), ok(TASK))
    assert (await client.create_generation({"model": "m"}, idempotency_key=None)).id == "task_1"


async def test_create_with_key_is_retried_with_the_same_bytes(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, _ = server
    script.on("POST", path("/generations"), err(500, "internal_error"), dropped, ok(TASK, 202))
    task = await client.create_generation({"model": "m", "prompt": "p"}, idempotency_key="k")
    assert task.id == "task_1"
    sent = [s for s in script.seen if s.path == path("/generations")]
    assert len(sent) == 3
    assert len({s.body for s in sent}) == 1
    assert {s.headers["Idempotency-Key"] for s in sent} == {"k"}


async def test_conflict_on_a_replayed_create_is_retried(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, _ = server
    # first attempt lost in transit while the server still processes it: the replay meets 409
    conflict = err(409, "idempotency_conflict", "still processing")
    script.on("POST", path("/generations"), dropped, conflict, conflict, ok(TASK, 200))
    task = await client.create_generation({"model": "m"}, idempotency_key="k")
    assert task.id == "task_1"
    assert script.count("POST", path("/generations")) == 4
    # a conflict on a first attempt is genuine: the row fails, not retried
    script.routes.clear()
    script.on("POST", path("/generations"), conflict, ok(TASK))
    with pytest.raises(IdempotencyConflictError) as info:
        await client.create_generation({"model": "m"}, idempotency_key="k2")
    no_key_in(info.value)
    assert script.count("POST", path("/generations")) == 5


# -- records -------------------------------------------------------------------------------


async def test_task_parsing_ignores_unknown_fields(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, _ = server
    done = {
        **TASK,
        "status": "succeeded",
        "final_credits": 4,
        "updated_at": "2026-05-11T00:00:07.500Z",
        "result": {"primary_url": "https://cdn/x.png", "urls": ["https://cdn/x.png"], "w": 1},
        "brand_new_field": {"nested": [1, 2]},
        "webhook": None,
    }
    failed = {
        **TASK,
        "id": "task_2",
        "status": "failed",
        "error": {"code": "generation_failed", "message": "boom", "extra": True},
    }
    script.on("GET", path("/generations/task_1"), ok(done))
    script.on("GET", path("/generations/task_2"), ok(failed))
    a = await client.get_generation("task_1")
    assert a.terminal and a.primary_url == "https://cdn/x.png" and a.urls == ("https://cdn/x.png",)
    assert a.final_credits == 4 and a.raw["brand_new_field"] == {"nested": [1, 2]}
    assert a.seconds_to_done == pytest.approx(7.5)
    b = await client.get_generation("task_2")
    assert b.terminal and (b.error_code, b.error_message) == ("generation_failed", "boom")
    assert b.primary_url is None and b.urls == ()
    queued = Task.from_payload({"data": {**TASK, "result": {"urls": ["u1", "u2"]}}})
    assert not queued.terminal and queued.primary_url == "u1" and queued.seconds_to_done is None


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "file_1", "url": "https://f/1", "kind": "image", "mimeType": "image/png"},
        {"file_id": "file_1", "file_url": "https://f/1", "kind": "image", "mime_type": "image/png"},
        {"fileId": "file_1", "downloadUrl": "https://f/1", "kind": "image"},
        {"data": {"id": "file_1", "url": "https://f/1", "kind": "image", "new": 1}},
        {"file": {"id": "file_1", "download_url": "https://f/1", "kind": "image"}},
    ],
)
async def test_upload_parses_other_field_names(
    server: tuple[Script, str], client: RivyaClient, payload: dict[str, Any]
) -> None:
    script, _ = server
    script.on("POST", path("/files"), ok(payload, 201))
    up = await client.upload_file(
        b"\x89PNG\r\n\x1a\nxxxx",
        filename="p.png",
        kind="image",
        mime_type="image/png",
        model="qwen-image",
        client_request_id="crid",
    )
    assert (up.id, up.url, up.kind) == ("file_1", "https://f/1", "image")
    seen = script.seen[-1]
    assert seen.headers["Content-Type"].startswith("multipart/form-data")
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    for part in (b'name="file"', b'filename="p.png"', b"image/png", b"\x89PNG", b"crid", b"kind"):
        assert part in seen.body


async def test_upload_is_retried_with_a_fresh_form(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, _ = server
    script.on("POST", path("/files"), dropped, ok({"id": "f", "url": "u", "duration_token": "d"}))
    up = await client.upload_file(b"abc", filename="a.mp4", kind="video", mime_type="video/mp4")
    assert isinstance(up, UploadedFile) and up.duration_token == "d"
    assert script.count("POST", path("/files")) == 2
    assert b"abc" in script.seen[-1].body


async def test_models_credits_and_file_endpoints(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, _ = server
    script.on("GET", path("/models"), ok({"object": "list", "data": [{"id": "qwen-image"}]}))
    script.on("GET", path("/credits"), ok({"current_credits": 1234, "other": 1}))
    script.on("GET", path("/files/file 1"), ok({"id": "file 1", "url": "https://f/1"}))
    assert (await client.list_models())["data"][0]["id"] == "qwen-image"
    assert "Authorization" not in script.seen[-1].headers  # a public endpoint
    assert await client.get_credits() == 1234
    assert (await client.get_file("file 1")).url == "https://f/1"
    assert dict(client.stats.requests) == {"models": 1, "credits": 1, "file": 1}


# -- media ---------------------------------------------------------------------------------


async def test_fetch_sends_the_key_only_to_the_api_origin(
    server: tuple[Script, str], client: RivyaClient
) -> None:
    script, base = server

    async def png(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG" + b"0" * 100, content_type="image/png")

    script.on("GET", "/media/x.png", png)
    data, ctype = await client.fetch(base + "/media/x.png", max_bytes=1000)
    assert data.startswith(b"\x89PNG") and ctype == "image/png"
    assert script.seen[-1].headers["Authorization"] == f"Bearer {KEY}"

    other = Script().on("GET", "/cdn/y.png", png)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", other.handle)
    cdn = TestServer(app, host="127.0.0.1")
    await cdn.start_server()
    try:
        data, _ = await client.fetch(str(cdn.make_url("/cdn/y.png")), max_bytes=1000)
    finally:
        await cdn.close()
    assert len(data) == 104
    assert "Authorization" not in other.seen[-1].headers
    assert client.stats.requests["media"] == 2


async def test_fetch_errors(server: tuple[Script, str], client: RivyaClient) -> None:
    script, base = server

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000, content_type="image/png")

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp

    script.on("GET", "/big", big)
    script.on("GET", "/chunked", big_chunked)
    script.on("GET", "/gone", raw(404, "<Error>expired</Error>", "application/xml"))
    for url in ("/big", "/chunked"):
        with pytest.raises(TransportError, match="larger than 1000 bytes") as info:
            await client.fetch(base + url, max_bytes=1000)
        no_key_in(info.value)
        assert script.count("GET", url) == 1  # not retried
    with pytest.raises(ApiError) as gone:
        await client.fetch(base + "/gone", max_bytes=1000)
    assert (no_key_in(gone.value).code, gone.value.status) == ("http_404", 404)
    assert script.count("GET", "/gone") == 1
    with pytest.raises(TransportError):
        await client.fetch("file:///etc/passwd", max_bytes=10)


# -- budget --------------------------------------------------------------------------------


async def test_every_request_reports_to_the_budget(server: tuple[Script, str]) -> None:
    script, base = server
    script.on("GET", path("/credits"), err(429, "rate_limited", **{"Retry-After": "0"}))
    script.on("GET", path("/credits"), ok({"current_credits": 5}))
    script.on("GET", path("/generations/t"), err(500, "internal_error"), ok(TASK))
    budget = RequestBudget(max_in_flight=2, initial_rate=1000.0)
    async with RivyaClient(base, KEY, budget=budget, sleep=Sleeps()) as c:
        assert await c.get_credits() == 5
        assert (await c.get_generation("t")).id == "task_1"
        results = await asyncio.gather(*(c.get_generation("t") for _ in range(10)))
    assert len(results) == 10
    assert budget.granted == 14 and budget.responses == 14
    assert budget.throttled == 1 and budget.decreases == 1
    assert budget.max_in_flight_seen <= 2
    assert budget.in_flight == 0


# -- the key -------------------------------------------------------------------------------


async def test_the_key_never_leaks(server: tuple[Script, str], tmp_path: Path) -> None:
    script, base = server
    key = ApiKey(KEY)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert KEY not in text and "rvya_sk_" in text
    assert key.reveal() == KEY and key == ApiKey(KEY)
    async with RivyaClient(base, key, retry=RetryPolicy.none()) as c:
        assert KEY not in repr(c) and KEY not in str(c)
        # a server that echoes the key back in its message
        script.on("GET", path("/credits"), err(401, "api_key_invalid", f"bad key {KEY}"))
        with pytest.raises(AuthError) as info:
            await c.get_credits()
        assert KEY not in info.value.message
        no_key_in(info.value)
    assert KEY not in repr(UsageError("x"))
    for exc in RAISED:
        assert KEY not in repr(exc) and KEY not in str(exc)


def test_api_key_from_value_or_file(tmp_path: Path) -> None:
    assert ApiKey.from_env_or_file(None, None) is None
    assert ApiKey.from_env_or_file(f" {KEY}\n", None) == ApiKey(KEY)
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    assert ApiKey.from_env_or_file("", f) == ApiKey(KEY)
    assert ApiKey.from_env_or_file("rvya_sk_other", f) == ApiKey("rvya_sk_other")
    with pytest.raises(UsageError) as missing:
        ApiKey.from_env_or_file(None, tmp_path / "nope")
    assert "nope" in str(missing.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError):
        ApiKey.from_env_or_file(None, tmp_path / "empty")
    with pytest.raises(ValueError):
        ApiKey("  ")


def test_bad_base_url() -> None:
    with pytest.raises(UsageError):
        RivyaClient("rivya.ai", KEY)


# -- against the project simulator ---------------------------------------------------------


async def test_against_the_simulator_with_faults() -> None:
    sim_mod = pytest.importorskip("batchgen.sim")
    config = sim_mod.SimConfig(
        rate=None, latency=0.01, queue_time=0.0, seed=3, drop_after_rate=0.3, error_rate=0.2
    )
    async with sim_mod.SimServer(config) as srv:
        async with RivyaClient(srv.base_url, srv.api_key, sleep=Sleeps()) as c:
            tasks = [
                await c.create_generation(
                    {"model": "qwen-image", "prompt": f"a chair {i}"}, idempotency_key=f"k{i}"
                )
                for i in range(20)
            ]
            assert len({t.id for t in tasks}) == 20
            await asyncio.sleep(0.1)
            polled = await asyncio.gather(*(c.get_generation(t.id) for t in tasks))
            assert all(t.status in ("processing", "succeeded", "queued") for t in polled)
        ledger = srv.sim.ledger.snapshot()
    # dropped-after-effect creates were replayed, never charged twice
    assert ledger["tasks_created"] == 20
    assert set(ledger["tasks_by_idempotency_key"].values()) == {1}


async def test_simulator_rate_limit_with_budget() -> None:
    sim_mod = pytest.importorskip("batchgen.sim")
    config = sim_mod.SimConfig(rate=50.0, burst=5, latency=0.01, queue_time=0.0, seed=4)
    async with sim_mod.SimServer(config) as srv:
        budget = RequestBudget(max_in_flight=8, initial_rate=200.0)
        async with RivyaClient(srv.base_url, srv.api_key, budget=budget) as c:
            got = await asyncio.gather(*(c.get_credits() for _ in range(60)))
    assert len(got) == 60  # every 429 was absorbed by retries
    assert budget.throttled >= 1 and budget.rate < 200.0
    assert c.stats.rate_limited == budget.throttled
