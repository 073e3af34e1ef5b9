"""Render tasks for their owner: estimate, create and submit, pause, resume, cancel, retry
failed frames, delete. Every lookup is scoped by the owner: another user's task answers 404.

Submission (draft -> queued) holds the estimate (render.billing); when the balance cannot cover
it the task stays a draft and the caller answers 402 with the draft's id, so the user can
recharge and `POST /tasks/{id}/submit` without describing the task again.

Lock order, as in frame_states: a task's frame rows before its task row. Cancel therefore
locks the frames first, then marks the task cancelled, then cancels the frames (so the move
cannot settle the task to completed on the way)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import service as drives
from yuntu.drive.access import Level, get_drive
from yuntu.kit.db import database_of
from yuntu.kit.errors import AppError, E
from yuntu.kit.pubsub import PubSub
from yuntu.ledger.money import fen_to_str
from yuntu.models.drive import DriveFile
from yuntu.models.render import (
    AgentTaskBlock,
    FrameTask,
    PausedReason,
    RenderLog,
    RenderOutput,
    RenderTask,
)
from yuntu.render import billing, events, frame_states, progress
from yuntu.render import frames as frame_specs
from yuntu.render.contract import OutputFormat
from yuntu.render.states import FrameStatus as F
from yuntu.render.states import TaskStatus as T
from yuntu.render.states import can_move_task, resumed, task_sources
from yuntu.settings import Settings
from yuntu.storage import blobs


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A render task as the user describes it (checked by the schema)."""

    name: str
    software: str
    renderer: str
    frames: str
    width: int
    height: int
    scene_file_id: int | None = None
    software_version: str | None = None
    camera: str | None = None
    output_format: OutputFormat = OutputFormat.PNG
    priority: int = 50
    chunk_size: int = 1
    max_retries: int = 3
    budget: int | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    frames: list[int]
    chunks: list[list[int]]
    amount: int  # fen
    core_seconds_per_frame: float


def _invalid(field: str, message: str) -> AppError:
    return AppError(E.VALIDATION_ERROR, details=[{"field": f"body.{field}", "message": message}])


def _chunks(spec: TaskSpec, frames: list[int], settings: Settings) -> list[list[int]]:
    """Frame tasks of `frames`; a template renderer that takes ranges only gets one
    progression per chunk."""
    templates = settings.command_templates() if settings.render_templates else {}
    template = templates.get(f"{spec.software}/{spec.renderer}") or templates.get(spec.software)
    ranges = template is not None and template.ranges_only
    return frame_specs.chunk(frames, spec.chunk_size, ranges=ranges)


def estimate(spec: TaskSpec, settings: Settings) -> Estimate:
    try:
        frames = frame_specs.parse(spec.frames)
    except ValueError as exc:
        raise _invalid("frames", str(exc)) from None
    if len(frames) > settings.render_max_frames:
        raise _invalid("frames", f"at most {settings.render_max_frames} frames per task")
    chunks = _chunks(spec, frames, settings)
    card = billing.rate_card(settings)
    resolution = (spec.width, spec.height)
    amount = card.estimate_chunks(
        [len(chunk) for chunk in chunks], spec.renderer, spec.priority, resolution
    )
    per_frame = float(card.core_seconds_estimate(spec.renderer, resolution))
    return Estimate(frames=frames, chunks=chunks, amount=amount, core_seconds_per_frame=per_frame)


async def _scene(session: AsyncSession, user_id: int, file_id: int) -> DriveFile:
    """A live drive file the user may read (404 otherwise, whoever owns it)."""
    file = await session.scalar(
        select(DriveFile).where(DriveFile.id == file_id, DriveFile.trashed_at.is_(None))
    )
    if file is None:
        raise AppError(E.NOT_FOUND, details={"scene_file_id": str(file_id)})
    await get_drive(session, file.drive_id, user_id, Level.READ)
    return file


async def create(
    session: AsyncSession,
    user_id: int,
    spec: TaskSpec,
    settings: Settings,
    *,
    submit_now: bool = True,
    bus: PubSub | None = None,
) -> tuple[RenderTask, AppError | None]:
    """Create the task and its frame tasks as a draft, then submit it when asked. Returns the
    task and, when submission was refused (402), the refusal: the draft is kept, so the caller
    raises it with `commit=True`."""
    planned = estimate(spec, settings)
    if spec.scene_file_id is None:
        raise _invalid("scene_file_id", "a scene file is required")
    scene = await _scene(session, user_id, spec.scene_file_id)
    if spec.software == "blender" and not scene.name.lower().endswith(".blend"):
        raise _invalid("scene_file_id", "Blender renders .blend scene files")
    drive = await drives.ensure_default_drive(session, user_id, writable=True)
    await blobs.add_ref(session, scene.blob_id)  # the task's own reference to its scene
    task = RenderTask(
        user_id=user_id,
        name=spec.name,
        scene_file_id=scene.id,
        scene_blob_id=scene.blob_id,
        scene_name=scene.name,
        software=spec.software,
        software_version=spec.software_version,
        renderer=spec.renderer,
        frame_spec=frame_specs.describe(planned.frames),
        frame_count=len(planned.frames),
        resolution_x=spec.width,
        resolution_y=spec.height,
        camera=spec.camera,
        output_format=str(spec.output_format),
        priority=spec.priority,
        chunk_size=spec.chunk_size,
        max_retries=spec.max_retries,
        budget=spec.budget,
        drive_id=drive.id,
        status=T.DRAFT,
        estimate=planned.amount,
    )
    session.add(task)
    await session.flush()
    await frame_states.add_frames(session, task, planned.chunks)
    if not submit_now:
        return task, None
    return task, await submit(session, task, settings, bus=bus)


