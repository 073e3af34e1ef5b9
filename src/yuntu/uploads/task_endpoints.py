"""Batch upload tasks: create from a manifest, list, detail, files, progress, cancel, delete,
export the storage manifest, and the instant-upload check (秒传 with proof of possession).
The bytes themselves go through the transfer endpoints (transfer_endpoints.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Response
from pydantic import BaseModel

from yuntu.drive.service import settings_of
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Page, PageParams, make_page, page_params
from yuntu.uploads import instant, proofs, task_views, tasks
from yuntu.uploads.schemas import (
    CheckIn,
    CheckOut,
    ExportManifest,
    ProgressOut,
    TaskCreate,
    TaskCreated,
    TaskDeleted,
    TaskDetail,
    TaskFileOut,
    TaskOut,
)
from yuntu.uploads.states import FileStatus, TaskStatus

router = make_router(tags=["uploads"])
TaskId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Upload task id")]
READ_ERRORS = error_responses(401, 404)
WRITE_ERRORS = error_responses(401, 403, 404, 409)


def _json(envelope: BaseModel, status_code: int = 200) -> Response:
    """Serialize once (in pydantic's core) for answers with thousands of entries; FastAPI would
    otherwise validate the returned model again before serializing it."""
    return Response(
        envelope.model_dump_json(), status_code=status_code, media_type="application/json"
    )


def proof_key(request: Request) -> bytes:
    """The instant-upload signing key, derived once per app from its secret."""
    key: bytes | None = getattr(request.app.state, "instant_upload_key", None)
    if key is None:
        key = proofs.derive_key(request.app.state.settings.resolve_secret_key())
        request.app.state.instant_upload_key = key
    return key


@router.post(
    "/upload-tasks",
    status_code=201,
    summary="Create an upload task from a manifest",
    response_model=Envelope[TaskCreated],
    responses=error_responses(401, 403, 404, 409),
)
async def create_task(body: TaskCreate, auth: CurrentUser, session: DbSession) -> Response:
    """The client's manifest: `{name?, drive_id? (default drive), folder_id? (default root),
    target_path? (below folder_id, created when missing), conflict (error|rename|overwrite,
    default rename), client_info, files: [{path, size, md5, mtime?, mime_type?}]}`.

    Every path is checked (no `..`, empty segments or control characters; 400 INVALID_PATH
    naming the entry), so are duplicates, the drive's file-type policy (400
    FILE_TYPE_NOT_ALLOWED) and maximum file size (413 FILE_TOO_LARGE), and the number of entries
    (400 beyond `YUNTU_UPLOAD_MAX_MANIFEST_FILES`). The whole manifest's bytes are then reserved
    on the drive's quota (413 QUOTA_EXCEEDED, nothing created), the folder structure is created
    and one task file per entry is returned with its id (used by check, upload and retry).
    Zero-byte files are allowed (they are uploaded like any other)."""
    task, files = await tasks.create_task(session, auth.user.id, body)
    data = TaskCreated.model_validate({**task_views.task_summary(task), "files": files})
    return _json(Envelope[TaskCreated](data=data), status_code=201)


@router.get("/upload-tasks", summary="List my upload tasks (newest first)", responses=READ_ERRORS)
async def list_tasks(
    auth: CurrentUser,
    session: DbSession,
    params: Annotated[PageParams, Depends(page_params)],
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this state")] = None,
) -> Envelope[Page[TaskOut]]:
    rows, total = await task_views.list_tasks(session, auth.user.id, status, params)
    items = [TaskOut.model_validate(row) for row in rows]
    return Envelope(data=Page[TaskOut](**make_page(items, total, params)))


@router.get(
    "/upload-tasks/{task_id}",
    summary="An upload task with percentages and what remains",
    responses=READ_ERRORS,
)
async def get_task(task_id: TaskId, auth: CurrentUser, session: DbSession) -> Envelope[TaskDetail]:
    task = await tasks.get_task(session, task_id, auth.user.id)
    return Envelope(data=TaskDetail.model_validate(await task_views.task_detail(session, task)))


@router.get(
    "/upload-tasks/{task_id}/files",
    summary="The files of an upload task (manifest order)",
    responses=READ_ERRORS,
)
async def list_files(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    params: Annotated[PageParams, Depends(page_params)],
    status: Annotated[FileStatus | None, Query(description="Only files in this state")] = None,
) -> Envelope[Page[TaskFileOut]]:
    """Each file with its status, attempts, `can_retry` (failed with attempts left), the drive
    file it became (`file_id`) and the last error."""
    task = await tasks.get_task(session, task_id, auth.user.id)
    max_attempts = settings_of(session).upload_max_attempts
    rows, total = await task_views.list_files(session, task, status, params, max_attempts)
    items = [TaskFileOut.model_validate(row) for row in rows]
    return Envelope(data=Page[TaskFileOut](**make_page(items, total, params)))


@router.get(
    "/upload-tasks/{task_id}/progress",
    summary="Progress of an upload task: bytes, rate, ETA",
    responses=READ_ERRORS,
)
async def progress(task_id: TaskId, auth: CurrentUser, session: DbSession) -> Envelope[ProgressOut]:
    """Files and bytes done out of the total, percent (by bytes), the receive rate since the
    task started (instant uploads excluded), the ETA in seconds (null when unknown) and the
    number of files in each state."""
    task = await tasks.get_task(session, task_id, auth.user.id)
    return Envelope(data=ProgressOut.model_validate(await task_views.progress(session, task)))


@router.put(
    "/upload-tasks/{task_id}/cancel", summary="Cancel an upload task", responses=WRITE_ERRORS
)
async def cancel_task(
    task_id: TaskId, auth: CurrentUser, session: DbSession
) -> Envelope[TaskDetail]:
    """Every pending, uploading or failed file becomes cancelled and gives its quota reservation
    back; open multipart uploads are aborted. Completed files stay in the drive. A finished
    task (completed, partially failed, failed, cancelled) answers 409 INVALID_STATE."""
    task = await tasks.get_task(session, task_id, auth.user.id)
    await tasks.cancel_task(session, task)
    return Envelope(data=TaskDetail.model_validate(await task_views.task_detail(session, task)))


@router.delete("/upload-tasks/{task_id}", summary="Delete an upload task", responses=WRITE_ERRORS)
async def delete_task(
    task_id: TaskId, auth: CurrentUser, session: DbSession
) -> Envelope[TaskDeleted]:
    """Cancels the task first when it is unfinished, then deletes the task and its file rows.
    The drive files it created stay: they are ordinary files now. Answers 200 with the
    envelope (how many files this call cancelled)."""
    task = await tasks.get_task(session, task_id, auth.user.id)
    cancelled = await tasks.delete_task(session, task)
    return Envelope(data=TaskDeleted(id=task_id, cancelled_files=cancelled))


@router.post(
    "/upload-tasks/{task_id}/export-manifest",
    summary="Export the server-side storage manifest of a task",
    responses=READ_ERRORS,
)
async def export_manifest(
    task_id: TaskId, auth: CurrentUser, session: DbSession
) -> Envelope[ExportManifest]:
    """`{task_id, summary {total/completed/instant/failed/cancelled files, total_bytes,
    saved_bytes}, files: [{path, task_file_id, file_id, size, md5, sha256, storage_key,
    status}]}` in manifest order; `storage_key` is where the drive file's current version is
    stored (null for files that did not complete)."""
    task = await tasks.get_task(session, task_id, auth.user.id)
    return Envelope(
        data=ExportManifest.model_validate(await task_views.export_manifest(session, task))
    )


@router.post(
    "/upload-tasks/{task_id}/files/check",
    summary="Instant upload: challenge and proof of possession",
    response_model=Envelope[CheckOut],
    responses=WRITE_ERRORS,
)
async def check_files(
    task_id: TaskId,
    body: CheckIn,
    auth: CurrentUser,
    session: DbSession,
    key: Annotated[bytes, Depends(proof_key)],
) -> Response:
    """Batch instant upload (秒传) in two rounds; at most `YUNTU_UPLOAD_MAX_MANIFEST_FILES`
    entries per call, each file once.

    **Round 1 (challenge)**: `{files: [{file_id}]}`. Every pending file that has not failed a
    proof gets `{file_id, result: "challenge", challenge: {token, nonce, ranges: [[offset,
    length], ...], expires_at}}`: four random ranges of 4 KiB within the file (a file of at most
    16 KiB: one range covering all of it). Challenges are issued without looking for matching
    content, so a hit and a miss look the same (same shape, same work) until the proof. The token
    is stateless: base64url(JSON {task_id, file_id, ranges, nonce, exp}) "." HMAC-SHA256 under a
    key derived from the server secret; it expires after `YUNTU_INSTANT_UPLOAD_CHALLENGE_SECONDS`.

    **Round 2 (proof)**: `{files: [{file_id, proof: {token, digest}}]}` with digest = hex
    SHA-256(bytes.fromhex(nonce) + the bytes of each range, in order). The server checks the
    token (signature, expiry, this task and this file), looks up stored content with the file's
    MD5 and size, reads the ranges from storage and compares in constant time. On success the
    stored content is placed in the drive (conflict policy of the task; quota moves from reserved
    to used; nothing is sent) and the answer is `instant`. A wrong digest, an expired, tampered
    or foreign token, or no matching content answer `upload` and mark the file: it gets no new
    challenge (one guess per file) and must be uploaded normally. A placement that fails (a name
    conflict under `conflict=error`) fails that file only.

    Every entry answers `challenge`, `instant` or `upload` (zero-byte, already finished or
    uploading files: `upload` or `instant` per their state, see `status`). `bytes_saved` is
    what this call saved; `saved_bytes` the task's total. A file id of another task: 404."""
    task = await tasks.get_task(session, task_id, auth.user.id)
    placing = any(entry.proof is not None for entry in body.files)
    drive = await tasks.writable_drive(session, task, lock=placing)
    result = await instant.check_files(
        session, task, drive, body.files, key=key, user_id=auth.user.id
    )
    return _json(Envelope[CheckOut](data=CheckOut.model_validate(result)))
