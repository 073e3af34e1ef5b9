"""ZIP archives: what goes in (an upload task's finished files with their relative paths, or a
folder subtree), the streaming response, and the `uploads.archive` job that saves a task's ZIP
into its drive under `/archives/`.

An upload task can be archived once at least one of its files finished (completed or instant):
completed and partially failed tasks alike, and a task still uploading gives what is done so
far. Files deleted from the drive since the upload are left out. The archive is never built in
memory: `zipstream` streams it from the store (see there for the format).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import StreamingResponse

from yuntu.drive.access import Level, get_drive
from yuntu.drive.downloads import finished_in_drive, finished_task, link_ttl, sign_blob, store_of_db
from yuntu.drive.paths import check_type_allowed, clean_name
from yuntu.drive.scenes import save_staged
from yuntu.drive.tree import get_folder
from yuntu.drive.zipstream import (
    ArchiveError,
    Member,
    archive_size,
    member_name,
    unique_names,
    zip_stream,
)
from yuntu.jobs import service as jobs
from yuntu.jobs.context import JobContext
from yuntu.jobs.registry import PermanentError, handler
from yuntu.kit.db import database_of
from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.models.jobs import Job
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.storage import blobs
from yuntu.storage.base import BlobStore
from yuntu.storage.s3 import content_disposition

ARCHIVE_KIND = "uploads.archive"
ARCHIVES_FOLDER = "archives"
MAX_FOLDER_MEMBERS = 100_000
_RETRYABLE = frozenset({E.STORAGE_UNAVAILABLE.code, E.STORAGE_FULL.code})


# -- members -----------------------------------------------------------------------------------
async def task_members(session: AsyncSession, task: UploadTask) -> list[Member]:
    rows = (
        await session.execute(
            select(
                UploadTaskFile.relative_path,
                UploadTaskFile.mtime,
                DriveFile.mtime.label("file_mtime"),
                DriveFile.created_at,
                Blob.size,
                Blob.storage_key,
            )
            .join(DriveFile, DriveFile.id == UploadTaskFile.file_id)
            .join(Blob, Blob.id == DriveFile.blob_id)
            .where(finished_in_drive(task.id))
            .order_by(UploadTaskFile.position)
        )
    ).all()
    if not rows:
        raise AppError(E.INVALID_STATE, message="none of the task's files is left in the drive")
    names = unique_names(member_name(row.relative_path) for row in rows)
    return [
        Member(
            name=name,
            size=row.size,
            storage_key=row.storage_key,
            modified=row.file_mtime or row.mtime or row.created_at,
        )
        for name, row in zip(names, rows, strict=True)
    ]


async def folder_members(
    session: AsyncSession, drive: Drive, folder: Folder
) -> tuple[str, list[Member]]:
    """Every live file below `folder`, named `<folder name>/<relative path>` (the drive's name
    for its root). Returns (archive base name, members)."""
    top = folder.name or drive.name or "drive"
    where = [Folder.drive_id == drive.id, Folder.trashed_at.is_(None)]
    if folder.path != "/":
        below = Folder.path.startswith(f"{folder.path}/", autoescape=True)
        where.append((Folder.id == folder.id) | below)
    rows = (
        await session.execute(
            select(
                Folder.path,
                DriveFile.name,
                DriveFile.mtime,
                DriveFile.created_at,
                Blob.size,
                Blob.storage_key,
            )
            .join(DriveFile, DriveFile.folder_id == Folder.id)
            .join(Blob, Blob.id == DriveFile.blob_id)
            .where(*where, DriveFile.trashed_at.is_(None))
            .order_by(Folder.path, DriveFile.name)
            .limit(MAX_FOLDER_MEMBERS + 1)
        )
    ).all()
    if len(rows) > MAX_FOLDER_MEMBERS:
        raise AppError(
            E.BAD_REQUEST,
            message=f"more than {MAX_FOLDER_MEMBERS} files: archive a subfolder instead",
        )
    base = len(folder.path) if folder.path != "/" else 0
    names = unique_names(member_name(f"{top}/{row.path[base:]}/{row.name}") for row in rows)
    members = [
        Member(
            name=name,
            size=row.size,
            storage_key=row.storage_key,
            modified=row.mtime or row.created_at,
        )
        for name, row in zip(names, rows, strict=True)
    ]
    return top, members


def zip_response(store: BlobStore, members: list[Member], filename: str) -> StreamingResponse:
    headers = {
        "Content-Length": str(archive_size(members)),
        "Content-Disposition": content_disposition(filename),
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(
        zip_stream(members, store), media_type="application/zip", headers=headers
    )


async def task_zip(session: AsyncSession, task_id: int, user_id: int) -> StreamingResponse:
    task = await finished_task(session, task_id, user_id)
    members = await task_members(session, task)
    return zip_response(store_of_db(database_of(session)), members, f"{task.name}.zip")


async def folder_zip(
    session: AsyncSession, drive_id: int, folder_id: int, user_id: int
) -> StreamingResponse:
    drive = await get_drive(session, drive_id, user_id, Level.READ)
    folder = await get_folder(session, drive, folder_id)
    top, members = await folder_members(session, drive, folder)
    return zip_response(store_of_db(database_of(session)), members, f"{top}.zip")


# -- the archive job ---------------------------------------------------------------------------
def archive_file_name(raw: str | None, task: UploadTask) -> str:
    """`<archive_name or task name>.zip` as a valid file name."""
    base = (raw if raw is not None else task.name).replace("/", "_").replace("\\", "_").strip()
    if base.lower().endswith(".zip"):
        base = base[:-4].rstrip()
    try:
        return clean_name(f"{base}.zip", "archive_name")
    except AppError:
        if raw is not None:
            raise
        return f"task-{task.id}.zip"


async def request_archive(
    session: AsyncSession, task_id: int, user_id: int, archive_name: str | None
) -> Job:
    """Queue the job that saves the task's ZIP into its drive (WRITE access needed)."""
    task = await finished_task(session, task_id, user_id)
    drive = await get_drive(session, task.drive_id, user_id, Level.WRITE)
    name = archive_file_name(archive_name, task)
    check_type_allowed(name, drive.allowed_types, drive.denied_types)
    return await jobs.enqueue(
        session,
        ARCHIVE_KIND,
        {"task_id": str(task.id), "user_id": str(user_id), "name": name},
        owner_user_id=user_id,
        unique_key=f"{ARCHIVE_KIND}:{task.id}:{name}",
    )


