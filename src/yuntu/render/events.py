"""Render events on the owner's live channel (`/ws`): task.status, task.progress, task.log.

Shapes (data):
- task.status: {task_id, kind: "render", status, previous, paused_reason}
- task.progress: {task_id, kind: "render", progress, frames: {waiting, running, succeeded,
  failed, cancelled}, cost ("12.34" yuan)}

status and progress are sent once the transaction that made them commits (never for a move
that rolled back, never before the new state can be read).
- task.log: {task_id, kind: "render", frame_id, lines: [{level, line}]}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.jobs.events import publish_soon
from yuntu.kit.db import on_commit
from yuntu.kit.pubsub import PubSub
from yuntu.ledger.money import fen_to_str
from yuntu.render.states import FrameCounts


def _message(event_type: str, task_id: int, **data: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "data": {"task_id": str(task_id), "kind": "render", **data},
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def counts_data(counts: FrameCounts) -> dict[str, int]:
    return {
        "waiting": counts.waiting,
        "running": counts.running,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
    }


WORK_CHANNEL = "render:work"


def work_available(session: AsyncSession, bus: PubSub | None) -> None:
    """Wake agents waiting in a long-poll claim once this transaction commits: frames may be
    waiting for them (every process shares the bus when Redis is configured)."""
    if bus is not None:
        on_commit(session, lambda: bus.publish_soon(WORK_CHANNEL, {"type": "render.work"}))


def _after_commit(
    session: AsyncSession, bus: PubSub | None, user_id: int, event: dict[str, Any]
) -> None:
    on_commit(session, lambda: publish_soon(bus, user_id, event))


def status(
    session: AsyncSession,
    bus: PubSub | None,
    user_id: int,
    task_id: int,
    new: str,
    previous: str | None,
    paused_reason: str | None = None,
) -> None:
    _after_commit(
        session,
        bus,
        user_id,
        _message(
            "task.status", task_id, status=new, previous=previous, paused_reason=paused_reason
        ),
    )


def progress(
    session: AsyncSession,
    bus: PubSub | None,
    user_id: int,
    task_id: int,
    counts: FrameCounts,
    cost: int,
) -> None:
    _after_commit(
        session,
        bus,
        user_id,
        _message(
            "task.progress",
            task_id,
            progress=round(counts.progress, 4),
            frames=counts_data(counts),
            cost=fen_to_str(cost),
        ),
    )


def log(
    bus: PubSub | None,
    user_id: int,
    task_id: int,
    frame_id: int | None,
    lines: list[dict[str, str]],
) -> None:
    publish_soon(
        bus,
        user_id,
        _message("task.log", task_id, frame_id=str(frame_id) if frame_id else None, lines=lines),
    )
