"""The simulator over real HTTP: models, auth, files, generations, lifecycle, result images."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from batchgen.sim import AccountConfig, FakeClock, KeyConfig, SimConfig, SimServer

KEY = "rvya_sk_test_owner"
OTHER = "rvya_sk_test_other"


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
    return buf.getvalue()


class Api:
    """A thin aiohttp wrapper for the tests (the project client is tested elsewhere)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str | None) -> None:
        self.session = session
        self.base = base
        self.key = key

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        key = key if key is not None else self.key
        return {**({"Authorization": f"Bearer {key}"} if key else {}), **extra}

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        headers: dict | None = None,
        **kw: Any,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        hdrs = self.headers(key) if headers is None else headers
        async with self.session.request(method, self.base + path, headers=hdrs, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.read()
            return r.status, body, r.headers

    async def create(self, body: dict, *, idem: str | None = None, key: str | None = None) -> Any:
        hdrs = self.headers(key, **({"Idempotency-Key": idem} if idem else {}))
        return await self.request("POST", "/api/v1/generations", json=body, headers=hdrs)

    async def upload(
        self,
        data: bytes,
        *,
        kind: str = "image",
        name: str = "ref.png",
        model: str | None = None,
        key: str | None = None,
        crid: str | None = None,
    ) -> Any:
        form = aiohttp.FormData()
        # a file object, not raw bytes: aiohttp warns on large raw bodies (warnings are errors)
        form.add_field(
            "file", io.BytesIO(data), filename=name, content_type="application/octet-stream"
        )
        form.add_field("kind", kind)
        if model:
            form.add_field("model", model)
        if crid:
            form.add_field("client_request_id", crid)
        return await self.request("POST", "/api/v1/files", data=form, key=key)


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert err["requestId"].startswith("req_")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(clock: FakeClock) -> AsyncIterator[SimServer]:
    config = SimConfig(
        rate=None,
        latency=10.0,
        latency_sigma=0.0,
        queue_time=2.0,
        seed=7,
        credits=100,
        accounts=(
            AccountConfig("acct_owner", (KeyConfig(KEY),)),
            AccountConfig(
                "acct_other",
                (
                    KeyConfig(OTHER),
                    KeyConfig("rvya_sk_revoked", status="revoked"),
                    KeyConfig("rvya_sk_expired", status="expired"),
                    KeyConfig("rvya_sk_expiring", expires_at=clock() + 5),
                    KeyConfig("rvya_sk_readonly", scopes=frozenset({"generations:read"})),
                ),
                credits=50,
            ),
        ),
    )
    async with SimServer(config, clock=clock) as srv:
        yield srv


@pytest.fixture
async def api(server: SimServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, server.base_url, KEY)


# --------------------------------------------------------------------------- public routes


async def test_models_listing_needs_no_key(api: Api) -> None:
    status, body, _ = await api.request("GET", "/api/v1/models", headers={})
    assert status == 200
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["qwen-image"]["base_credits"] == 4
    assert by_id["qwen2-image"]["max_prompt_length"] == 800
    for entry in body["data"]:
        assert {"id", "display_name", "category", "base_credits", "params", "api_status"} <= set(
            entry
        )


async def test_openapi_needs_no_key(api: Api) -> None:
    status, body, _ = await api.request("GET", "/api/v1/openapi.json", headers={})
    assert status == 200
    assert body["openapi"].startswith("3.")
    assert "/api/v1/generations" in body["paths"]
    assert "/api/v1/generations/{taskId}" in body["paths"]


async def test_unknown_route_is_a_json_404(api: Api) -> None:
    status, body, _ = await api.request("GET", "/api/v1/nothing")
    assert status == 404
    assert_error(body, "not_found")


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "api_key_missing"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401, "api_key_missing"),
        ({"Authorization": "Bearer "}, 401, "api_key_missing"),
        ({"Authorization": "Bearer rvya_sk_unknown"}, 401, "api_key_invalid"),
        ({"Authorization": "Bearer sk_wrong_prefix"}, 401, "api_key_invalid"),
        ({"Authorization": "Bearer rvya_sk_revoked"}, 401, "api_key_revoked"),
        ({"Authorization": "Bearer rvya_sk_expired"}, 401, "api_key_expired"),
        ({"Authorization": "Bearer rvya_sk_readonly"}, 403, "api_scope_denied"),
    ],
)
async def test_auth_errors(api: Api, headers: dict, status: int, code: str) -> None:
    got, body, _ = await api.request("GET", "/api/v1/credits", headers=headers)
    assert got == status
    assert_error(body, code)


