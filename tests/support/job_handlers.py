"""Job handlers and a fast schedule used by the job-engine tests, loaded into worker processes
through YUNTU_PLUGINS=tests.support.job_handlers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from yuntu.jobs.context import JobContext
from yuntu.jobs.cron import schedule
from yuntu.jobs.registry import PermanentError, handler


def _record(ctx: JobContext) -> None:
    """Append 'job_id attempt' to the payload's file: one line per execution, O_APPEND."""
    path = ctx.job.payload.get("record")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.job.id} {ctx.job.attempt} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@handler("test.noop", max_attempts=3, timeout_seconds=30)
async def noop(ctx: JobContext) -> dict[str, Any]:
    _record(ctx)
    if ctx.job.payload.get("sleep"):
        await asyncio.sleep(float(ctx.job.payload["sleep"]))
    return {"ok": True}


@handler(
    "test.steps",
    max_attempts=5,
    timeout_seconds=60,
    backoff_base_seconds=0.05,
    backoff_max_seconds=0.2,
)
async def steps(ctx: JobContext) -> dict[str, Any]:
    """`steps` units of `step_seconds` each, with progress and a checkpoint between them."""
    _record(ctx)
    total = int(ctx.job.payload.get("steps", 10))
    start = (ctx.job.payload.get("resume_from_progress", True) and ctx.job.progress) or 0
    done = start * total // 100
    for index in range(done, total):
        await ctx.checkpoint()
        await asyncio.sleep(float(ctx.job.payload.get("step_seconds", 0.1)))
        await ctx.progress((index + 1) * 100 // total, f"step {index + 1} of {total}")
    await ctx.log("info", f"finished {total} steps")
    return {"steps": total}


@handler(
    "test.fail",
    max_attempts=3,
    timeout_seconds=10,
    backoff_base_seconds=0.05,
    backoff_max_seconds=0.1,
)
async def fail(ctx: JobContext) -> None:
    _record(ctx)
    raise RuntimeError("handler exploded")


@handler("test.permanent", max_attempts=5)
async def permanent(ctx: JobContext) -> None:
    _record(ctx)
    raise PermanentError("bad input: cannot succeed")


@handler(
    "test.hang",
    max_attempts=2,
    timeout_seconds=1,
    backoff_base_seconds=0.05,
    backoff_max_seconds=0.1,
)
async def hang(ctx: JobContext) -> None:
    _record(ctx)
    await asyncio.sleep(3600)


@handler("test.stubborn", max_attempts=1, timeout_seconds=60)
async def stubborn(ctx: JobContext) -> None:
    """Never calls checkpoint: only the worker's forced cancel can stop it."""
    _record(ctx)
    await asyncio.sleep(3600)


if os.environ.get("YUNTU_TEST_FAST_CRON"):
    schedule(
        "test.every-second",
        "* * * * * *",
        "test.noop",
        {"record": os.environ["YUNTU_TEST_FAST_CRON"]},
    )
