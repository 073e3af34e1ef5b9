"""Sending a task file's bytes: direct upload, multipart (init, parts, listing, complete, abort)
and retry. These routes hold no request transaction: the transfer service opens short ones
around the byte streaming (see yuntu.uploads.transfer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Header, Path, Query, Request
from starlette.datastructures import UploadFile

from yuntu.identity.deps import CurrentUser
from yuntu.kit.errors import AppError, E
from yuntu.kit.http import own_transactions, release_session
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope
from yuntu.uploads import transfer
from yuntu.uploads.transfer_schemas import (
    MultipartInit,
    MultipartOut,
    PartOut,
    PartsOut,
    TaskFileResult,
)

router = make_router(tags=["uploads"])
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Upload task id")]
FileId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Task file id")]
BASE = "/upload-tasks/{task_id}/files/{file_id}"
FILE_ERRORS = error_responses(400, 401, 404, 409, 413, 502, 507)
READ_CHUNK = 1024 * 1024


async def _form_file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(READ_CHUNK):
        yield chunk


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


@router.post(
    f"{BASE}/upload",
    summary="Upload a small file in one request",
    responses=FILE_ERRORS,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            }
        }
    },
)
@own_transactions
async def direct_upload(
    request: Request, task_id: TaskId, file_id: FileId, auth: CurrentUser
) -> Envelope[TaskFileResult]:
    """The raw body (any content type but multipart) or a multipart form field `file`. Up to
    `YUNTU_UPLOAD_DIRECT_MAX_BYTES` (5 MiB); larger files use the multipart upload. The server
    hashes the bytes; size and MD5 must match the manifest or the file fails and nothing is
    kept."""
    await release_session(request)
    db = request.app.state.db
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise AppError(
                E.VALIDATION_ERROR,
                details=[
                    {"field": "body.file", "message": "a file field named `file` is required"}
                ],
            )
        try:
            file = await transfer.direct_upload(
                db, auth.user.id, task_id, file_id, _form_file_chunks(upload)
            )
        finally:
            await form.close()
    else:
        file = await transfer.direct_upload(db, auth.user.id, task_id, file_id, request.stream())
    return Envelope(data=TaskFileResult.model_validate(file))


@router.post(
    f"{BASE}/multipart/init",
    summary="Start (or resume) a multipart upload",
    responses=FILE_ERRORS,
)
@own_transactions
async def multipart_init(
    request: Request, task_id: TaskId, file_id: FileId, auth: CurrentUser, body: MultipartInit
) -> Envelope[MultipartOut]:
    """Returns the upload id, part size and part count. Calling it again while the upload is
    open returns the same upload (resume with `GET .../multipart`). With `direct: true` (S3
    storage) the answer carries a presigned URL per part for direct-to-storage upload; the
    server still verifies the assembled file on complete."""
    await release_session(request)
    upload, urls = await transfer.init_multipart(
        request.app.state.db,
        auth.user.id,
        task_id,
        file_id,
        part_size=body.part_size,
        direct=body.direct,
    )
    return Envelope(data=MultipartOut.build(upload, urls))


@router.post(
    f"{BASE}/multipart/upload",
    summary="Send one part (raw body)",
    responses=FILE_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
@own_transactions
async def multipart_upload(
    request: Request,
    task_id: TaskId,
    file_id: FileId,
    auth: CurrentUser,
    part_number: Annotated[int, Query(ge=1, le=transfer.MAX_PARTS)],
    content_md5: Annotated[str | None, Header(alias="Content-MD5")] = None,
) -> Envelope[PartOut]:
    """Parts may arrive in parallel and in any order; re-sending a part replaces it. Every part
    but the last must be exactly the part size. With `Content-MD5` the part is checked."""
    await release_session(request)
    db = request.app.state.db
    upload = await transfer.check_part(
        db, auth.user.id, task_id, file_id, part_number, _declared_length(request)
    )
    data = await request.body()
    part = await transfer.put_part(db, upload, part_number, data, content_md5)
    return Envelope(data=PartOut(part_number=part.part_number, size=part.size, etag=part.etag))


@router.get(f"{BASE}/multipart", summary="List the parts received", responses=FILE_ERRORS)
async def multipart_parts(
    request: Request, task_id: TaskId, file_id: FileId, auth: CurrentUser
) -> Envelope[PartsOut]:
    """What a restarted client needs to resume: the upload and every part already stored."""
    upload, parts = await transfer.list_parts(request.app.state.db, auth.user.id, task_id, file_id)
    return Envelope(data=PartsOut.build(upload, parts))


@router.post(
    f"{BASE}/multipart/complete", summary="Assemble and verify the file", responses=FILE_ERRORS
)
@own_transactions
async def multipart_complete(
    request: Request, task_id: TaskId, file_id: FileId, auth: CurrentUser
) -> Envelope[TaskFileResult]:
    """Checks that every part is there (400 PARTS_MISSING lists the missing ones; the upload
    stays open), assembles them, and compares the size and MD5 the server computed with the
    manifest: a mismatch fails the file and keeps nothing."""
    await release_session(request)
    file = await transfer.complete_multipart(request.app.state.db, auth.user.id, task_id, file_id)
    return Envelope(data=TaskFileResult.model_validate(file))


@router.post(f"{BASE}/multipart/abort", summary="Abort a multipart upload", responses=FILE_ERRORS)
@own_transactions
async def multipart_abort(
    request: Request, task_id: TaskId, file_id: FileId, auth: CurrentUser
) -> Envelope[TaskFileResult]:
    """Drops every part; the file is pending again."""
    await release_session(request)
    db = request.app.state.db
    await transfer.abort_multipart(db, auth.user.id, task_id, file_id)
    file = await transfer.task_file(db, auth.user.id, task_id, file_id)
    return Envelope(data=TaskFileResult.model_validate(file))


@router.put(f"{BASE}/retry", summary="Retry a failed file", responses=FILE_ERRORS)
@own_transactions
async def retry(
    request: Request, task_id: TaskId, file_id: FileId, auth: CurrentUser
) -> Envelope[TaskFileResult]:
    """A failed file becomes pending again while attempts remain (3 by default: 409
    RETRY_LIMIT after). Its quota is reserved again (413 if it no longer fits)."""
    await release_session(request)
    file = await transfer.retry_file(request.app.state.db, auth.user.id, task_id, file_id)
    return Envelope(data=TaskFileResult.model_validate(file))
