"""Moving a task file's bytes: direct upload, multipart (through the app or presigned straight to
storage), retry, and the cleanup of abandoned multipart uploads.

No database transaction is open while bytes move: each operation checks in a read session,
streams to storage, then records the outcome in one short write transaction. On SQLite that keeps
the write lock free during transfers; on PostgreSQL it keeps connections free. The server always
computes MD5 and SHA-256 itself and compares them with the manifest; a mismatch fails the file
and keeps nothing."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive.access import Level, get_drive
from yuntu.drive.service import settings_of
from yuntu.kit.background import spawn
from yuntu.kit.db import Database, on_commit
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.drive import Drive
from yuntu.models.uploads import MultipartUpload, UploadPart, UploadTask, UploadTaskFile
from yuntu.storage import blobs
from yuntu.storage.base import BlobStore, MultipartHandle, PartInfo, StorageError
from yuntu.uploads import hashing
from yuntu.uploads.states import FileStatus, announce, move_file, task_event
from yuntu.uploads.tasks import get_task, get_task_file, place_at_destination

log = get_logger("yuntu.uploads")
MAX_PARTS = 10_000
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    task: UploadTask
    file: UploadTaskFile
    drive: Drive


async def _target(
    session: AsyncSession, task_id: int, file_id: int, user_id: int, *, lock: bool = False
) -> Target:
    """`lock`: hold the drive row (as every tree change does) so a file is never placed into
    a folder that a concurrent request is moving to the trash."""
    task = await get_task(session, task_id, user_id)
    file = await get_task_file(session, task, file_id)
    drive = await get_drive(session, task.drive_id, user_id, Level.WRITE, for_update=lock)
    return Target(task, file, drive)


def _store(db: Database) -> BlobStore:
    if db.storage is None:
        raise AppError(E.FEATURE_NOT_CONFIGURED, message="blob storage is not configured")
    return db.storage  # type: ignore[no-any-return]


def _wrong_state(file: UploadTaskFile, wanted: str) -> AppError:
    return AppError(
        E.INVALID_STATE,
        message=f"the file is {file.status}; this needs it {wanted}",
        details={"status": file.status},
    )


# -- finishing a file (shared by direct and multipart) -----------------------------------------
async def _finish(
    session: AsyncSession, target: Target, staged: blobs.StagedObject, user_id: int
) -> AppError | None:
    """Verify and place the staged bytes; returns the error to answer with when the file failed
    (the failure itself is recorded in this transaction)."""
    task, file, drive = target.task, target.file, target.drive
    store = blobs.store_of(session)
    problem: AppError | None = None
    if staged.size != file.size:
        problem = AppError(
            E.SIZE_MISMATCH, details={"declared": file.size, "received": staged.size}
        )
    elif staged.md5 != file.md5:
        problem = AppError(
            E.CHECKSUM_MISMATCH, details={"declared": file.md5, "computed": staged.md5}
        )
    if problem is None:
        try:
            async with session.begin_nested():
                blob = await blobs.adopt_staged(session, staged)
                await place_at_destination(session, task, drive, file, blob, user_id)
        except AppError as exc:  # a name conflict under policy `error`, a vanished folder
            problem = exc
            await blobs.discard(store, staged.key)
        else:
            await move_file(session, task, file, FileStatus.COMPLETED, consumed_reservation=True)
            return None
    else:
        blobs.discard_after_commit(session, store, staged.key)
    await move_file(session, task, file, FileStatus.FAILED, error=problem.spec.name)
    return problem


# -- direct upload -----------------------------------------------------------------------------
async def direct_upload(
    db: Database, user_id: int, task_id: int, file_id: int, body: AsyncIterator[bytes]
) -> UploadTaskFile:
    store = _store(db)
    async with db.read_sessionmaker() as session:
        target = await _target(session, task_id, file_id, user_id)
        limit = settings_of(session).upload_direct_max_bytes
    if target.file.status != FileStatus.PENDING:
        raise _wrong_state(target.file, "pending")
    if target.file.size > limit:
        raise AppError(
            E.FILE_TOO_LARGE,
            message=f"files over {limit} bytes use the multipart upload",
            details={"max_direct_bytes": limit},
        )
    # Accept one byte more than declared so an over-long body is reported as a size mismatch.
    staged = await blobs.ingest(store, body, max_bytes=target.file.size + 1)
    failure: AppError | None = None
    try:
        async with db.transaction() as session:
            target = await _target(session, task_id, file_id, user_id, lock=True)
            await move_file(session, target.task, target.file, FileStatus.UPLOADING)
            failure = await _finish(session, target, staged, user_id)
            file = target.file
    except BaseException:
        await blobs.discard(store, staged.key)
        raise
    if failure is not None:
        raise failure
    return file


# -- multipart ---------------------------------------------------------------------------------
def plan_parts(size: int, requested: int | None, default: int, maximum: int) -> tuple[int, int]:
    """(part size, part count): at most 10,000 parts, whole MiB, at least the default minimum."""
    part_size = max(requested or default, 5 * MiB)
    if math.ceil(size / part_size) > MAX_PARTS:
        part_size = math.ceil(size / MAX_PARTS / MiB) * MiB
    if part_size > maximum:
        raise AppError(
            E.INVALID_PART,
            message=f"part size {part_size} exceeds the server's maximum {maximum}",
            details={"max_part_bytes": maximum},
        )
    return part_size, max(1, math.ceil(size / part_size))


def expected_part_size(upload: MultipartUpload, part_number: int) -> int:
    if part_number < upload.part_count:
        return upload.part_size
    return upload.size - upload.part_size * (upload.part_count - 1)


def _handle(upload: MultipartUpload) -> MultipartHandle:
    return MultipartHandle(key=upload.storage_key, upload_id=upload.storage_upload_id)


async def _open_upload(session: AsyncSession, file_id: int) -> MultipartUpload | None:
    return await session.scalar(
        select(MultipartUpload).where(MultipartUpload.task_file_id == file_id)
    )


async def init_multipart(
    db: Database,
    user_id: int,
    task_id: int,
    file_id: int,
    *,
    part_size: int | None,
    direct: bool,
) -> tuple[MultipartUpload, list[dict[str, Any]]]:
    store = _store(db)
    async with db.transaction() as session:
        target = await _target(session, task_id, file_id, user_id)
        if direct and not store.supports_presigned_parts:
            raise AppError(E.DIRECT_PARTS_UNAVAILABLE)
        existing = await _open_upload(session, file_id)
        if existing is not None and target.file.status == FileStatus.UPLOADING:
            upload = existing  # a restarted client calling init again resumes the same upload
        else:
            if target.file.status != FileStatus.PENDING:
                raise _wrong_state(target.file, "pending")
            if target.file.size == 0:
                raise AppError(E.INVALID_PART, message="empty files use the direct upload")
            settings = settings_of(session)
            limit = 5 * 1024 * MiB if direct else settings.upload_max_part_bytes
            size, count = plan_parts(target.file.size, part_size, settings.upload_part_size, limit)
            try:
                handle = await store.multipart_create()
            except StorageError as exc:
                raise blobs.storage_app_error(exc) from exc
            await move_file(session, target.task, target.file, FileStatus.UPLOADING)
            upload = MultipartUpload(
                task_file_id=file_id,
                size=target.file.size,
                part_size=size,
                part_count=count,
                storage_key=handle.key,
                storage_upload_id=handle.upload_id,
                direct=direct,
            )
            session.add(upload)
            await session.flush()
        ttl = settings_of(session).download_url_ttl_seconds
    urls: list[dict[str, Any]] = []
    if upload.direct:
        for number in range(1, upload.part_count + 1):
            url = await store.presign_part(_handle(upload), number, ttl)
            urls.append(
                {"part_number": number, "url": url, "size": expected_part_size(upload, number)}
            )
    return upload, urls


async def list_parts(
    db: Database, user_id: int, task_id: int, file_id: int
) -> tuple[MultipartUpload, list[PartInfo]]:
    async with db.read_sessionmaker() as session:
        target = await _target(session, task_id, file_id, user_id)
        upload = await _open_upload(session, target.file.id)
        if upload is None:
            raise AppError(E.NOT_FOUND, message="no multipart upload is open for this file")
        rows = (
            await session.scalars(
                select(UploadPart)
                .where(UploadPart.upload_id == upload.id)
                .order_by(UploadPart.part_number)
            )
        ).all()
    if upload.direct:
        try:
            return upload, await _store(db).multipart_list(_handle(upload))
        except StorageError as exc:
            raise blobs.storage_app_error(exc) from exc
    return upload, [PartInfo(row.part_number, row.size, row.etag) for row in rows]


def _md5_header(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AppError(E.BAD_REQUEST, message="Content-MD5 is not base64") from None
    if len(raw) != 16:
        raise AppError(E.BAD_REQUEST, message="Content-MD5 is not an MD5 digest")
    return raw.hex()


async def check_part(
    db: Database,
    user_id: int,
    task_id: int,
    file_id: int,
    part_number: int,
    declared_length: int | None,
) -> MultipartUpload:
    """Everything that can be refused before a part's bytes are read."""
    async with db.read_sessionmaker() as session:
        target = await _target(session, task_id, file_id, user_id)
        upload = await _open_upload(session, target.file.id)
    if upload is None or target.file.status != FileStatus.UPLOADING:
        raise AppError(E.NOT_FOUND, message="no multipart upload is open for this file")
    if upload.direct:
        raise AppError(E.INVALID_STATE, message="this upload's parts go straight to storage")
    if not 1 <= part_number <= upload.part_count:
        raise AppError(
            E.INVALID_PART,
            message=f"part_number must be 1..{upload.part_count}",
            details={"part_count": upload.part_count},
        )
    expected = expected_part_size(upload, part_number)
    if declared_length is not None and declared_length != expected:
        raise AppError(
            E.INVALID_PART,
            message=f"part {part_number} must be {expected} bytes",
            details={"expected": expected, "received": declared_length},
        )
    return upload