async def submit(
    session: AsyncSession, task: RenderTask, settings: Settings, *, bus: PubSub | None = None
) -> AppError | None:
    """draft -> queued with the estimate held. Returns the 402 refusal instead of raising it
    (the draft stays as it was); 409 INVALID_STATE for a task that is not a draft."""
    if task.status != T.DRAFT:
        raise _state(task, T.QUEUED)
    try:
        async with session.begin_nested():
            await billing.hold_estimate(session, task, settings)
    except AppError as exc:
        if exc.spec != E.INSUFFICIENT_BALANCE:
            raise
        await session.refresh(task)
        details = exc.details if isinstance(exc.details, dict) else {}
        return AppError(
            E.INSUFFICIENT_BALANCE,
            message="the balance does not cover the estimate: the task was kept as a draft",
            details={
                **details,
                "task_id": str(task.id),
                "status": str(T.DRAFT),
                "hold": fen_to_str(billing.hold_amount(task)),
            },
            commit=True,
        )
    now = datetime.now(UTC)
    await _move_task(session, task, T.QUEUED, submitted_at=now)
    events.status(session, bus, task.user_id, task.id, T.QUEUED, T.DRAFT)
    events.work_available(session, bus)
    return None


def _state(task: RenderTask, target: T) -> AppError:
    return AppError(
        E.INVALID_STATE,
        message=f"a {task.status} task cannot become {target}",
        details={"status": task.status, "target": str(target)},
    )