async def test_every_authenticated_route_checks_the_key(api: Api) -> None:
    for method, path in [
        ("POST", "/api/v1/generations"),
        ("GET", "/api/v1/generations/task_x"),
        ("POST", "/api/v1/files"),
        ("GET", "/api/v1/files/file_x"),
        ("GET", "/api/v1/credits"),
    ]:
        status, body, _ = await api.request(method, path, headers={})
        assert (status, body["error"]["code"]) == (401, "api_key_missing"), path


async def test_key_expires_on_the_clock(api: Api, clock: FakeClock) -> None:
    status, _, _ = await api.request("GET", "/api/v1/credits", key="rvya_sk_expiring")
    assert status == 200
    clock.advance(6)
    status, body, _ = await api.request("GET", "/api/v1/credits", key="rvya_sk_expiring")
    assert status == 401
    assert_error(body, "api_key_expired")


async def test_scope_denied_on_create_but_read_allowed(api: Api, server: SimServer) -> None:
    status, body, _ = await api.create(
        {"model": "qwen-image", "prompt": "p"}, key="rvya_sk_readonly"
    )
    assert status == 403
    assert_error(body, "api_scope_denied")
    assert server.sim.ledger.snapshot()["tasks_created"] == 0


async def test_public_api_disabled(api: Api, server: SimServer) -> None:
    server.config.api_disabled = True
    status, body, _ = await api.request("GET", "/api/v1/credits")
    assert status == 503
    assert_error(body, "public_api_disabled")


# --------------------------------------------------------------------------- generations


async def test_qwen_image_example_lifecycle_to_png(
    api: Api, server: SimServer, clock: FakeClock
) -> None:
    body = {
        "model": "qwen-image",
        "prompt": "A red sneaker on white",
        "params": {"image_size": "portrait_4_3", "output_format": "png"},
        "client_request_id": "row-1",
    }
    status, task, _ = await api.create(body)
    assert status == 202
    assert task["id"].startswith("task_")
    assert task["status"] == "queued"
    assert (task["model"], task["reserved_credits"], task["final_credits"]) == ("qwen-image", 4, 0)
    assert task["result"] is None and task["error"] is None
    assert task["created_at"].endswith("Z") and task["updated_at"] == task["created_at"]
    assert (await api.request("GET", "/api/v1/credits"))[1] == {"current_credits": 96}

    path = f"/api/v1/generations/{task['id']}"
    assert (await api.request("GET", path))[1]["status"] == "queued"
    clock.advance(3)
    polled = (await api.request("GET", path))[1]
    assert polled["status"] == "processing" and polled["final_credits"] == 0
    assert polled["updated_at"] != polled["created_at"]
    clock.advance(10)
    done = (await api.request("GET", path))[1]
    assert done["status"] == "succeeded"
    assert done["final_credits"] == 4
    assert done["error"] is None
    assert done["result"]["primary_url"] == done["result"]["urls"][0]

    async with api.session.get(done["result"]["primary_url"]) as resp:  # no key needed
        assert resp.status == 200
        assert resp.content_type == "image/png"
        img = Image.open(io.BytesIO(await resp.read()))
    assert img.format == "PNG"
    assert img.width * 4 == img.height * 3  # 3:4
    assert max(img.size) == 256

    snap = server.sim.ledger.snapshot()
    assert snap["credits"]["acct_owner"] == {
        "balance": 96,
        "reserved": 4,
        "charged": 4,
        "refunded": 0,
        "outstanding": 0,
    }
    assert snap["tasks_by_client_request_id"] == {"row-1": 1}
    assert snap["settled"] == {"succeeded": 1}


@pytest.mark.parametrize(
    ("model", "params", "fmt", "ratio"),
    [
        ("qwen-image", {}, "PNG", (1, 1)),
        ("qwen-image", {"image_size": "landscape_16_9", "output_format": "jpeg"}, "JPEG", (16, 9)),
        ("qwen2-image", {}, "PNG", (16, 9)),
        ("qwen2-image", {"image_size": "9:16", "output_format": "jpeg"}, "JPEG", (9, 16)),
    ],
)
async def test_result_image_format_and_aspect(
    api: Api, clock: FakeClock, model: str, params: dict, fmt: str, ratio: tuple[int, int]
) -> None:
    _, task, _ = await api.create({"model": model, "prompt": "p", "params": params})
    clock.advance(60)
    _, done, _ = await api.request("GET", f"/api/v1/generations/{task['id']}")
    status, data, _ = await api.request("GET", done["result"]["primary_url"].split(api.base)[1])
    assert status == 200
    img = Image.open(io.BytesIO(data))
    assert img.format == fmt
    w, h = img.size
    assert abs(w / h - ratio[0] / ratio[1]) < 0.02


