"""Route handlers of the simulated API: files, generations, credits and media.

Authentication, the rate limit and faults before the effect are done by the middleware in
:mod:`batchgen.sim.app`; a handler finds the caller's account in ``request[ACCOUNT_KEY]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import BodyPartReader, web

from batchgen.job.catalog import REFERENCE_PARAM, Catalog, ReferenceInfo, Violation
from batchgen.job.filetypes import image_problem, sniff_mime
from batchgen.sim.images import CONTENT_TYPES, EXTENSIONS, render
from batchgen.sim.state import FileRecord, InsufficientCredits, Task, fingerprint, iso

if TYPE_CHECKING:
    from batchgen.job.catalog import Catalog
    from batchgen.sim.faults import Faults
    from batchgen.sim.state import Ledger, SimConfig, SimState


class Simulator(Protocol):
    """What the handlers need of :class:`batchgen.sim.app.Simulator` (which builds them), so
    that this module does not import the app back."""

    config: SimConfig
    catalog: Catalog
    ledger: Ledger
    faults: Faults
    state: SimState

    def clock(self) -> float: ...

    def error(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> web.Response: ...


CREATE_FIELDS = frozenset({"model", "prompt", "params", "client_request_id"})
MAX_CLIENT_REQUEST_ID = 128
MAX_IDEMPOTENCY_KEY = 255
_FILE_PATH = "/media/files/"

# Typed storage keys where this aiohttp has them (3.12+), plain strings before.
ACCOUNT_KEY: Any = web.RequestKey("account", str) if hasattr(web, "RequestKey") else "account"
CODE_KEY: Any = web.ResponseKey("code", str) if hasattr(web, "ResponseKey") else "code"
DROPPED_KEY: Any = web.ResponseKey("dropped", bool) if hasattr(web, "ResponseKey") else "dropped"
TRACE_KEY: Any = web.RequestKey("trace", str) if hasattr(web, "RequestKey") else "trace"
"""The caller's client_request_id of a create or upload, for the ordered request log."""


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class Handlers:
    """The API routes, bound to one :class:`~batchgen.sim.app.Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.state = sim.state

    @property
    def catalog(self) -> Catalog:
        """The simulator's current catalog (tests may replace it while it serves)."""
        return self.sim.catalog

    def _invalid(self, violations: list[Violation]) -> web.Response:
        return self.sim.error(
            400,
            "validation_failed",
            "; ".join(v.message for v in violations),
            details=[{"field": v.field, "rule": v.rule, "message": v.message} for v in violations],
        )

    # ---------------------------------------------------------------- tasks

    def task_json(self, task: Task, origin: str, *, fresh: bool = False) -> dict[str, Any]:
        """The public task object; ``fresh`` shows a task just created (always ``queued``)."""
        if fresh:
            status, updated = "queued", task.created_at
        else:
            status, updated = self.state.view(task)
        result = error = None
        final = 0
        if status == "succeeded":
            final = task.cost
            url = f"{origin}/media/{task.id}/0.{EXTENSIONS.get(task.fmt, 'png')}"
            result = {"primary_url": url, "urls": [url]}
        elif status == "failed":
            code = self.sim.config.failure_code or "generation_failed"
            error = {"code": code, "message": f"The generation failed (simulated {code})."}
        return {
            "id": task.id,
            "object": "generation",
            "status": status,
            "model": task.model,
            "reserved_credits": task.cost,
            "final_credits": final,
            "created_at": iso(task.created_at),
            "updated_at": iso(updated),
            "result": result,
            "error": error,
        }

    async def create_generation(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/v1/generations``."""
        sim = self.sim
        account: str = request[ACCOUNT_KEY]
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._invalid([Violation("body", "json", "body: must be a JSON object (json)")])
        if not isinstance(body, dict):
            return self._invalid([Violation("body", "json", "body: must be a JSON object (json)")])
        if isinstance(body.get("client_request_id"), str):
            request[TRACE_KEY] = body["client_request_id"]
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            key = key.strip()
            if not key or len(key) > MAX_IDEMPOTENCY_KEY:
                message = f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
                return self._invalid([Violation("Idempotency-Key", "max_length", message)])
            claim, original = self.state.begin_create(account, key, fingerprint(body))
            if claim == "replay" and original is not None:
                return web.json_response(self.task_json(original, _origin(request)), status=200)
            if claim == "conflict_body":
                return sim.error(
                    409,
                    "idempotency_conflict",
                    "This Idempotency-Key was used with a different request body.",
                )
            if claim == "conflict_in_flight":
                return sim.error(
                    409,
                    "idempotency_conflict",
                    "A request with this Idempotency-Key is still being processed.",
                )
        created = False
        try:
            slow = sim.faults.slow()
            if slow:
                sim.ledger.fault("slow")
            delay = sim.config.create_delay + slow
            if delay > 0:
                await asyncio.sleep(delay)
            violations, model, cost = self._check_create(account, body)
            if violations:
                return self._invalid(violations)
            aspect, fmt = self.catalog.image_target(model, body.get("params") or {})
            queue_s, run_s, outcome, stuck = sim.faults.task_timing(model)
            try:
                task = self.state.create_task(
                    task_id=f"task_{sim.faults.token()}",
                    account_id=account,
                    model=model,
                    cost=cost,
                    aspect=aspect,
                    fmt=fmt,
                    queue_s=queue_s,
                    run_s=run_s,
                    outcome=outcome,
                    stuck=stuck,
                    idempotency_key=key,
                    client_request_id=body.get("client_request_id"),
                )
            except InsufficientCredits as exc:
                return sim.error(
                    sim.config.insufficient_status,
                    "insufficient_credits",
                    f"This task needs {exc.cost} credits; the balance is {exc.balance}.",
                    required_credits=exc.cost,
                    current_credits=exc.balance,
                )
            created = True
        finally:
            if key is not None and not created:
                self.state.release_key(account, key)
        resp = web.json_response(
            self.task_json(task, _origin(request), fresh=True), status=sim.config.create_status
        )
        if sim.faults.drop_after():
            sim.ledger.fault("drop_after")
            return drop(request)
        return resp

    def _check_create(
        self, account: str, body: Mapping[str, Any]
    ) -> tuple[list[Violation], str, int]:
        out: list[Violation] = []
        for name in sorted(set(body) - CREATE_FIELDS):
            hint = " (references go in params.referenceMediaItems)" if "ref" in name.lower() else ""
            out.append(
                Violation(
                    name,
                    "unknown_field",
                    f"{name}: not a field of this request{hint} (unknown_field)",
                )
            )
        model = body.get("model")
        if model is None or model == "":
            return [*out, Violation("model", "required", "model: required (required)")], "", 0
        if not isinstance(model, str):
            return [*out, Violation("model", "type", "model: must be a string (type)")], "", 0
        crid = body.get("client_request_id")
        if crid is not None and (not isinstance(crid, str) or len(crid) > MAX_CLIENT_REQUEST_ID):
            out.append(
                Violation(
                    "client_request_id",
                    "max_length",
                    f"client_request_id: must be a string of at most {MAX_CLIENT_REQUEST_ID} "
                    "characters (max_length)",
                )
            )
        params = body.get("params")
        if params is None:
            params = {}
        references: list[ReferenceInfo] = []
        if isinstance(params, Mapping):
            references, problems = self._references(account, params.get(REFERENCE_PARAM))
            out.extend(problems)
        out.extend(self.catalog.validate(model, body.get("prompt"), params, references))
        spec = self.catalog.get(model)
        return out, model, spec.base_credits if spec else 0

    def _references(self, account: str, items: Any) -> tuple[list[ReferenceInfo], list[Violation]]:
        if items is None:
            return [], []
        field = f"params.{REFERENCE_PARAM}"
        if not isinstance(items, list):
            return [], [Violation(field, "type", f"{field}: must be a list (type)")]
        refs: list[ReferenceInfo] = []
        out: list[Violation] = []
        for i, item in enumerate(items):
            where = f"{field}[{i}]"
            if not isinstance(item, Mapping):
                out.append(Violation(where, "type", f"{where}: must be an object (type)"))
                continue
            url = item.get("url")
            record = None
            if isinstance(url, str) and _FILE_PATH in url:
                file_id = url.rsplit(_FILE_PATH, 1)[1].split("/", 1)[0].split("?", 1)[0]
                record = self.state.get_file(account, file_id)
            if record is None:
                out.append(
                    Violation(
                        f"{where}.url",
                        "unknown_file",
                        f"{where}.url: not the url of a file uploaded by this account through "
                        "POST /api/v1/files (unknown_file)",
                    )
                )
                continue
            kind = item.get("kind")
            if kind != record.kind:
                out.append(
                    Violation(
                        f"{where}.kind",
                        "kind",
                        f"{where}.kind: {kind!r} does not match the uploaded file's kind "
                        f"{record.kind!r} (kind)",
                    )
                )
                continue
            refs.append(ReferenceInfo(record.kind, record.mime_type, record.size, record.name))
        return refs, out

    async def get_generation(self, request: web.Request) -> web.Response:
        """``GET /api/v1/generations/{task_id}``."""
        task = self.state.get_task(request[ACCOUNT_KEY], request.match_info["task_id"])
        if task is None:
            return self.sim.error(404, "not_found", "No such task for this account.")
        self.sim.ledger.poll(task.model)
        return web.json_response(self.task_json(task, _origin(request)))

    async def get_credits(self, request: web.Request) -> web.Response:
        """``GET /api/v1/credits``."""
        return web.json_response({"current_credits": self.state.balance(request[ACCOUNT_KEY])})

    # ---------------------------------------------------------------- files

    def file_json(self, record: FileRecord, origin: str) -> dict[str, Any]:
        """The upload response object."""
        return {
            "id": record.id,
            "object": "file",
            "url": f"{origin}{_FILE_PATH}{record.id}",
            "kind": record.kind,
            "name": record.name,
            "mimeType": record.mime_type,
            "size": record.size,
            "sha256": record.sha256,
            "created_at": iso(record.created_at),
            "duration_token": None,
        }

    async def upload_file(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/v1/files`` (multipart: file, kind, model, client_request_id)."""
        sim = self.sim
        if not request.content_type.startswith("multipart/"):
            message = "body: must be multipart/form-data with a 'file' part (multipart)"
            return self._invalid([Violation("body", "multipart", message)])
        cap = sim.config.max_upload_bytes
        fields: dict[str, str] = {}
        data = bytearray()
        size = 0
        filename: str | None = None
        has_file = False
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "file" and not has_file:
                    has_file = True
                    filename = part.filename
                    while chunk := await part.read_chunk(256 * 1024):
                        size += len(chunk)
                        if size <= cap:
                            data.extend(chunk)
                elif part.name:
                    fields[part.name] = (await part.text())[:1024]
        except (ValueError, AssertionError) as exc:
            return self._invalid([Violation("body", "multipart", f"body: bad multipart ({exc})")])
        problems: list[Violation] = []
        if not has_file:
            problems.append(Violation("file", "required", "file: required (required)"))
        kind = fields.get("kind", "").strip()
        if not kind:
            problems.append(Violation("kind", "required", "kind: required (required)"))
        crid = fields.get("client_request_id") or None
        if crid is not None:
            request[TRACE_KEY] = crid
        if crid is not None and len(crid) > MAX_CLIENT_REQUEST_ID:
            message = f"client_request_id: at most {MAX_CLIENT_REQUEST_ID} characters (max_length)"
            problems.append(Violation("client_request_id", "max_length", message))
        if problems:
            return self._invalid(problems)
        mime = sniff_mime(bytes(data[:64]))
        name = filename or "upload"
        # Like the service, refuse an image that does not decode (batchgen's preflight runs the
        # same check, so the offline verdict and this one agree).
        damage = await asyncio.to_thread(image_problem, bytes(data), mime) if size <= cap else None
        info = ReferenceInfo(kind, mime, size, name, damage)
        problems = self.catalog.validate_file(kind, info, fields.get("model") or None)
        if problems:
            return self._invalid(problems)
        if sim.config.upload_delay > 0:  # a slow file store: the upload takes this long
            await asyncio.sleep(sim.config.upload_delay)
        record = FileRecord(
            id=f"file_{sim.faults.token()}",
            account=request[ACCOUNT_KEY],
            kind=kind,
            name=name,
            mime_type=mime or "application/octet-stream",
            size=size,
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=sim.clock(),
            data=bytes(data),
            client_request_id=crid,
        )
        self.state.add_file(record)
        resp = web.json_response(self.file_json(record, _origin(request)), status=201)
        if sim.faults.drop_after():
            sim.ledger.fault("drop_after")
            return drop(request)
        return resp

    async def get_file(self, request: web.Request) -> web.Response:
        """``GET /api/v1/files/{file_id}``."""
        record = self.state.get_file(request[ACCOUNT_KEY], request.match_info["file_id"])
        if record is None:
            return self.sim.error(404, "not_found", "No such file for this account.")
        return web.json_response(self.file_json(record, _origin(request)))

    # ---------------------------------------------------------------- media (no auth)

    async def media_result(self, request: web.Request) -> web.Response:
        """A result image of a succeeded task (capability URL: no key needed)."""
        task = self.state.tasks.get(request.match_info["task_id"])
        if task is None or self.state.view(task)[0] != "succeeded":
            return self.sim.error(404, "not_found", "No such result.")
        if self.sim.config.media_delay:
            await asyncio.sleep(self.sim.config.media_delay)
        variant = int(hashlib.blake2s(task.id.encode(), digest_size=2).hexdigest(), 16)
        body = render(task.aspect, task.fmt, self.sim.config.image_long_side, variant)
        return web.Response(body=body, content_type=CONTENT_TYPES.get(task.fmt, "image/png"))

    async def media_file(self, request: web.Request) -> web.Response:
        """The bytes of an uploaded file."""
        record = self.state.get_file(None, request.match_info["file_id"])
        if record is None:
            return self.sim.error(404, "not_found", "No such file.")
        return web.Response(body=record.data, content_type=record.mime_type)


def drop(request: web.Request) -> web.Response:
    """Drop the connection without an answer (the client sees a disconnect)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    resp = web.Response(status=499)
    resp[DROPPED_KEY] = True
    return resp