async def _move_task(session: AsyncSession, task: RenderTask, target: T, **values: object) -> None:
    """Conditional move of the task itself (not through its frames); 409 when another move got
    there first."""
    if not can_move_task(task.status, target):
        raise _state(task, target)
    result = await session.execute(
        update(RenderTask)
        .where(RenderTask.id == task.id, RenderTask.status == task.status)
        .values(status=target, updated_at=datetime.now(UTC), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.refresh(task)
        raise _state(task, target)
    await session.refresh(task)


async def get(
    session: AsyncSession, user_id: int, task_id: int, *, for_update: bool = False
) -> RenderTask:
    statement = select(RenderTask).where(RenderTask.id == task_id, RenderTask.user_id == user_id)
    if for_update:
        statement = statement.with_for_update()
    task = await session.scalar(statement.execution_options(populate_existing=True))
    if task is None:
        raise AppError(E.NOT_FOUND)
    return task


def list_query(user_id: int, statuses: list[str] | None) -> Select[tuple[RenderTask]]:
    statement = select(RenderTask).where(RenderTask.user_id == user_id)
    if statuses:
        statement = statement.where(RenderTask.status.in_(statuses))
    return statement.order_by(RenderTask.created_at.desc(), RenderTask.id.desc())


async def eta_seconds(session: AsyncSession, task: RenderTask) -> float | None:
    """Remaining frame tasks x their mean duration so far, spread over the frames running now
    (at least one); None before any frame task succeeded or once nothing is left."""
    left = task.frames_waiting + task.frames_running
    if not left or task.status not in (T.QUEUED, T.RENDERING):
        return None
    mean = await session.scalar(
        select(func.avg(FrameTask.duration_ms)).where(
            FrameTask.task_id == task.id, FrameTask.status == F.SUCCEEDED
        )
    )
    if mean is None:
        return None
    return round(float(mean) / 1000 * left / max(1, task.frames_running), 1)


async def pause(
    session: AsyncSession, user_id: int, task_id: int, *, bus: PubSub | None = None
) -> RenderTask:
    """Stop dispatching the task's frames; running frames finish (and are charged)."""
    task = await get(session, user_id, task_id)
    if task.status == T.PAUSED:
        return task
    previous = task.status
    await _move_task(session, task, T.PAUSED, paused_reason=PausedReason.USER)
    events.status(session, bus, user_id, task.id, T.PAUSED, previous, PausedReason.USER)
    return task


async def resume(
    session: AsyncSession,
    user_id: int,
    task_id: int,
    *,
    budget: int | None = None,
    bus: PubSub | None = None,
) -> RenderTask:
    """Dispatch again (queued, or rendering when a frame still runs). A new `budget` may lift
    a spent one; without money left under the budget: 409 BUDGET_EXHAUSTED."""
    task = await get(session, user_id, task_id, for_update=True)
    if task.status != T.PAUSED:
        raise _state(task, T.QUEUED)
    if budget is not None:
        if budget < task.cost:
            raise _invalid("budget", "the budget cannot be below what the task already cost")
        task.budget = budget
    if task.budget is not None and task.cost >= task.budget and task.frames_waiting:
        raise AppError(
            E.BUDGET_EXHAUSTED,
            details={"budget": task.budget, "cost": task.cost},
        )
    target = resumed(frame_states.counts_of(task))
    await _move_task(session, task, target, paused_reason=None, budget=task.budget)
    events.status(session, bus, user_id, task.id, target, T.PAUSED)
    events.work_available(session, bus)
    return task


async def _lock_frames(session: AsyncSession, task_id: int, statuses: list[F]) -> None:
    if database_of(session).dialect == "postgresql":
        await session.execute(
            select(FrameTask.id)
            .where(FrameTask.task_id == task_id, FrameTask.status.in_(statuses))
            .order_by(FrameTask.id)
            .with_for_update()
        )


async def cancel(
    session: AsyncSession, user_id: int, task_id: int, *, bus: PubSub | None = None
) -> RenderTask:
    """Cancel waiting and running frames (agents are told to stop), keep what succeeded and
    what it cost, close the bill (the hold's rest goes back)."""
    task = await get(session, user_id, task_id)
    if task.status == T.CANCELLED:
        return task
    if task.status not in task_sources(T.CANCELLED):
        raise _state(task, T.CANCELLED)
    await _lock_frames(session, task.id, [F.WAITING, F.RUNNING])
    previous = task.status
    await _move_task(session, task, T.CANCELLED, finished_at=datetime.now(UTC))
    for source in (F.WAITING, F.RUNNING):
        moved = await frame_states.move_frames(session, task.id, None, source, F.CANCELLED)
        await progress.frames_moved(session, task.id, moved, bus=bus)
    await billing.settle(session, task.id, T.CANCELLED)
    events.status(session, bus, user_id, task.id, T.CANCELLED, previous)
    await session.refresh(task)
    return task


async def retry(
    session: AsyncSession,
    user_id: int,
    task_id: int,
    frame_ids: list[int] | None,
    *,
    bus: PubSub | None = None,
) -> RenderTask:
    """Failed frame tasks (all, or those listed) wait again with a fresh count of failures;
    the task's blocklist is cleared too (the user asked for another try; with no failed frame,
    clearing it is what lets a task whose agents were all blocklisted run again). A failed task goes
    back to queued; its retried frames are charged to the same bill."""
    task = await get(session, user_id, task_id)
    if task.status in (T.DRAFT, T.COMPLETED, T.CANCELLED):
        raise _state(task, T.QUEUED)
    if frame_ids is not None:
        known = set(
            (
                await session.scalars(
                    select(FrameTask.id).where(
                        FrameTask.task_id == task.id, FrameTask.id.in_(frame_ids)
                    )
                )
            ).all()
        )
        unknown = sorted(set(frame_ids) - known)
        if unknown:
            raise AppError(E.NOT_FOUND, details={"frame_ids": [str(i) for i in unknown]})
    moved = await frame_states.move_frames(session, task.id, frame_ids, F.FAILED, F.WAITING)
    # the blocklist goes too: the only way on for a task whose every agent is blocklisted
    unblocked = await session.execute(
        delete(AgentTaskBlock).where(AgentTaskBlock.task_id == task.id)
    )
    if not moved.frame_ids and not unblocked.rowcount:  # type: ignore[attr-defined]
        raise AppError(E.INVALID_STATE, message="no failed frame task to retry")
    events.work_available(session, bus)
    await progress.frames_moved(session, task.id, moved, bus=bus)
    await session.refresh(task)
    return task


async def remove(
    session: AsyncSession,
    user_id: int,
    task_id: int,
    *,
    delete_cloud_data: bool = False,
    bus: PubSub | None = None,
) -> None:
    """Delete the task (cancelled first when it could still run), its frames and logs. Its
    bill stays in the ledger, closed. The output files stay in the drive unless
    `delete_cloud_data`, which moves them to the trash."""
    from yuntu.render import outputs  # outputs imports this module's neighbours

    task = await get(session, user_id, task_id)
    if task.status in task_sources(T.CANCELLED):
        task = await cancel(session, user_id, task_id, bus=bus)
    await billing.close(session, task.hold_id, task.bill_id)
    if delete_cloud_data:
        await outputs.delete_outputs(session, task)
    else:
        refs: dict[int, int] = {}
        for blob_id in (
            await session.scalars(
                select(RenderOutput.blob_id).where(RenderOutput.task_id == task.id)
            )
        ).all():
            refs[blob_id] = refs.get(blob_id, 0) + 1
        if refs:
            await blobs.release_refs(session, refs)
    await blobs.release_ref(session, task.scene_blob_id)
    for table in (RenderLog, RenderOutput, AgentTaskBlock, FrameTask):
        await session.execute(delete(table).where(table.task_id == task.id))
    await session.execute(delete(RenderTask).where(RenderTask.id == task.id))
    events.status(session, bus, user_id, task.id, "deleted", task.status)