async def put_part(
    db: Database,
    upload: MultipartUpload,
    part_number: int,
    data: bytes,
    content_md5: str | None,
) -> UploadPart:
    expected = expected_part_size(upload, part_number)
    if len(data) != expected:
        raise AppError(
            E.INVALID_PART,
            message=f"part {part_number} must be {expected} bytes",
            details={"expected": expected, "received": len(data)},
        )
    declared_md5 = _md5_header(content_md5)
    md5 = ""
    if declared_md5 is not None:
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if md5 != declared_md5:
            raise AppError(E.CHECKSUM_MISMATCH, details={"part_number": part_number})
    offset = upload.part_size * (part_number - 1)
    # Storing and hashing overlap (disk I/O and two digests on three threads).
    store_task = asyncio.ensure_future(
        _store(db).multipart_put(_handle(upload), part_number, offset, data)
    )
    try:
        await hashing.feed(upload.id, offset, data)
    finally:
        try:
            etag = await store_task
        except StorageError as exc:
            hashing.forget(upload.id)  # the digest state holds bytes that were not stored
            raise blobs.storage_app_error(exc) from exc
    async with db.transaction() as session:
        values = {
            "upload_id": upload.id,
            "part_number": part_number,
            "size": len(data),
            "md5": md5,
            "etag": etag,
            "created_at": datetime.now(UTC),
        }
        insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
        statement = insert(UploadPart).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["upload_id", "part_number"],
            set_={k: statement.excluded[k] for k in ("size", "md5", "etag", "created_at")},
        )
        touched = await session.execute(
            update(MultipartUpload)
            .where(MultipartUpload.id == upload.id, MultipartUpload.completing.is_(False))
            .values(last_activity_at=datetime.now(UTC))
        )
        if touched.rowcount != 1:  # type: ignore[attr-defined]
            raise AppError(E.INVALID_STATE, message="the upload was completed or aborted")
        await session.execute(statement)
        received = await session.scalar(
            select(func.coalesce(func.sum(UploadPart.size), 0)).where(
                UploadPart.upload_id == upload.id
            )
        )
        await session.execute(
            update(UploadTaskFile)
            .where(UploadTaskFile.id == upload.task_file_id)
            .values(bytes_received=received)
        )
        task = await session.scalar(
            select(UploadTask)
            .join(UploadTaskFile, UploadTaskFile.task_id == UploadTask.id)
            .where(UploadTaskFile.id == upload.task_file_id)
        )
        if task is not None:
            announce(
                session,
                task,
                task_event(
                    task,
                    "upload.progress",
                    file_id=str(upload.task_file_id),
                    part_number=part_number,
                    file_bytes_received=int(received or 0),
                    file_size=upload.size,
                ),
            )
    return UploadPart(**values)