def _free_bytes(drive: Drive) -> int | None:
    if drive.quota_bytes is None:
        return None
    return max(0, drive.quota_bytes - drive.used_bytes - drive.reserved_bytes)


@handler(ARCHIVE_KIND, timeout_seconds=6 * 3600, max_attempts=3)
async def archive_job(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.job.payload
    user_id, name = int(payload["user_id"]), str(payload["name"])
    db = ctx.db
    try:
        async with db.read_sessionmaker() as session:
            task = await finished_task(session, int(payload["task_id"]), user_id)
            drive = await get_drive(session, task.drive_id, user_id, Level.WRITE)
            members = await task_members(session, task)
        total = archive_size(members)
        free = _free_bytes(drive)
        if free is not None and total > free:
            raise AppError(
                E.QUOTA_EXCEEDED,
                message=f"the archive needs {total} bytes; the drive has {free} bytes free",
            )
        store = store_of_db(db)
        last = time.monotonic()

        async def on_member(index: int, done: int) -> None:
            nonlocal last
            await ctx.checkpoint()
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                await ctx.progress(done * 99 // max(total, 1), f"{index} of {len(members)} files")

        staged = await blobs.ingest(store, zip_stream(members, store, on_member=on_member))
        placed = await save_staged(
            db,
            staged,
            drive_id=drive.id,
            user_id=user_id,
            folder_segments=[ARCHIVES_FOLDER],
            name=name,
            mime_type="application/zip",
            source="archive",
        )
    except AppError as exc:
        message = f"{exc.spec.name}: {exc.message or exc.spec.en}"
        if exc.spec.code in _RETRYABLE:
            raise RuntimeError(message) from exc
        raise PermanentError(message) from exc
    except ArchiveError as exc:
        raise PermanentError(str(exc)) from exc
    link = await sign_blob(db, placed.blob, placed.name, "application/zip", ttl=link_ttl(db))
    await ctx.log("info", f"saved {placed.path} ({placed.size} bytes, {len(members)} files)")
    return {
        "file_id": str(placed.file_id),
        "drive_id": str(placed.drive_id),
        "path": placed.path,
        "size": placed.size,
        "md5": placed.md5,
        "sha256": placed.sha256,
        "files": len(members),
        "download_url": link.url,
        "expires_at": link.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "finished_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