async def test_qwen2_example_with_reference_upload(
    api: Api, server: SimServer, clock: FakeClock
) -> None:
    status, uploaded, _ = await api.upload(png_bytes(), name="photo.png", crid="up-1")
    assert status == 201
    assert uploaded["id"].startswith("file_")
    assert uploaded["kind"] == "image" and uploaded["mimeType"] == "image/png"
    assert uploaded["name"] == "photo.png" and uploaded["size"] == len(png_bytes())
    assert len(uploaded["sha256"]) == 64 and uploaded["duration_token"] is None
    status, meta, _ = await api.request("GET", f"/api/v1/files/{uploaded['id']}")
    assert status == 200 and meta["url"] == uploaded["url"]

    body = {
        "model": "qwen2-image",
        "prompt": "The same shoe, on a beach",
        "params": {
            "image_size": "1:1",
            "output_format": "jpeg",
            "seed": 42,
            "nsfw_checker": "true",
            "referenceMediaItems": [
                {
                    "url": uploaded["url"],
                    "kind": "image",
                    "name": "photo.png",
                    "mimeType": "image/png",
                }
            ],
        },
    }
    status, task, _ = await api.create(body, idem="k-ref")
    assert status == 202, task
    assert task["reserved_credits"] == 6
    clock.advance(60)
    _, done, _ = await api.request("GET", f"/api/v1/generations/{task['id']}")
    assert done["status"] == "succeeded" and done["final_credits"] == 6
    assert done["result"]["primary_url"].endswith(".jpg")
    snap = server.sim.ledger.snapshot()
    assert snap["files_uploaded"] == 1 and snap["files_by_client_request_id"] == {"up-1": 1}


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"prompt": "p"}, "model", "required"),
        ({"model": "nope", "prompt": "p"}, "model", "unknown_model"),
        ({"model": "qwen-image"}, "prompt", "required"),
        ({"model": "qwen-image", "prompt": "x" * 5001}, "prompt", "max_length"),
        ({"model": "qwen2-image", "prompt": "x" * 801}, "prompt", "max_length"),
        (
            {"model": "qwen-image", "prompt": "p", "params": {"seed": 1}},
            "params.seed",
            "unknown_param",
        ),
        (
            {"model": "qwen-image", "prompt": "p", "params": {"image_size": "1:1"}},
            "params.image_size",
            "option",
        ),
        (
            {"model": "qwen2-image", "prompt": "p", "params": {"nsfw_checker": True}},
            "params.nsfw_checker",
            "option",
        ),
        (
            {"model": "qwen2-image", "prompt": "p", "params": {"seed": -3}},
            "params.seed",
            "integer_min",
        ),
        (
            {"model": "qwen2-image", "prompt": "p", "params": {"seed": 1.5}},
            "params.seed",
            "integer_min",
        ),
        (
            {"model": "qwen-image", "prompt": "p", "client_request_id": "c" * 129},
            "client_request_id",
            "max_length",
        ),
        (
            {"model": "qwen-image", "prompt": "p", "referenceMediaItems": []},
            "referenceMediaItems",
            "unknown_field",
        ),
        (
            {
                "model": "qwen-image",
                "prompt": "p",
                "params": {"referenceMediaItems": [{"url": "https://x/y.png", "kind": "image"}]},
            },
            "params.referenceMediaItems[0].url",
            "unknown_file",
        ),
    ],
)
async def test_validation_failed_names_field_and_rule(
    api: Api, server: SimServer, body: dict, field: str, rule: str
) -> None:
    status, err, _ = await api.create(body)
    assert status == 400
    assert_error(
        {"error": {k: v for k, v in err["error"].items() if k != "details"}}, "validation_failed"
    )
    assert {"field": field, "rule": rule} in [
        {"field": d["field"], "rule": d["rule"]} for d in err["error"]["details"]
    ]
    assert field in err["error"]["message"] and rule in err["error"]["message"]
    snap = server.sim.ledger.snapshot()
    assert snap["tasks_created"] == 0 and snap["credits"]["acct_owner"]["reserved"] == 0


async def test_body_must_be_a_json_object(api: Api) -> None:
    for data in (b"not json", b"[1, 2]"):
        hdrs = api.headers(**{"Content-Type": "application/json"})
        status, err, _ = await api.request("POST", "/api/v1/generations", data=data, headers=hdrs)
        assert status == 400
        assert err["error"]["code"] == "validation_failed"