async def _digest(store: BlobStore, upload: MultipartUpload, key: str) -> tuple[int, str, str]:
    """(size, md5, sha256) of the assembled object: from the running state when parts came in
    order through this process, otherwise (also) by reading the rest back from storage."""
    state = hashing.take(upload.id)
    if state is None or state.next_offset > upload.size:
        state = hashing.RunningDigest()
    if state.next_offset < upload.size:
        async for chunk in store.read(key, state.next_offset):
            state.hasher.update(chunk)
    hasher = state.hasher
    return hasher.size, hasher.md5.hexdigest(), hasher.sha256.hexdigest()


async def complete_multipart(
    db: Database, user_id: int, task_id: int, file_id: int
) -> UploadTaskFile:
    store = _store(db)
    # Phase 1: check the parts and claim the completion (a second caller gets 409).
    async with db.transaction() as session:
        target = await _target(session, task_id, file_id, user_id)
        upload = await _open_upload(session, target.file.id)
        if upload is None or target.file.status != FileStatus.UPLOADING:
            raise _wrong_state(target.file, "uploading with an open multipart upload")
        if upload.direct:
            try:
                parts = await store.multipart_list(_handle(upload))
            except StorageError as exc:
                raise blobs.storage_app_error(exc) from exc
        else:
            rows = await session.scalars(
                select(UploadPart).where(UploadPart.upload_id == upload.id)
            )
            parts = [PartInfo(r.part_number, r.size, r.etag) for r in rows]
        by_number = {part.part_number: part for part in parts}
        missing = [n for n in range(1, upload.part_count + 1) if n not in by_number]
        wrong = [
            n
            for n, part in by_number.items()
            if n > upload.part_count or part.size != expected_part_size(upload, n)
        ]
        if missing or wrong:
            raise AppError(
                E.PARTS_MISSING if missing else E.INVALID_PART,
                details={"missing": missing[:100], "wrong_size": wrong[:100]},
            )
        claimed = await session.execute(
            update(MultipartUpload)
            .where(MultipartUpload.id == upload.id, MultipartUpload.completing.is_(False))
            .values(completing=True)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise AppError(E.INVALID_STATE, message="this upload is already being completed")
    ordered = [by_number[n] for n in range(1, upload.part_count + 1)]
    # Phase 2: assemble and hash, no transaction open.
    try:
        key = await store.multipart_complete(_handle(upload), ordered)
        size, md5, sha256 = await _digest(store, upload, key)
    except StorageError as exc:
        async with db.transaction() as session:
            await session.execute(
                update(MultipartUpload)
                .where(MultipartUpload.id == upload.id)
                .values(completing=False)
            )
        raise blobs.storage_app_error(exc) from exc
    staged = blobs.StagedObject(key=key, size=size, md5=md5, sha256=sha256)
    # Phase 3: record the outcome.
    async with db.transaction() as session:
        target = await _target(session, task_id, file_id, user_id, lock=True)
        await session.execute(delete(MultipartUpload).where(MultipartUpload.id == upload.id))
        failure = await _finish(session, target, staged, user_id)
        file = target.file
    if failure is not None:
        raise failure
    return file


async def abort_multipart(db: Database, user_id: int, task_id: int, file_id: int) -> None:
    """Drop the parts; the file goes back to pending (a new init starts over)."""
    async with db.transaction() as session:
        target = await _target(session, task_id, file_id, user_id)
        upload = await _open_upload(session, target.file.id)
        if upload is None or upload.completing:
            raise AppError(E.NOT_FOUND, message="no multipart upload is open for this file")
        await abort_open_uploads(session, [target.file.id])
        await move_file(session, target.task, target.file, FileStatus.PENDING)


async def abort_open_uploads(session: AsyncSession, task_file_ids: list[int]) -> int:
    """Delete the open multipart uploads of these files; their storage parts are dropped once
    the transaction commits (the expiry job catches any whose abort failed)."""
    store = blobs.store_of(session)
    handles: list[MultipartHandle] = []
    for start in range(0, len(task_file_ids), 500):
        chunk = task_file_ids[start : start + 500]
        rows = (
            await session.scalars(
                select(MultipartUpload).where(MultipartUpload.task_file_id.in_(chunk))
            )
        ).all()
        for row in rows:
            handles.append(_handle(row))
            hashing.forget(row.id)
        await session.execute(
            delete(MultipartUpload).where(MultipartUpload.task_file_id.in_(chunk))
        )

    async def abort_all() -> None:
        for handle in handles:
            try:
                await store.multipart_abort(handle)
            except StorageError:
                log.warning("multipart_abort_failed", key=handle.key)

    if handles:
        on_commit(session, lambda: spawn(abort_all()))
    return len(handles)


async def task_file(db: Database, user_id: int, task_id: int, file_id: int) -> UploadTaskFile:
    async with db.read_sessionmaker() as session:
        return (await _target(session, task_id, file_id, user_id)).file


async def retry_file(db: Database, user_id: int, task_id: int, file_id: int) -> UploadTaskFile:
    async with db.transaction() as session:
        target = await _target(session, task_id, file_id, user_id)
        if target.file.status != FileStatus.FAILED:
            raise _wrong_state(target.file, "failed")
        limit = settings_of(session).upload_max_attempts
        if target.file.attempts >= limit:
            raise AppError(E.RETRY_LIMIT, details={"attempts": target.file.attempts, "max": limit})
        await move_file(session, target.task, target.file, FileStatus.PENDING)
        return target.file


async def expire_idle_uploads(db: Database, idle: timedelta, limit: int = 200) -> int:
    """Fail multipart uploads without activity for `idle`: parts dropped, quota released."""
    cutoff = datetime.now(UTC) - idle
    expired = 0
    async with db.transaction() as session:
        rows = (
            await session.scalars(
                select(MultipartUpload)
                .where(
                    MultipartUpload.last_activity_at < cutoff, MultipartUpload.completing.is_(False)
                )
                .limit(limit)
            )
        ).all()
        for upload in rows:
            file = await session.get(UploadTaskFile, upload.task_file_id)
            if file is None:
                continue
            task = await session.get(UploadTask, file.task_id)
            assert task is not None
            await abort_open_uploads(session, [file.id])
            if file.status == FileStatus.UPLOADING:
                await move_file(session, task, file, FileStatus.FAILED, error="UPLOAD_EXPIRED")
            expired += 1
    return expired
