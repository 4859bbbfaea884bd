"""The simulator as an aiohttp application: auth, rate limit, faults, bookkeeping, admin routes.

One middleware does the per-request work for every route, in this order: count the request,
settle due tasks, ``public_api_disabled``, authentication and scope, the account's token bucket
(a refused request has no effect), faults that replace the request before any effect, then the
handler (:mod:`batchgen.sim.handlers`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from batchgen.job.catalog import Catalog
from batchgen.sim.faults import Faults, RateDecision, RateLimiter
from batchgen.sim.handlers import ACCOUNT_KEY, CODE_KEY, DROPPED_KEY, TRACE_KEY, Handlers, drop
from batchgen.sim.openapi import openapi_document
from batchgen.sim.state import (
    ALL_SCOPES,
    DEFAULT_ACCOUNT,
    KEY_STATUSES,
    RUNTIME_KNOBS,
    AccountConfig,
    KeyConfig,
    Ledger,
    SimConfig,
    SimState,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = ""
# (method, route) -> scope required ("" = public)
SCOPES: Mapping[tuple[str, str], str] = {
    ("GET", "/api/v1/models"): PUBLIC,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("POST", "/api/v1/files"): "files:create",
    ("GET", "/api/v1/files/{file_id}"): "files:read",
    ("POST", "/api/v1/generations"): "generations:create",
    ("GET", "/api/v1/generations/{task_id}"): "generations:read",
    ("GET", "/api/v1/credits"): "credits:read",
}
_CREATE_ROUTE = ("POST", "/api/v1/generations")
_HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
_EXCEPTION_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class Simulator:
    """A local Rivya API v1: state, ledger and the aiohttp application serving them.

    ``clock`` (epoch seconds) drives task lifecycles, idempotency retention and the rate limit;
    inject :class:`batchgen.sim.state.FakeClock` for deterministic tests.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.config = config if config is not None else SimConfig()
        self.clock: Callable[[], float] = clock or time.time
        self.catalog = catalog or Catalog.default()
        self.ledger = Ledger()
        self.faults = Faults(self.config)
        self.state = SimState(self.config, self.clock, self.ledger)
        self.limiter = RateLimiter(self.config, self.clock)
        self._request_ids = itertools.count(1)
        self._key_rng = random.Random(self.config.seed) if self.config.seed is not None else None
        accounts = self.config.accounts
        if not accounts:
            key = self.config.api_key or self.new_key_secret()
            accounts = (AccountConfig(DEFAULT_ACCOUNT, (KeyConfig(key),)),)
        for account in accounts:
            self.state.add_account(account)
        first = accounts[0]
        usable = [k for k in first.keys if k.status == "active" and k.scopes >= ALL_SCOPES]
        self.account_id: str = first.id
        self.api_key: str = (usable or list(first.keys))[0].key
        self._models_body = b""
        self._models_etag = ""
        self._models_fault: tuple[int, bytes] | None = None
        self.set_catalog(self.catalog)

    # ---------------------------------------------------------------- public helpers

    def set_models_fault(self, status: int, body: bytes) -> None:
        """A fault knob: answer ``GET /models`` with ``status`` and ``body`` (e.g. a malformed
        catalog) while still enforcing the catalog; :meth:`set_catalog` ends it."""
        self._models_fault = (status, body)

    def set_catalog(self, catalog: Catalog) -> None:
        """Serve and enforce ``catalog`` from now on (a changed price, a new model, ...)."""
        self._models_fault = None
        self.catalog = catalog
        self._models_body = json.dumps(catalog.to_api()).encode()
        self._models_etag = '"' + hashlib.sha256(self._models_body).hexdigest()[:32] + '"'

    def new_key_secret(self) -> str:
        """A fresh ``rvya_sk_...`` secret (deterministic when the config has a seed)."""
        if self._key_rng is not None:
            return f"rvya_sk_sim_{self._key_rng.getrandbits(128):032x}"
        return f"rvya_sk_sim_{secrets.token_hex(16)}"

    def add_account(
        self,
        account_id: str,
        *,
        credits: int | None = None,
        scopes: frozenset[str] = ALL_SCOPES,
        status: str = "active",
        expires_at: float | None = None,
    ) -> str:
        """Create (or extend) an account with one new key; returns the key's secret."""
        secret = self.new_key_secret()
        key = KeyConfig(secret, frozenset(scopes), status, expires_at)
        if account_id in self.state.accounts:
            self.state.add_key(account_id, key)
            if credits is not None:
                self.state.set_credits(account_id, credits)
        else:
            self.state.add_account(AccountConfig(account_id, (key,), credits))
        return secret

    def set_key(
        self,
        secret: str,
        *,
        status: str = "active",
        scopes: frozenset[str] | None = None,
        account: str | None = None,
    ) -> str:
        """Add a key or change one's status/scopes (e.g. revoke the key a run is using);
        returns its account. A known key keeps its account and, unless given, its scopes."""
        found = self.state.lookup_key(secret)
        if found is not None:
            owner, old = found
            account = account or owner
            scopes = scopes if scopes is not None else old.scopes
        self.state.add_key(
            account or self.account_id,
            KeyConfig(secret, scopes if scopes is not None else ALL_SCOPES, status),
        )
        return account or self.account_id

    def add_credits(self, account: str | None, n: int) -> int:
        """Add ``n`` credits to an account (default account when None); returns the balance."""
        return self.state.add_credits(account or self.account_id, n)

    def set_credits(self, account: str | None, n: int) -> int:
        """Set an account's balance (default account when None); returns it."""
        return self.state.set_credits(account or self.account_id, n)

    def credits(self, account: str | None = None) -> int:
        """An account's current balance."""
        return self.state.balance(account or self.account_id)

    def snapshot(self) -> dict[str, Any]:
        """The ledger snapshot (JSON-able)."""
        return self.ledger.snapshot()

    def request_id(self) -> str:
        """A new ``req_...`` id."""
        return f"req_{next(self._request_ids):012x}"

    def error(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> web.Response:
        """A response of the documented error shape."""
        request_id = self.request_id()
        payload = {"error": {"code": code, "message": message, "requestId": request_id, **extra}}
        resp = web.json_response(payload, status=status, headers=headers)
        resp.headers["X-Request-Id"] = request_id
        resp[CODE_KEY] = code
        return resp

    # ---------------------------------------------------------------- application

    def make_app(self) -> web.Application:
        """The aiohttp application (routes + middleware)."""
        app = web.Application(middlewares=[self._middleware], client_max_size=2**20)
        h = Handlers(self)
        app.router.add_get("/api/v1/models", self._models, allow_head=False)
        app.router.add_get("/api/v1/openapi.json", self._openapi, allow_head=False)
        app.router.add_post("/api/v1/files", h.upload_file)
        app.router.add_get("/api/v1/files/{file_id}", h.get_file, allow_head=False)
        app.router.add_post("/api/v1/generations", h.create_generation)
        app.router.add_get("/api/v1/generations/{task_id}", h.get_generation, allow_head=False)
        app.router.add_get("/api/v1/credits", h.get_credits, allow_head=False)
        app.router.add_get("/media/files/{file_id}", h.media_file, allow_head=False)
        app.router.add_get("/media/{task_id}/{name}", h.media_result, allow_head=False)
        app.router.add_get("/_sim/ledger", self._admin_ledger, allow_head=False)
        app.router.add_get("/_sim/requests", self._admin_requests, allow_head=False)
        app.router.add_post("/_sim/keys", self._admin_keys)
        app.router.add_post("/_sim/credits", self._admin_credits)
        app.router.add_post("/_sim/config", self._admin_config)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else "(unmatched)"
        index = self.ledger.request_started(f"{request.method} {canonical}")
        status: int | str = 500
        code: str | None = None
        try:
            try:
                resp = await self._dispatch(request, handler, canonical)
            except web.HTTPException as exc:
                code = _EXCEPTION_CODES.get(exc.status, f"http_{exc.status}")
                resp = self.error(exc.status, code, exc.reason, headers=None)
            status = "dropped" if resp.get(DROPPED_KEY) else resp.status
            code = resp.get(CODE_KEY)
            return resp
        finally:
            self.ledger.request_finished(status, code, index, trace=request.get(TRACE_KEY))

    async def _dispatch(
        self, request: web.Request, handler: Handler, canonical: str
    ) -> web.StreamResponse:
        if not canonical.startswith("/api/"):
            return await handler(request)
        self.state.settle_due()
        config = self.config
        if config.api_disabled:
            return self.error(503, "public_api_disabled", "The public API is disabled for now.")
        scope = SCOPES.get((request.method, canonical))
        decision: RateDecision | None = None
        if scope:  # authenticated route
            account_or_error = self._authenticate(request, scope)
            if isinstance(account_or_error, web.Response):
                return account_or_error
            request[ACCOUNT_KEY] = account_or_error
            decision = self.limiter.take(account_or_error)
            if decision is not None:
                self.ledger.rate_decision(self.clock(), decision.allowed)
            if decision is not None and not decision.allowed:
                self.ledger.fault("rate_limited")
                headers = {"Retry-After": str(decision.retry_after)}
                if config.rate_limit_headers:
                    headers.update(_rate_headers(decision))
                return self.error(
                    429, "rate_limited", "Too many requests in the current window.", headers
                )
        fault = self.faults.before_effect()
        if fault is not None:
            self.ledger.fault(fault)
            if fault == "drop":
                return drop(request)
            if fault == "html_502":
                resp = web.Response(status=502, text=_HTML_502, content_type="text/html")
                resp[CODE_KEY] = "html_502"
                return resp
            return self.error(500, "internal_error", "An unexpected error occurred.")
        if (request.method, canonical) != _CREATE_ROUTE:  # create delays itself, key held
            delay = self.faults.slow()
            if delay:
                self.ledger.fault("slow")
                await asyncio.sleep(delay)
        answer = await handler(request)
        if decision is not None and config.rate_limit_headers and not answer.prepared:
            answer.headers.update(_rate_headers(decision))
        return answer

    def _authenticate(self, request: web.Request, scope: str) -> str | web.Response:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self.error(
                401, "api_key_missing", "Send your API key as 'Authorization: Bearer rvya_sk_...'."
            )
        found = self.state.lookup_key(token) if token.startswith("rvya_sk_") else None
        if found is None:
            return self.error(401, "api_key_invalid", "The API key is not valid.")
        account_id, key = found
        if key.status == "revoked":
            return self.error(401, "api_key_revoked", "The API key has been revoked.")
        if key.status == "expired" or (
            key.expires_at is not None and key.expires_at <= self.clock()
        ):
            return self.error(401, "api_key_expired", "The API key has expired.")
        if scope not in key.scopes:
            return self.error(
                403, "api_scope_denied", f"The API key lacks the scope {scope!r}.", scope=scope
            )
        return account_id

    # ---------------------------------------------------------------- public and admin routes

    async def _models(self, request: web.Request) -> web.Response:
        if self._models_fault is not None:
            status, body = self._models_fault
            return web.Response(status=status, body=body, content_type="application/json")
        # A strong ETag over the body: If-None-Match with it gets 304 and no body.
        headers = {"ETag": self._models_etag, "Cache-Control": "public, max-age=60"}
        asked = request.headers.get("If-None-Match", "")
        if self._models_etag in (t.strip() for t in asked.split(",")):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=self._models_body, content_type="application/json", headers=headers
        )

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(f"{request.scheme}://{request.host}"))

    async def _admin_ledger(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _admin_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.ledger.request_log())

    async def _admin_keys(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        secret = body.get("key")
        status = body.get("status", "active")
        if not isinstance(secret, str) or not secret.startswith("rvya_sk_"):
            return self.error(400, "validation_failed", "key: give the secret (rvya_sk_...)")
        if status not in KEY_STATUSES:
            return self.error(400, "validation_failed", f"status: one of {', '.join(KEY_STATUSES)}")
        scopes = body.get("scopes")
        if scopes is not None and not (
            isinstance(scopes, list) and all(isinstance(x, str) for x in scopes)
        ):
            return self.error(400, "validation_failed", "scopes: a list of scope names")
        account = self.set_key(
            secret,
            status=status,
            scopes=frozenset(scopes) if scopes is not None else None,
            account=body.get("account") if isinstance(body.get("account"), str) else None,
        )
        return web.json_response({"account": account, "status": status})

    async def _admin_credits(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        account = body.get("account") or self.account_id
        if not isinstance(account, str):
            return self.error(400, "validation_failed", "account: must be a string")
        if isinstance(body.get("credits"), int):
            balance = self.set_credits(account, body["credits"])
        elif isinstance(body.get("add"), int):
            balance = self.add_credits(account, body["add"])
        else:
            return self.error(400, "validation_failed", "give an integer 'credits' or 'add'")
        return web.json_response({"account": account, "current_credits": balance})

    async def _admin_config(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        unknown = sorted(set(body) - RUNTIME_KNOBS)
        if unknown:
            return self.error(
                400,
                "validation_failed",
                f"unknown or fixed knob(s): {', '.join(unknown)}; allowed: "
                + ", ".join(sorted(RUNTIME_KNOBS)),
            )
        for name, value in body.items():
            setattr(self.config, name, value)
        return web.json_response(
            {name: getattr(self.config, name) for name in sorted(RUNTIME_KNOBS)}
        )


def _rate_headers(decision: RateDecision) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(decision.reset),
    }


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
