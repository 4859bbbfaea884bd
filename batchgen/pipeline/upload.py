"""Uploads of reference files: once per unique file (sha256 of its bytes), cached in the journal.

The cache entry is committed before any submit uses it, so a replayed request body carries the
same URL and stays byte-identical (DESIGN.md, invariant 1).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.errors import BatchgenError, NotSentError
from batchgen.job.catalog import Catalog
from batchgen.job.filetypes import kind_of_mime, sniff_mime
from batchgen.job.references import resolve_reference
from batchgen.pipeline.remote import fetched_violations, from_bytes, from_error, size_cap
from batchgen.store import journal as J

if TYPE_CHECKING:
    from batchgen.rivya.client import RivyaClient


class RowFailure(BatchgenError):
    """A failure that belongs to one row (the run goes on). ``invalid``: the row's input is at
    fault (a URL reference that cannot be fetched or breaks a rule), and nothing was sent."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        request_id: str | None = None,
        invalid: bool = False,
    ) -> None:
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        self.invalid = invalid
        super().__init__(f"{code}: {message}")


class Uploader:
    """Turns a row's reference cell into ``referenceMediaItems`` entries, uploading at most once."""

    def __init__(
        self,
        client: RivyaClient,
        journal: J.Journal,
        catalog: Catalog,
        *,
        base_dir: Path,
        concurrency: int,
        column: str,
        on_upload: Any = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.catalog = catalog
        self.base_dir = base_dir
        self.column = column
        self.sem = asyncio.Semaphore(max(1, concurrency))
        self.inflight: dict[str, asyncio.Future[J.Upload]] = {}
        self.on_upload = on_upload
        self.uploaded = 0
        self.reused = 0
        # Asked before each fetch or upload starts: False once the run stopped submitting.
        self.proceed: Callable[[], bool] = lambda: True

    async def items_for(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        cell = row["reference"]
        if not cell:
            return []
        if not self.proceed():
            raise NotSentError("upload")
        data: bytes | None = None
        sha = row["reference_sha256"]
        if sha is None:
            # A URL reference: fetch it to learn its bytes (the service wants an upload).
            data, sha = await self._fetch(cell, row["model"])
        upload = self.journal.get_upload(sha)
        if upload is None:
            upload = await self._upload_once(sha, cell, data, row["model"])
        else:
            self.reused += 1
        item: dict[str, Any] = {"url": upload.url, "kind": upload.kind}
        if upload.name:
            item["name"] = upload.name
        if upload.mime_type:
            item["mimeType"] = upload.mime_type
        return [item]

    async def _fetch(self, url: str, model: str) -> tuple[bytes, str]:
        """The bytes of a URL reference and their sha256, judged as an estimate judges them
        (pipeline.remote): a URL that breaks a rule makes the row invalid."""
        data = b""
        try:
            media = await self.client.fetch_media(url, max_bytes=size_cap(self.catalog, model))
        except BatchgenError as exc:
            found = from_error(url, exc)
        else:
            data = media.body
            found = await asyncio.to_thread(
                from_bytes, url, data, status=media.status, content_type=media.content_type
            )
        problems = fetched_violations(self.catalog, model, self.column, found)
        if problems:
            raise RowFailure(
                "invalid_input",
                "; ".join(v.message for v in problems),
                field=self.column,
                invalid=True,
            )
        assert found.sha256 is not None
        return data, found.sha256

    async def _upload_once(self, sha: str, cell: str, data: bytes | None, model: str) -> J.Upload:
        fut = self.inflight.get(sha)
        if fut is not None:
            self.reused += 1
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self.inflight[sha] = fut
        try:
            upload = await self._upload(sha, cell, data, model)
        except BaseException as exc:
            del self.inflight[sha]
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        fut.set_result(upload)
        return upload

    async def _upload(self, sha: str, cell: str, data: bytes | None, model: str) -> J.Upload:
        if data is None:
            path = resolve_reference(cell, self.base_dir)
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                raise RowFailure(
                    "reference_unreadable",
                    f"column '{self.column}': cannot read {path}: {exc.strerror}",
                    field=self.column,
                ) from exc
            if hashlib.sha256(data).hexdigest() != sha:
                raise RowFailure(
                    "reference_changed",
                    f"column '{self.column}': {path} changed since the manifest was checked;"
                    " run again",
                    field=self.column,
                )
            name = path.name
        else:
            name = Path(cell.split("?", 1)[0]).name or "reference"
        mime = sniff_mime(data[:64])
        kind = kind_of_mime(mime) if mime else None
        if mime is None or kind is None:
            raise RowFailure(
                "invalid_input",
                f"column '{self.column}': {cell} is not a recognised image, video or audio file",
                field=self.column,
            )
        async with self.sem:
            if not self.proceed():
                raise NotSentError("upload")
            uploaded = await self.client.upload_file(
                data,
                filename=name,
                kind=kind,
                mime_type=mime,
                model=model,
                client_request_id="upload-" + sha[:32],
            )
        upload = J.Upload(
            sha256=sha,
            file_id=uploaded.id,
            url=uploaded.url,
            kind=uploaded.kind or kind,
            mime_type=uploaded.mime_type or mime,
            name=uploaded.name or name,
            size=uploaded.size or len(data),
        )
        self.journal.put_upload(upload, model)  # committed before any submit uses it
        self.uploaded += 1
        if self.on_upload is not None:
            self.on_upload(upload)
        return upload
