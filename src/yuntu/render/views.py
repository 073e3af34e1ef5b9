"""Read-side queries of the render task endpoints: a task as the API shows it, its frame tasks
and its log lines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.errors import AppError, E
from yuntu.models.render import FrameTask, RenderLog, RenderTask
from yuntu.render import frame_states
from yuntu.render.schemas import FrameCountsOut, FrameTaskOut, LogLineOut, TaskOut

MAX_LOG_LINES = 1000


def task_fields(task: RenderTask) -> dict[str, Any]:
    counts = frame_states.counts_of(task)
    out = dict(TaskOut.model_validate(task))
    out["progress"] = round(counts.progress, 4)
    out["frame_tasks"] = FrameCountsOut(
        waiting=counts.waiting,
        running=counts.running,
        succeeded=counts.succeeded,
        failed=counts.failed,
        cancelled=counts.cancelled,
        total=counts.total,
    )
    return out


def frames_query(task_id: int, statuses: list[str] | None) -> Select[tuple[FrameTask]]:
    statement = select(FrameTask).where(FrameTask.task_id == task_id)
    if statuses:
        statement = statement.where(FrameTask.status.in_(statuses))
    return statement.order_by(FrameTask.seq)


def frame_out(frame: FrameTask) -> FrameTaskOut:
    return FrameTaskOut.model_validate(frame)


async def log_lines(
    session: AsyncSession,
    task_id: int,
    *,
    frame_id: int | None,
    after: int | None,
    limit: int,
) -> tuple[list[LogLineOut], str | None]:
    """Lines in the order they were written, from after the cursor `after` (a line id)."""
    if frame_id is not None:
        owned = await session.scalar(
            select(FrameTask.id).where(FrameTask.id == frame_id, FrameTask.task_id == task_id)
        )
        if owned is None:
            raise AppError(E.NOT_FOUND, details={"frame_id": str(frame_id)})
    statement = select(RenderLog).where(RenderLog.task_id == task_id)
    if frame_id is not None:
        statement = statement.where(RenderLog.frame_id == frame_id)
    if after is not None:
        statement = statement.where(RenderLog.id > after)
    rows = list((await session.scalars(statement.order_by(RenderLog.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    lines = [LogLineOut.model_validate(row) for row in rows]
    return lines, (str(rows[-1].id) if more and rows else None)
