"""Scheduled render work: frames of silent agents go back to waiting.

Every claim also sweeps a few expired leases; this job covers the time when no agent claims
(the farm's only agent died), so the frames wait again and the task's counts and events say
so."""

from __future__ import annotations

from typing import Any

from yuntu.jobs import cron
from yuntu.jobs.context import JobContext
from yuntu.jobs.registry import handler
from yuntu.render import dispatch

REQUEUE_EXPIRED = "render.requeue_expired"
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


cron.schedule(REQUEUE_EXPIRED, "* * * * *", REQUEUE_EXPIRED)
