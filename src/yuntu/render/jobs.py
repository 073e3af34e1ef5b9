"""Scheduled render work: frames of silent agents go back to waiting, and what running tasks
cost so far is charged to their bills.

Every claim also sweeps a few expired leases; this job covers the time when no agent claims
(the farm's only agent died), so the frames wait again and the task's counts and events say
so."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from yuntu.jobs import cron
from yuntu.jobs.context import JobContext
from yuntu.jobs.registry import handler
from yuntu.models.render import RenderTask
from yuntu.render import billing, dispatch
from yuntu.render.states import TaskStatus as T

REQUEUE_EXPIRED = "render.requeue_expired"
FLUSH_BILLS = "render.flush_bills"
BATCH = 500


@handler(REQUEUE_EXPIRED, timeout_seconds=300, max_attempts=3)
async def requeue_expired(ctx: JobContext) -> dict[str, Any]:
    """A batch per transaction until no expired lease is left."""
    total = 0
    while True:
        async with ctx.session() as session:
            moved = await dispatch.requeue_expired(session, limit=BATCH)
        total += moved
        if moved < BATCH:
            break
        await ctx.checkpoint()
    if total:
        await ctx.log("info", f"{total} frames of silent agents went back to waiting")
    return {"requeued": total}


@handler(FLUSH_BILLS, timeout_seconds=300, max_attempts=3)
async def flush_bills(ctx: JobContext) -> dict[str, Any]:
    """Charge the cost recorded since the last charge of every unfinished task (finished tasks
    were charged when they ended), one transaction per task."""
    async with ctx.session() as session:
        task_ids = list(
            (
                await session.scalars(
                    select(RenderTask.id)
                    .where(
                        RenderTask.status.in_([T.QUEUED, T.RENDERING, T.PAUSED]),
                        RenderTask.cost > RenderTask.billed,
                    )
                    .order_by(RenderTask.id)
                    .limit(BATCH)
                )
            ).all()
        )
    charged = 0
    for task_id in task_ids:
        async with ctx.session() as session:
            charged += await billing.flush(session, task_id)
    return {"tasks": len(task_ids), "charged": charged}


cron.schedule(REQUEUE_EXPIRED, "* * * * *", REQUEUE_EXPIRED)
cron.schedule(FLUSH_BILLS, "* * * * *", FLUSH_BILLS)
