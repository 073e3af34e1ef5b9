"""Batch upload tasks: a client manifest becomes a task, its folders and one row per file, with
the quota for the whole manifest reserved up front (so a 10,000-file upload cannot run out of
space halfway). Cancelling and deleting give the reservation back through the file state
machine (`states`), which is the only place a task file changes status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import tree
from yuntu.drive.access import Level, get_drive
from yuntu.drive.paths import Conflict, split_path
from yuntu.drive.service import (
    check_file_allowed,
    ensure_default_drive,
    reserve,
    settings_of,
)
from yuntu.kit.db import bulk_insert
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.models.uploads import MultipartUpload, UploadTask, UploadTaskFile
from yuntu.uploads import states
from yuntu.uploads.schemas import ManifestFile, TaskCreate
from yuntu.uploads.states import FileStatus, TaskStatus

# A manifest may declare at most this many bytes in total (the counters are 64-bit).
MAX_MANIFEST_BYTES = 2**53
UNFINISHED_TASK = frozenset({TaskStatus.PENDING, TaskStatus.UPLOADING})
CANCELLABLE_FILE = (FileStatus.PENDING, FileStatus.UPLOADING, FileStatus.FAILED)


async def place_at_destination(
    session: AsyncSession,
    task: UploadTask,
    drive: Drive,
    file: UploadTaskFile,
    blob: Blob,
    user_id: int,
) -> DriveFile:
    """Put a task file's verified content (the caller holds one reference on `blob` for it) at
    the file's destination under the task's conflict policy, consuming its quota reservation,
    and link the task file to the drive file. Uploads and instant uploads both end here."""
    folder = await tree.get_folder(session, drive, file.folder_id)
    placed = await tree.place_file(
        session,
        drive,
        folder,
        file.name,
        blob,
        user_id,
        conflict=Conflict(task.conflict),
        reserved=file.size,
        mtime=file.mtime,
        mime_type=file.mime_type,
        source="client",
    )
    await session.execute(
        update(UploadTaskFile)
        .where(UploadTaskFile.id == file.id)
        .values(file_id=placed.id, sha256=blob.sha256)
        .execution_options(synchronize_session=False)
    )
    return placed


# -- lookups (also used by the transfer endpoints) ---------------------------------------------
async def get_task(
    session: AsyncSession, task_id: int, user_id: int, *, for_update: bool = False
) -> UploadTask:
    """The caller's task; another user's task answers 404 exactly like a missing one."""
    statement = select(UploadTask).where(UploadTask.id == task_id, UploadTask.user_id == user_id)
    if for_update:
        statement = statement.with_for_update()
    task = await session.scalar(statement)
    if task is None:
        raise AppError(E.NOT_FOUND)
    return task


async def get_task_file(session: AsyncSession, task: UploadTask, file_id: int) -> UploadTaskFile:
    """A file of `task` (404 for a file of another task)."""
    file = await session.scalar(
        select(UploadTaskFile).where(
            UploadTaskFile.id == file_id, UploadTaskFile.task_id == task.id
        )
    )
    if file is None:
        raise AppError(E.NOT_FOUND)
    return file


async def writable_drive(session: AsyncSession, task: UploadTask, *, lock: bool = False) -> Drive:
    """The task's drive, which its creator must still be allowed to write (403 otherwise).
    `lock`: hold the drive row, as every change of its tree does (files placed)."""
    return await get_drive(session, task.drive_id, task.user_id, Level.WRITE, for_update=lock)


async def _lock_drive(session: AsyncSession, drive_id: int) -> None:
    """Take the drive row first, in the order uploads and tree changes take their locks (drive,
    then task and files), so a cancel never deadlocks with a file completing."""
    await session.execute(select(Drive.id).where(Drive.id == drive_id).with_for_update())


# -- creation ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Entry:
    dirs: tuple[str, ...]
    name: str
    path: str  # normalized relative path


def _entry_error(exc: AppError, index: int, raw: str, field: str = "path") -> AppError:
    detail: dict[str, Any] = {
        "field": f"files.{index}.{field}",
        "index": index,
        "path": raw[:300],
        "message": exc.message or exc.spec.en,
    }
    if isinstance(exc.details, dict):
        detail.update(exc.details)
    return AppError(exc.spec, message=exc.message, details=[detail])


def _validate_manifest(
    files: Sequence[ManifestFile], drive: Drive, prefix: str, max_path_bytes: int
) -> list[_Entry]:
    """Every entry's path, type and size; duplicates; a path used both as a file and as a
    folder. The first problem answers with the entry's index."""
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(files):
        try:
            segments = split_path(item.path, f"files.{index}.path", allow_root=False)
        except AppError as exc:
            raise _entry_error(exc, index, item.path) from None
        path = "/".join(segments)
        if len((prefix + path).encode()) > max_path_bytes:
            raise _entry_error(
                AppError(E.INVALID_PATH, message=f"path is longer than {max_path_bytes} bytes"),
                index,
                item.path,
            )
        if path in seen:
            raise _entry_error(
                AppError(
                    E.INVALID_PATH,
                    message="the same path appears twice in the manifest",
                    details={"duplicate_of": seen[path]},
                ),
                index,
                item.path,
            )
        seen[path] = index
        try:
            check_file_allowed(drive, segments[-1], item.size)
        except AppError as exc:
            raise _entry_error(exc, index, item.path) from None
        entries.append(_Entry(tuple(segments[:-1]), segments[-1], path))
    for index, entry in enumerate(entries):
        for depth in range(1, len(entry.dirs) + 1):
            folder = "/".join(entry.dirs[:depth])
            if folder in seen:
                raise _entry_error(
                    AppError(
                        E.INVALID_PATH,
                        message="a path is used both as a file and as a folder",
                        details={"file_index": seen[folder]},
                    ),
                    index,
                    files[index].path,
                )
    return entries


