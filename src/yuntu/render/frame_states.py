"""The only code that changes a frame task's status, and with it its render task's per-state
counters and derived status, in one transaction.

`move_frames` moves frames of ONE task from ONE source state with a conditional UPDATE on that
state (plus any fencing conditions the caller adds), so two concurrent moves of a frame cannot
both succeed and the counters change by exactly the rows moved. Moves outside
`render.states.FRAME_TRANSITIONS` are refused before anything is written.

Lock order: frame rows first, then their task's row (the counter update), tasks by id when one
transaction moves frames of several tasks. A caller that also changes the task itself (pause,
cancel) moves the frames first, so it never waits on a frame while holding its task.

Frames are created here too (`add_frames`): they enter `waiting` and the counter with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, func, literal, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import UTCDateTime, bulk_insert
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.models.render import FrameTask, RenderTask
from yuntu.render import states
from yuntu.render.states import FrameCounts, FrameStatus, TaskStatus

F = FrameStatus
T = TaskStatus

COUNTER: Mapping[FrameStatus, str] = {
    F.WAITING: "frames_waiting",
    F.RUNNING: "frames_running",
    F.SUCCEEDED: "frames_succeeded",
    F.FAILED: "frames_failed",
    F.CANCELLED: "frames_cancelled",
}
_FRAMES = cast(Table, FrameTask.__table__)
_TASKS = cast(Table, RenderTask.__table__)


@dataclass(frozen=True, slots=True)
class TaskMoney:
    """The task's money columns as the move left them (for billing without another read)."""

    cost: int
    billed: int
    budget: int | None
    estimate: int
    hold_id: int | None


@dataclass(frozen=True, slots=True)
class Moved:
    """What one move did: the frames moved, the task's counts after it, and its status before
    and after settling."""

    frame_ids: list[int]
    counts: FrameCounts
    previous_status: TaskStatus
    status: TaskStatus
    user_id: int = 0  # the task's owner, for its events
    cost: int = 0  # the task's cost so far, fen
    target: FrameStatus | None = None  # where the frames went
    money: TaskMoney | None = None
    rows: list[Any] = field(default_factory=list)  # the `returning` columns of each frame moved

    @property
    def task_changed(self) -> bool:
        return self.status != self.previous_status


def counts_of(task: RenderTask) -> FrameCounts:
    return FrameCounts(
        waiting=task.frames_waiting,
        running=task.frames_running,
        succeeded=task.frames_succeeded,
        failed=task.frames_failed,
        cancelled=task.frames_cancelled,
    )


async def add_frames(
    session: AsyncSession, task: RenderTask, chunks: Sequence[Sequence[int]]
) -> None:
    """Create `task`'s frame tasks, one per chunk (render.frames.chunk), all waiting."""
    if not chunks:
        return
    first_seq = task.frames_waiting + task.frames_running + task.frames_succeeded
    first_seq += task.frames_failed + task.frames_cancelled
    rows: list[dict[str, Any]] = []
    for offset, chunk in enumerate(chunks):
        frames = list(chunk)
        rows.append(
            {
                "id": new_id(),
                "task_id": task.id,
                "seq": first_seq + offset,
                "frames": frames,
                "frame_start": frames[0],
                "frame_end": frames[-1],
                "frame_count": len(frames),
                "status": str(F.WAITING),
                "attempts": 0,
                "cost": 0,
                "failed_agent_ids": [],
            }
        )
    await bulk_insert(session, _FRAMES, rows)
    await session.execute(
        update(RenderTask)
        .where(RenderTask.id == task.id)
        .values(frames_waiting=RenderTask.frames_waiting + len(rows))
        .execution_options(synchronize_session=False)
    )
    await session.refresh(task)


def _frame_values(source: FrameStatus, target: FrameStatus, now: datetime) -> dict[str, Any]:
    """The columns every move to `target` sets, whoever asks for it."""
    values: dict[str, Any] = {"status": str(target)}
    if target == F.RUNNING:
        # attempts only grows: it is the fencing token of the attempt (see scheduling.finish)
        values.update(
            attempts=FrameTask.attempts + 1,
            started_at=now,
            finished_at=None,
            exit_code=None,
            duration_ms=None,
            core_seconds=None,
            peak_memory_bytes=None,
        )
    elif target == F.WAITING:
        values.update(agent_id=None, lease_expires_at=None)
        if source == F.FAILED:  # the user's retry: a fresh count of failures and agents
            values.update(failed_agent_ids=[], finished_at=None)
    else:  # succeeded, failed, cancelled
        values.update(lease_expires_at=None, finished_at=now)
    return values


