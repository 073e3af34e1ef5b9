"""What follows a frame move: billing of a succeeded frame, settling the task's money when it
finishes, and the live events. Agent-facing code calls these after `scheduling` moved frames,
in the same transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.pubsub import PubSub
from yuntu.render import billing, events
from yuntu.render.frame_states import Moved
from yuntu.render.scheduling import Finished
from yuntu.render.states import DISPATCHABLE, FrameStatus
from yuntu.render.states import TaskStatus as T

SETTLING = frozenset({T.COMPLETED, T.FAILED, T.CANCELLED})


async def frames_moved(
    session: AsyncSession,
    task_id: int,
    moved: Moved,
    *,
    bus: PubSub | None,
    cost: int | None = None,
) -> None:
    """After any frame move of task `task_id` (claim, lease expiry, cancel, retry): settle the
    task's money if it just finished, and publish task.status / task.progress. `cost` is the
    task's cost when it changed after the move."""
    if not moved.frame_ids:
        return
    if moved.task_changed and moved.status in SETTLING:
        await billing.settle(session, task_id, moved.status)
    if moved.target == FrameStatus.WAITING and moved.status in DISPATCHABLE:
        events.work_available(session, bus)
    if moved.task_changed:
        events.status(session, bus, moved.user_id, task_id, moved.status, moved.previous_status)
    events.progress(
        session, bus, moved.user_id, task_id, moved.counts, moved.cost if cost is None else cost
    )


async def frame_finished(
    session: AsyncSession,
    task_id: int,
    frame_id: int,
    finished: Finished,
    *,
    bus: PubSub | None,
) -> int:
    """After `scheduling.finish` (given the rate card as `price`): check a succeeded frame's
    cost against the task's budget and the user's money, then as `frames_moved`. Returns the
    fen it cost. Billing comes first: a task that just completed closes its bill in
    `frames_moved`."""
    cost = 0
    moved = finished.moved
    if finished.frame_status == FrameStatus.SUCCEEDED and moved.money is not None:
        cost, paused = await billing.settle_frame(
            session, task_id, frame_id, finished.metered, moved.money
        )
        if paused is not None:
            events.status(session, bus, moved.user_id, task_id, T.PAUSED, moved.status, paused)
    await frames_moved(session, task_id, moved, bus=bus, cost=moved.cost - finished.metered + cost)
    return cost
