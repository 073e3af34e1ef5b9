"""Upload tasks: lookups scoped by owner (the rest of the task service is added here)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.errors import AppError, E
from yuntu.models.uploads import UploadTask, UploadTaskFile


async def get_task(session: AsyncSession, task_id: int, user_id: int) -> UploadTask:
    task = await session.scalar(
        select(UploadTask).where(UploadTask.id == task_id, UploadTask.user_id == user_id)
    )
    if task is None:
        raise AppError(E.NOT_FOUND)
    return task


async def get_task_file(session: AsyncSession, task: UploadTask, file_id: int) -> UploadTaskFile:
    file = await session.scalar(
        select(UploadTaskFile).where(
            UploadTaskFile.id == file_id, UploadTaskFile.task_id == task.id
        )
    )
    if file is None:
        raise AppError(E.NOT_FOUND)
    return file
