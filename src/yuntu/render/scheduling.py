"""Frame dispatch: agents claim waiting frames under a lease, keep it alive, and finish them;
frames of silent agents go back to waiting when their lease expires.

Rules (Flamenco's failure handling, OpenCue's leases):
- Order: task priority (high first), then the oldest task, then the frame's place in its task.
  Only frames of queued or rendering tasks are dispatched (a paused task keeps its waiting
  frames), and only to an active agent that runs the task's software (`renderers` holds
  program names such as "blender", or "maya/arnold" for one renderer of a program).
- An attempt is identified by (frame, agent, attempts): `attempts` grows on every claim and
  never goes back, so an agent whose lease expired, and whose frame was claimed again since,
  cannot write a result or extend the new attempt's lease (fencing).
- A lease that expires sends the frame back to waiting: the agent's fault (it went silent), so
  it does not count against the frame and is not charged.
- A failure reported by the renderer counts against the frame and the agent: the frame fails
  once it failed on FAIL_AFTER_AGENTS different agents or more than `max_retries` times (the
  first try plus `max_retries` retries); otherwise it waits again.
- An agent fault (the agent could not fetch the scene, its renderer is missing) puts the frame
  back to waiting without counting against it.
- Either kind of failure counts for the agent on that task: at BLOCK_AFTER failures it claims no
  more frames of the task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import exists, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import database_of, insert_ignoring_conflicts
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.models.render import AgentStatus, AgentTaskBlock, FrameTask, RenderAgent, RenderTask
from yuntu.render import states
from yuntu.render.frame_states import Moved, move_frames
from yuntu.render.states import FrameStatus as F

BLOCK_AFTER = 3  # failures of one agent on one task before it is blocklisted for the task
FAIL_AFTER_AGENTS = 3  # different agents a frame may fail on before it fails
DEFAULT_LEASE_SECONDS = 60
# Told about each task a claim or a lease sweep moved frames of (its events, its money).
OnMoved = Callable[[int, Moved], Awaitable[None]]


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the renderer failed on this frame: counts against the frame
    AGENT_FAULT = "agent_fault"  # the agent could not run it: does not count against the frame


@dataclass(frozen=True, slots=True)
class Report:
    """What an agent reports when an attempt ends."""

    outcome: Outcome
    exit_code: int | None = None
    duration_ms: int | None = None
    core_seconds: float | None = None
    peak_memory_bytes: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    frame_status: F
    moved: Moved
    agent_blocked: bool = False
    task_id: int = 0
    metered: int = 0  # what `price` said the frame costs (already on the frame and the task)


# (core-seconds, task priority, frames in the chunk) -> fen: the rate card, from the caller
Price = Callable[[float | None, int, int], int]


@dataclass(slots=True)
class Heartbeat:
    """Frames whose lease was extended, and frames the agent must stop (cancelled, or its lease
    was lost to another attempt)."""

    extended: list[int] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _runs(renderers: Sequence[str]) -> Any:
    """A task whose software (or software/renderer) the agent runs."""
    names = sorted({name.strip().lower() for name in renderers if name.strip()})
    return or_(
        RenderTask.software.in_(names),
        (RenderTask.software + "/" + RenderTask.renderer).in_(names),
    )


async def claim(
    session: AsyncSession,
    agent: RenderAgent,
    renderers: Sequence[str] | None = None,
    limit: int = 1,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    *,
    now: datetime | None = None,
    on_moved: OnMoved | None = None,
) -> list[FrameTask]:
    """Up to `limit` waiting frames for `agent`, now running under a lease of `lease_seconds`.
    `renderers` narrows what the agent registered (None: all of them)."""
    if agent.status != AgentStatus.ACTIVE or limit < 1:
        return []
    offered = list(agent.renderers)
    if renderers is not None:
        offered = [name for name in renderers if name in offered]
    if not offered:
        return []
    now = _now(now)
    blocked = exists().where(
        AgentTaskBlock.task_id == RenderTask.id,
        AgentTaskBlock.agent_id == agent.id,
        AgentTaskBlock.failures >= BLOCK_AFTER,
    )
    query = (
        select(FrameTask.id, FrameTask.task_id)
        .join(RenderTask, RenderTask.id == FrameTask.task_id)
        .where(
            FrameTask.status == str(F.WAITING),
            RenderTask.status.in_([str(s) for s in states.DISPATCHABLE]),
            _runs(offered),
            ~blocked,
        )
        .order_by(RenderTask.priority.desc(), RenderTask.created_at, RenderTask.id, FrameTask.seq)
        .limit(limit)
    )
    if database_of(session).dialect == "postgresql":
        # concurrent claimers skip each other's frames instead of queueing behind them
        query = query.with_for_update(of=FrameTask, skip_locked=True)
    picked: dict[int, list[int]] = {}
    ranked: list[int] = []  # dispatch order, for the answer
    for frame_id, task_id in (await session.execute(query)).all():
        picked.setdefault(task_id, []).append(frame_id)
        ranked.append(frame_id)
    lease = now + timedelta(seconds=lease_seconds)
    claimed: dict[int, FrameTask] = {}
    for task_id in sorted(picked):  # tasks in id order: see frame_states' lock order
        # conditional on waiting: on SQLite this is the claim's only guard, and enough (one writer)
        moved = await move_frames(
            session,
            task_id,
            picked[task_id],
            F.WAITING,
            F.RUNNING,
            values={"agent_id": agent.id, "lease_expires_at": lease},
            now=now,
            returning=_CLAIMED_COLUMNS,
        )
        for row in moved.rows:  # read back by the move itself: no second query
            claimed[row[0]] = FrameTask(
                id=row[0], **dict(zip(_CLAIMED_COLUMNS, row[1:], strict=True))
            )
        if on_moved is not None and moved.frame_ids:
            await on_moved(task_id, moved)
    if not claimed:
        return []
    await _touch(session, agent.id, now)
    return [claimed[frame_id] for frame_id in ranked if frame_id in claimed]


_CLAIMED_COLUMNS = (
    "task_id",
    "seq",
    "frames",
    "frame_start",
    "frame_end",
    "frame_count",
    "status",
    "attempts",
    "agent_id",
    "lease_expires_at",
    "started_at",
    "cost",
    "failed_agent_ids",
)


TOUCH_EVERY = timedelta(seconds=2)


async def _touch(session: AsyncSession, agent_id: int, now: datetime) -> None:
    """Record that the agent is alive. At most every TOUCH_EVERY: a busy agent's slots would
    otherwise all queue on its one row (a row that does not match is not locked)."""
    await session.execute(
        update(RenderAgent)
        .where(
            RenderAgent.id == agent_id,
            or_(
                RenderAgent.last_heartbeat_at.is_(None),
                RenderAgent.last_heartbeat_at < now - TOUCH_EVERY,
            ),
        )
        .values(last_heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )


async def heartbeat(
    session: AsyncSession,
    agent_id: int,
    attempts: Mapping[int, int],
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    *,
    now: datetime | None = None,
) -> Heartbeat:
    """Extend the leases of the attempts (frame id -> attempt) `agent_id` is running; the
    others are answered `stop`."""
    now = _now(now)
    result = Heartbeat()
    if not attempts:
        await _touch(session, agent_id, now)
        return result
    pairs = [(frame_id, attempt) for frame_id, attempt in attempts.items()]
    extended = (
        await session.scalars(
            update(FrameTask)
            .where(
                tuple_(FrameTask.id, FrameTask.attempts).in_(pairs),
                FrameTask.agent_id == agent_id,
                FrameTask.status == str(F.RUNNING),
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            .returning(FrameTask.id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    # the agent's row after its frames: finish locks a frame, then the agent (one lock order)
    await _touch(session, agent_id, now)
    result.extended = sorted(extended)
    result.stop = sorted(set(attempts) - set(extended))
    return result


def _fenced(agent_id: int, attempt: int) -> list[Any]:
    return [FrameTask.agent_id == agent_id, FrameTask.attempts == attempt]


async def finish(
    session: AsyncSession,
    frame_id: int,
    agent_id: int,
    attempt: int,
    report: Report,
    *,
    now: datetime | None = None,
    price: Price | None = None,
) -> Finished:
    """Record the end of attempt `attempt` of `frame_id` by `agent_id`. 409 INVALID_STATE when
    that attempt no longer holds the frame (its lease expired and it went back to waiting or to
    another agent, or the task was cancelled): the result is discarded. With `price`, a
    succeeded frame's cost goes on the frame and its task in the same move (billing then
    checks it against the budget and the money: render.billing.settle_frame)."""
    now = _now(now)
    frame = (
        await session.execute(
            select(FrameTask, RenderTask.max_retries, RenderTask.priority)
            .join(RenderTask, RenderTask.id == FrameTask.task_id)
            .where(FrameTask.id == frame_id)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if frame is None:
        raise AppError(E.NOT_FOUND, message="no such frame task")
    row, max_retries, priority = frame
    ensure_held(row, agent_id, attempt)
    values: dict[str, Any] = {
        "exit_code": report.exit_code,
        "duration_ms": report.duration_ms,
        "core_seconds": report.core_seconds,
        "peak_memory_bytes": report.peak_memory_bytes,
    }
    blocked = False
    metered = 0
    if report.outcome == Outcome.SUCCEEDED:
        target = F.SUCCEEDED
        values["last_error"] = None
        if price is not None:
            metered = values["cost"] = price(report.core_seconds, priority, row.frame_count)
    else:
        values["last_error"] = (report.error or str(report.outcome))[:4000]
        target = F.WAITING
        if report.outcome == Outcome.FAILED:
            failures = [*row.failed_agent_ids, agent_id]
            values["failed_agent_ids"] = failures
            if len(set(failures)) >= FAIL_AFTER_AGENTS or len(failures) > max_retries:
                target = F.FAILED
    moved = await move_frames(
        session,
        row.task_id,
        [frame_id],
        F.RUNNING,
        target,
        values=values,
        where=_fenced(agent_id, attempt),
        now=now,
        cost=metered,
    )
    if not moved.frame_ids:  # the lease sweep or a cancel got there first
        raise _lost()
    if report.outcome != Outcome.SUCCEEDED:
        blocked = await _count_failure(session, row.task_id, agent_id)
    return Finished(
        frame_status=target,
        moved=moved,
        agent_blocked=blocked,
        task_id=row.task_id,
        metered=metered,
    )


def _lost() -> AppError:
    return AppError(
        E.INVALID_STATE,
        message="this attempt no longer holds the frame (lease lost or task cancelled)",
    )


def ensure_held(frame: FrameTask, agent_id: int, attempt: int) -> None:
    """409 INVALID_STATE unless attempt `attempt` of `agent_id` holds the frame (fencing)."""
    if not (frame.status == F.RUNNING and frame.agent_id == agent_id and frame.attempts == attempt):
        raise _lost()


async def held_frame(
    session: AsyncSession, frame_id: int, agent_id: int, attempt: int, *, lock: bool = False
) -> tuple[FrameTask, RenderTask]:
    """The frame and its task while `attempt` of `agent_id` holds it: 404 for an unknown
    frame, 409 INVALID_STATE once the attempt lost it. `lock` takes the frame's row, then its
    task's (the render lock order), so finishing or cancelling waits for what the caller
    writes for this attempt (an output upload)."""
    frame_query = select(FrameTask).where(FrameTask.id == frame_id)
    if lock:
        frame_query = frame_query.with_for_update()
    frame = await session.scalar(frame_query.execution_options(populate_existing=True))
    if frame is None:
        raise AppError(E.NOT_FOUND, message="no such frame task")
    ensure_held(frame, agent_id, attempt)
    task_query = select(RenderTask).where(RenderTask.id == frame.task_id)
    if lock:
        task_query = task_query.with_for_update()
    task = await session.scalar(task_query.execution_options(populate_existing=True))
    assert task is not None  # the frame's foreign key cascades with its task
    return frame, task


async def _count_failure(session: AsyncSession, task_id: int, agent_id: int) -> bool:
    """One more failure of `agent_id` on `task_id`; True when it just reached the blocklist."""
    dialect = database_of(session).dialect
    await session.execute(
        insert_ignoring_conflicts(dialect, AgentTaskBlock.__table__).values(
            id=new_id(), task_id=task_id, agent_id=agent_id, failures=0, created_at=_now(None)
        )
    )
    failures = await session.scalar(
        update(AgentTaskBlock)
        .where(AgentTaskBlock.task_id == task_id, AgentTaskBlock.agent_id == agent_id)
        .values(failures=AgentTaskBlock.failures + 1)
        .returning(AgentTaskBlock.failures)
        .execution_options(synchronize_session=False)
    )
    return failures == BLOCK_AFTER


async def is_blocked(session: AsyncSession, task_id: int, agent_id: int) -> bool:
    failures = await session.scalar(
        select(AgentTaskBlock.failures).where(
            AgentTaskBlock.task_id == task_id, AgentTaskBlock.agent_id == agent_id
        )
    )
    return (failures or 0) >= BLOCK_AFTER


async def requeue_expired(
    session: AsyncSession,
    now: datetime | None = None,
    *,
    limit: int = 500,
    on_moved: OnMoved | None = None,
) -> int:
    """Send running frames whose lease expired back to waiting (not the frame's failure: the
    agent went silent); returns how many moved. Run it from a periodic job."""
    now = _now(now)
    query = (
        select(FrameTask.id, FrameTask.task_id)
        .where(FrameTask.status == str(F.RUNNING), FrameTask.lease_expires_at < now)
        .order_by(FrameTask.id)
        .limit(limit)
    )
    if database_of(session).dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    picked: dict[int, list[int]] = {}
    for frame_id, task_id in (await session.execute(query)).all():
        picked.setdefault(task_id, []).append(frame_id)
    total = 0
    for task_id in sorted(picked):
        moved = await move_frames(
            session,
            task_id,
            picked[task_id],
            F.RUNNING,
            F.WAITING,
            values={"last_error": "the agent's lease expired"},
            # re-checked under the row lock: a heartbeat may have extended it meanwhile
            where=[FrameTask.lease_expires_at < now],
            now=now,
        )
        total += len(moved.frame_ids)
        if on_moved is not None and moved.frame_ids:
            await on_moved(task_id, moved)
    return total