async def create_task(
    session: AsyncSession, user_id: int, spec: TaskCreate
) -> tuple[UploadTask, list[dict[str, Any]]]:
    """Validate the manifest, reserve its bytes, create its folders, the task and its files.
    Returns the task and the created files as `{id, position, path, status}`."""
    settings = settings_of(session)
    if len(spec.files) > settings.upload_max_manifest_files:
        raise AppError(
            E.BAD_REQUEST,
            message=f"a manifest has at most {settings.upload_max_manifest_files} files",
            details={"max_files": settings.upload_max_manifest_files, "files": len(spec.files)},
        )
    if spec.drive_id is None:
        spec_drive = (await ensure_default_drive(session, user_id, writable=True)).id
    else:
        spec_drive = spec.drive_id
    drive = await get_drive(session, spec_drive, user_id, Level.WRITE, for_update=True)
    base = await tree.get_folder(session, drive, spec.folder_id)
    target_segments = split_path(spec.target_path or "", "target_path")
    prefix = base.path.rstrip("/") + "/" + "".join(f"{s}/" for s in target_segments)
    entries = _validate_manifest(spec.files, drive, prefix, settings.max_path_bytes)

    total = sum(item.size for item in spec.files)
    if total > MAX_MANIFEST_BYTES:
        raise AppError(E.QUOTA_EXCEEDED, details={"total_bytes": total})
    await reserve(session, drive.id, total)  # 413 before anything is created

    cache: dict[str, Folder] = {}
    target = await tree.mkdir_p(session, drive, base, target_segments, user_id, cache)
    folders: dict[tuple[str, ...], Folder] = {(): target}
    for dirs in sorted({entry.dirs for entry in entries}):
        try:
            folders[dirs] = await tree.mkdir_p(session, drive, target, list(dirs), user_id, cache)
        except AppError as exc:  # a file of the drive already has a folder's name
            raise AppError(
                exc.spec, message=exc.message, details={"folder": "/".join(dirs)}
            ) from None

    now = datetime.now(UTC)
    task = UploadTask(
        user_id=user_id,
        drive_id=drive.id,
        folder_id=target.id,
        name=spec.name or (entries[0].dirs[0] if entries[0].dirs else entries[0].name),
        status=str(TaskStatus.PENDING),
        conflict=str(spec.conflict),
        total_files=len(entries),
        total_bytes=total,
        reserved_bytes=total,
        client_info=spec.client_info,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    await session.flush()
    rows = [
        {
            "id": new_id(),
            "task_id": task.id,
            "position": index,
            "relative_path": entry.path,
            "folder_id": folders[entry.dirs].id,
            "name": entry.name,
            "size": item.size,
            "md5": item.md5,
            "mime_type": item.mime_type,
            "mtime": item.mtime,
            "status": str(FileStatus.PENDING),
            "attempts": 0,
            "reserved": True,
            "proof_failed": False,
            "bytes_received": 0,
            "updated_at": now,
        }
        for index, (entry, item) in enumerate(zip(entries, spec.files, strict=True))
    ]
    await bulk_insert(session, UploadTaskFile.__table__, rows)  # type: ignore[arg-type]
    states.announce(session, task, states.task_event(task, "upload.task.created"))
    created = [
        {"id": row["id"], "position": row["position"], "path": row["relative_path"],
         "status": FileStatus.PENDING}
        for row in rows
    ]  # fmt: skip
    return task, created


# -- cancel and delete -------------------------------------------------------------------------
async def cancel_task(session: AsyncSession, task: UploadTask) -> int:
    """Cancel an unfinished task: every pending, uploading or failed file becomes cancelled
    (their reservations go back to the drive), open multipart uploads are aborted, completed
    files stay. Returns the number of files cancelled; 409 when the task is finished."""
    await _lock_drive(session, task.drive_id)
    now = datetime.now(UTC)
    result = await session.execute(
        update(UploadTask)
        .where(
            UploadTask.id == task.id,
            UploadTask.status.in_([str(s) for s in UNFINISHED_TASK]),
        )
        .values(status=str(TaskStatus.CANCELLED), finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.refresh(task)
        raise AppError(
            E.INVALID_STATE,
            message=f"a {task.status} task cannot be cancelled",
            details={"status": task.status},
        )
    await session.refresh(task)
    file_ids = list(
        await session.scalars(
            select(UploadTaskFile.id).where(
                UploadTaskFile.task_id == task.id,
                UploadTaskFile.status.in_([str(s) for s in CANCELLABLE_FILE]),
            )
        )
    )
    moved = await states.move_files(session, task, file_ids, FileStatus.CANCELLED)
    await _abort_uploads(session, list(moved.moved))
    states.announce(session, task, states.task_event(task, "upload.task.status"))
    return len(moved.moved)


async def delete_task(session: AsyncSession, task: UploadTask) -> int:
    """Cancel the task when unfinished, abort what multipart uploads remain, then delete its
    rows. The drive files it created stay (they are ordinary files)."""
    await _lock_drive(session, task.drive_id)
    cancelled = 0
    if task.status in UNFINISHED_TASK:
        cancelled = await cancel_task(session, task)
    leftover = list(
        await session.scalars(
            select(MultipartUpload.task_file_id)
            .join(UploadTaskFile, UploadTaskFile.id == MultipartUpload.task_file_id)
            .where(UploadTaskFile.task_id == task.id)
        )
    )
    if leftover:
        await _abort_uploads(session, leftover)
    held = list(
        await session.scalars(
            select(UploadTaskFile.id).where(
                UploadTaskFile.task_id == task.id, UploadTaskFile.reserved.is_(True)
            )
        )
    )
    if held:  # a finished task holds none; should one, its quota must not leak with the rows
        await states.move_files(session, task, held, FileStatus.CANCELLED)
    await session.execute(delete(UploadTaskFile).where(UploadTaskFile.task_id == task.id))
    await session.execute(delete(UploadTask).where(UploadTask.id == task.id))
    session.expunge(task)
    return cancelled


async def _abort_uploads(session: AsyncSession, task_file_ids: list[int]) -> None:
    """Abort the open multipart uploads of these files (the transfer module owns them)."""
    if task_file_ids:
        from yuntu.uploads.transfer import abort_open_uploads  # transfer imports this module

        await abort_open_uploads(session, task_file_ids)