async def move_frames(
    session: AsyncSession,
    task_id: int,
    frame_ids: Iterable[int] | None,
    source: FrameStatus,
    target: FrameStatus,
    *,
    values: Mapping[str, Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    now: datetime | None = None,
    cost: int = 0,
    returning: Sequence[str] = (),
) -> Moved:
    """Move the frames `frame_ids` of task `task_id` (None: all of them) that are in `source`
    and match `where` to `target`; frames in another state are left alone and not reported.
    Then the task's counters change by the number moved and its status settles
    (render.states.settle), in the same transaction.

    `values` adds columns (an agent and lease, an exit code); the move's own columns win.
    `cost` (fen) is added to the task's cost in the same update; `returning` names frame
    columns to read back (`Moved.rows`, each row starting with the frame's id).
    409 INVALID_STATE when `target` cannot follow `source`."""
    source, target = F(source), F(target)
    if not states.can_move_frame(source, target):
        raise AppError(
            E.INVALID_STATE,
            message=f"a {source} frame cannot become {target}",
            details={"status": str(source), "target": str(target)},
        )
    now = now or datetime.now(UTC)
    statement = (
        update(_FRAMES)
        .where(_FRAMES.c.task_id == task_id, _FRAMES.c.status == str(source), *where)
        .values({**dict(values or {}), **_frame_values(source, target, now)})
        .returning(_FRAMES.c.id, *(_FRAMES.c[name] for name in returning))
    )
    if frame_ids is not None:
        ids = list(dict.fromkeys(frame_ids))
        if not ids:
            return await _task_unchanged(session, task_id)
        statement = statement.where(_FRAMES.c.id.in_(ids))
    rows = list((await session.execute(statement)).all())
    moved = [row[0] for row in rows]
    if not moved:
        return await _task_unchanged(session, task_id)
    changes: dict[str, Any] = {
        COUNTER[source]: _TASKS.c[COUNTER[source]] - len(moved),
        COUNTER[target]: _TASKS.c[COUNTER[target]] + len(moved),
        "updated_at": now,
    }
    if cost:
        changes["cost"] = _TASKS.c.cost + cost
    row = (
        await session.execute(
            update(_TASKS)
            .where(_TASKS.c.id == task_id)
            .values(changes)
            .returning(
                _TASKS.c.user_id,
                _TASKS.c.cost,
                _TASKS.c.billed,
                _TASKS.c.budget,
                _TASKS.c.estimate,
                _TASKS.c.hold_id,
                _TASKS.c.status,
                *(_TASKS.c[column] for column in COUNTER.values()),
            )
        )
    ).one()
    counts = FrameCounts(*row[7:])
    previous = T(row[6])
    status = await settle_task(session, task_id, previous, counts, now)
    return Moved(
        frame_ids=moved,
        counts=counts,
        previous_status=previous,
        status=status,
        user_id=row[0],
        cost=row[1],
        target=target,
        money=TaskMoney(cost=row[1], billed=row[2], budget=row[3], estimate=row[4], hold_id=row[5]),
        rows=rows,
    )


async def _task_unchanged(session: AsyncSession, task_id: int) -> Moved:
    row = (
        await session.execute(
            _TASKS.select()
            .with_only_columns(
                _TASKS.c.user_id,
                _TASKS.c.cost,
                _TASKS.c.status,
                *(_TASKS.c[c] for c in COUNTER.values()),
            )
            .where(_TASKS.c.id == task_id)
        )
    ).one()
    status = T(row[2])
    return Moved(
        frame_ids=[],
        counts=FrameCounts(*row[3:]),
        previous_status=status,
        status=status,
        user_id=row[0],
        cost=row[1],
    )


async def settle_task(
    session: AsyncSession,
    task_id: int,
    status: TaskStatus,
    counts: FrameCounts,
    now: datetime | None = None,
) -> TaskStatus:
    """Move the task to the state its frame counts call for (render.states.settle), with a
    conditional update on `status`. The caller holds the task's row (it just changed the
    counters), so the condition can only fail on a bug."""
    target = states.settle(status, counts)
    if target == status:
        return status
    now = now or datetime.now(UTC)
    values: dict[str, Any] = {"status": str(target), "updated_at": now}
    if target == T.RENDERING:
        values["started_at"] = func.coalesce(_TASKS.c.started_at, literal(now, UTCDateTime()))
    if target in (T.COMPLETED, T.FAILED):
        values["finished_at"] = now
    if target == T.QUEUED:  # a retry re-opens a failed task
        values["finished_at"] = None
    if target != T.PAUSED:
        values["paused_reason"] = None
    result = await session.execute(
        update(_TASKS).where(_TASKS.c.id == task_id, _TASKS.c.status == str(status)).values(values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AssertionError(f"render task {task_id} left {status} while its row was held")
    return target
