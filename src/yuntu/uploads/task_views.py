"""Read side of upload tasks: listings, detail with percentages, progress (rate and ETA) and
the exported storage manifest. Everything here only reads; counters come from the task row
(kept by the state machine) plus one grouped query for the states it does not count."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.schemas import PageParams, paginate
from yuntu.models.drive import Blob, DriveFile
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.uploads.states import FileStatus, TaskStatus

FINISHED_TASK = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.PARTIALLY_FAILED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)


async def list_tasks(
    session: AsyncSession, user_id: int, status: TaskStatus | None, params: PageParams
) -> tuple[list[UploadTask], int]:
    statement = select(UploadTask).where(UploadTask.user_id == user_id)
    if status is not None:
        statement = statement.where(UploadTask.status == str(status))
    statement = statement.order_by(UploadTask.created_at.desc(), UploadTask.id.desc())
    return await paginate(session, statement, params)


async def list_files(
    session: AsyncSession,
    task: UploadTask,
    status: FileStatus | None,
    params: PageParams,
    max_attempts: int,
) -> tuple[list[dict[str, Any]], int]:
    statement = select(UploadTaskFile).where(UploadTaskFile.task_id == task.id)
    if status is not None:
        statement = statement.where(UploadTaskFile.status == str(status))
    rows, total = await paginate(session, statement.order_by(UploadTaskFile.position), params)
    items = [
        {
            "id": row.id,
            "position": row.position,
            "path": row.relative_path,
            "name": row.name,
            "folder_id": row.folder_id,
            "size": row.size,
            "md5": row.md5,
            "sha256": row.sha256,
            "mime_type": row.mime_type,
            "status": row.status,
            "attempts": row.attempts,
            "can_retry": row.status == FileStatus.FAILED and row.attempts < max_attempts,
            "bytes_received": row.bytes_received,
            "file_id": row.file_id,
            "error": row.error,
            "started_at": row.started_at,
            "completed_at": row.completed_at,
            "updated_at": row.updated_at,
        }
        for row in rows
    ]
    return items, total


@dataclass(slots=True)
class Breakdown:
    """Files per status, their bytes and the bytes received by files still uploading."""

    counts: dict[str, int]
    sizes: dict[str, int]
    in_flight: int

    @property
    def remaining_files(self) -> int:
        return self.counts[FileStatus.PENDING] + self.counts[FileStatus.UPLOADING]

    @property
    def remaining_bytes(self) -> int:
        open_bytes = self.sizes[FileStatus.PENDING] + self.sizes[FileStatus.UPLOADING]
        return max(0, open_bytes - self.in_flight)


async def breakdown(session: AsyncSession, task: UploadTask) -> Breakdown:
    rows = (
        await session.execute(
            select(
                UploadTaskFile.status,
                func.count(),
                func.coalesce(func.sum(UploadTaskFile.size), 0),
                func.coalesce(func.sum(UploadTaskFile.bytes_received), 0),
            )
            .where(UploadTaskFile.task_id == task.id)
            .group_by(UploadTaskFile.status)
        )
    ).all()
    counts = {str(status): 0 for status in FileStatus}
    sizes = {str(status): 0 for status in FileStatus}
    in_flight = 0
    for status, count, size, received in rows:
        counts[status] = int(count)
        sizes[status] = int(size)
        if status == FileStatus.UPLOADING:
            in_flight = int(received)
    return Breakdown(counts, sizes, in_flight)


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def task_summary(task: UploadTask) -> dict[str, Any]:
    return {
        column: getattr(task, column)
        for column in (
            "id",
            "name",
            "drive_id",
            "folder_id",
            "status",
            "conflict",
            "total_files",
            "total_bytes",
            "completed_files",
            "instant_files",
            "failed_files",
            "cancelled_files",
            "done_bytes",
            "saved_bytes",
            "reserved_bytes",
            "client_info",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
        )
    }


async def task_detail(session: AsyncSession, task: UploadTask) -> dict[str, Any]:
    parts = await breakdown(session, task)
    done_files = task.completed_files + task.instant_files
    percent_files = _percent(done_files, task.total_files)
    return {
        **task_summary(task),
        "pending_files": parts.counts[FileStatus.PENDING],
        "uploading_files": parts.counts[FileStatus.UPLOADING],
        "remaining_files": parts.remaining_files,
        "remaining_bytes": parts.remaining_bytes,
        "percent_files": percent_files,
        "percent_bytes": (
            _percent(task.done_bytes, task.total_bytes) if task.total_bytes else percent_files
        ),
    }


async def progress(
    session: AsyncSession, task: UploadTask, now: datetime | None = None
) -> dict[str, Any]:
    """Rate = bytes actually received (instant uploads excluded, bytes of files still uploading
    included) over the time since the task started; ETA = the bytes left over that rate."""
    now = now or datetime.now(UTC)
    parts = await breakdown(session, task)
    transferred = max(0, task.done_bytes - task.saved_bytes) + parts.in_flight
    remaining = parts.remaining_bytes
    finished = task.status in FINISHED_TASK
    elapsed: float | None = None
    rate: float | None = None
    eta: float | None = None
    if task.started_at is not None:
        end = task.finished_at if finished and task.finished_at is not None else now
        elapsed = max(0.0, (end - task.started_at).total_seconds())
        if elapsed > 0:
            rate = round(transferred / elapsed, 2)
    if finished or remaining == 0:
        eta = 0.0
    elif rate:
        eta = round(remaining / rate, 1)
    done_files = task.completed_files + task.instant_files
    return {
        "task_id": task.id,
        "status": task.status,
        "total_files": task.total_files,
        "done_files": done_files,
        "total_bytes": task.total_bytes,
        "done_bytes": task.done_bytes,
        "saved_bytes": task.saved_bytes,
        "transferred_bytes": transferred,
        "remaining_bytes": remaining,
        "percent": (
            _percent(task.done_bytes, task.total_bytes)
            if task.total_bytes
            else _percent(done_files, task.total_files)
        ),
        "rate_bytes_per_second": rate,
        "eta_seconds": eta,
        "elapsed_seconds": None if elapsed is None else round(elapsed, 3),
        "started_at": task.started_at,
        "finished_at": task.finished_at,
        "counts": parts.counts,
    }


async def export_manifest(session: AsyncSession, task: UploadTask) -> dict[str, Any]:
    """Every file of the task with where its content is stored now (the blob of the drive
    file's current version; none for files that did not complete or were purged since)."""
    rows = (
        await session.execute(
            select(
                UploadTaskFile.relative_path,
                UploadTaskFile.id,
                UploadTaskFile.file_id,
                UploadTaskFile.size,
                UploadTaskFile.md5,
                UploadTaskFile.sha256,
                UploadTaskFile.status,
                DriveFile.sha256,
                Blob.storage_key,
            )
            .outerjoin(DriveFile, DriveFile.id == UploadTaskFile.file_id)
            .outerjoin(Blob, Blob.id == DriveFile.blob_id)
            .where(UploadTaskFile.task_id == task.id)
            .order_by(UploadTaskFile.position)
        )
    ).all()
    files = [
        {
            "path": path,
            "task_file_id": task_file_id,
            "file_id": file_id,
            "size": size,
            "md5": md5,
            "sha256": sha256 or current_sha256,
            "storage_key": storage_key,
            "status": status,
        }
        for (
            path,
            task_file_id,
            file_id,
            size,
            md5,
            sha256,
            status,
            current_sha256,
            storage_key,
        ) in rows
    ]
    return {
        "task_id": task.id,
        "summary": {
            "total_files": task.total_files,
            "completed_files": task.completed_files,
            "instant_files": task.instant_files,
            "failed_files": task.failed_files,
            "cancelled_files": task.cancelled_files,
            "total_bytes": task.total_bytes,
            "saved_bytes": task.saved_bytes,
        },
        "files": files,
    }