async def test_too_many_references_and_wrong_kind(api: Api) -> None:
    _, a, _ = await api.upload(png_bytes())
    _, b, _ = await api.upload(jpeg_bytes(), name="b.jpg")
    items = [{"url": a["url"], "kind": "image"}, {"url": b["url"], "kind": "image"}]
    body = {"model": "qwen-image", "prompt": "p", "params": {"referenceMediaItems": items}}
    status, err, _ = await api.create(body)
    assert status == 400
    assert ("reference", "max_files") in {(d["field"], d["rule"]) for d in err["error"]["details"]}
    body["params"] = {"referenceMediaItems": [{"url": a["url"], "kind": "video"}]}
    status, err, _ = await api.create(body)
    assert status == 400
    assert err["error"]["details"][0]["rule"] == "kind"


async def test_ownership_tasks_and_files_of_another_account_are_not_found(api: Api) -> None:
    _, task, _ = await api.create({"model": "qwen-image", "prompt": "p"})
    _, uploaded, _ = await api.upload(png_bytes())
    status, body, _ = await api.request("GET", f"/api/v1/generations/{task['id']}", key=OTHER)
    assert status == 404
    assert_error(body, "not_found")
    status, body, _ = await api.request("GET", f"/api/v1/files/{uploaded['id']}", key=OTHER)
    assert status == 404
    assert_error(body, "not_found")
    status, body, _ = await api.request("GET", "/api/v1/generations/task_doesnotexist")
    assert status == 404
    assert_error(body, "not_found")
    # another account cannot reference the owner's upload either
    item = {"url": uploaded["url"], "kind": "image"}
    body = {"model": "qwen-image", "prompt": "p", "params": {"referenceMediaItems": [item]}}
    status, err, _ = await api.create(body, key=OTHER)
    assert status == 400
    assert err["error"]["details"][0]["rule"] == "unknown_file"
    # and each account has its own balance
    assert (await api.request("GET", "/api/v1/credits", key=OTHER))[1] == {"current_credits": 50}


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("data", "kind", "name", "model", "field", "rule"),
    [
        (b"this is not a png at all" * 10, "image", "fake.png", None, "file", "mime"),
        (b"GIF89a" + b"\x00" * 50, "image", "anim.gif", None, "file", "mime"),
        (png_bytes(), "video", "clip.mp4", None, "file", "mime"),
        (png_bytes(), "document", "x.png", None, "kind", "kind"),
        (png_bytes(), "image", "x.png", "z-image", "model", "no_references"),
        (b"", "image", "empty.png", None, "file", "empty"),
    ],
)
async def test_upload_rejections(
    api: Api, data: bytes, kind: str, name: str, model: str | None, field: str, rule: str
) -> None:
    status, err, _ = await api.upload(data, kind=kind, name=name, model=model)
    assert status == 400
    assert err["error"]["code"] == "validation_failed"
    assert (field, rule) in {(d["field"], d["rule"]) for d in err["error"]["details"]}


async def test_upload_size_limit_is_ten_million_bytes(api: Api) -> None:
    head = png_bytes()
    ok = head + b"\x00" * (10_000_000 - len(head))
    status, body, _ = await api.upload(ok)
    assert status == 201 and body["size"] == 10_000_000
    status, err, _ = await api.upload(ok + b"\x00")
    assert status == 400
    assert err["error"]["details"][0]["rule"] == "max_bytes"
    assert "10000000" in err["error"]["message"]


async def test_upload_accepts_by_signature_not_extension(api: Api) -> None:
    status, body, _ = await api.upload(jpeg_bytes(), name="photo.png", model="qwen-image")
    assert status == 201
    assert body["mimeType"] == "image/jpeg"
    riff = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40
    status, body, _ = await api.upload(riff, kind="audio", name="a.wav")
    assert status == 201 and body["mimeType"] == "audio/wav"


async def test_upload_missing_parts(api: Api) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("kind", "image")
    status, err, _ = await api.request("POST", "/api/v1/files", data=form)
    assert status == 400 and err["error"]["details"][0]["field"] == "file"
    status, err, _ = await api.request("POST", "/api/v1/files", json={"kind": "image"})
    assert status == 400 and err["error"]["details"][0]["rule"] == "multipart"


async def test_uploaded_file_url_serves_its_bytes(api: Api) -> None:
    data = png_bytes((3, 5))
    _, uploaded, _ = await api.upload(data)
    async with api.session.get(uploaded["url"]) as resp:
        assert resp.status == 200 and await resp.read() == data
