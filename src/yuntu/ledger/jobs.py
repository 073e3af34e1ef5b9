"""Scheduled ledger work: expired holds and orders, old idempotency records, weekly rewards.

Every handler is idempotent (the engine delivers at least once) and works in short
transactions, so a crash loses at most one unit and a long run never holds locks for long."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from yuntu.jobs import cron
from yuntu.jobs.context import JobContext
from yuntu.jobs.registry import PermanentError, handler
from yuntu.kit import idempotency
from yuntu.kit.db import Database, utcnow
from yuntu.kit.logging import get_logger
from yuntu.ledger import holds, orders, rewards
from yuntu.ledger.reward_runs import run_week
from yuntu.settings import Settings

log = get_logger("yuntu.ledger.jobs")
HOLD_BATCH = 100
ORDER_BATCH = 500
WEEKLY_REWARDS = "ledger.weekly_rewards"


def settings_of(db: Database) -> Settings:
    settings = db.settings
    if settings is None:
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return settings  # type: ignore[no-any-return]


def _job_time(payload: dict[str, Any]) -> datetime:
    """The scheduled slot of a cron run (so a late run still pays the slot's week), else now."""
    slot = payload.get("slot")
    if isinstance(slot, str):
        try:
            return datetime.fromisoformat(slot)
        except ValueError:
            pass
    return utcnow()


@handler(WEEKLY_REWARDS, timeout_seconds=3600, max_attempts=3)
async def weekly_rewards(ctx: JobContext) -> dict[str, Any]:
    """Pay the week's subscriber reward (payload `week`, default the ISO week of the slot)."""
    settings = settings_of(ctx.db)
    if not settings.weekly_reward_enabled:
        await ctx.log("info", "weekly rewards are disabled (weekly_reward_enabled=false)")
        return {"skipped": "disabled"}
    week = ctx.job.payload.get("week") or rewards.iso_week(_job_time(ctx.job.payload))
    try:
        summary = await run_week(
            ctx.db,
            str(week),
            points=settings.weekly_reward_points,
            plans=settings.weekly_reward_plans,
            batch=settings.weekly_reward_batch,
            between_batches=ctx.checkpoint,
        )
    except ValueError as exc:  # a malformed or future week: retrying cannot help
        raise PermanentError(str(exc)) from None
    await ctx.log(
        "warning" if summary.failed else "info",
        f"week {summary.week}: {summary.eligible} eligible, {summary.paid} paid, "
        f"{summary.already_paid} already paid, {summary.failed} failed, "
        f"{summary.retried} earlier failures retried",
    )
    return summary.as_dict()


@handler("ledger.expire_holds", timeout_seconds=600, max_attempts=3)
async def expire_holds(ctx: JobContext) -> dict[str, Any]:
    """Release the holds past their expiry. Each release is its own short transaction: a
    release locks the user's account and then the shared holds account, and a batch holding the
    holds account while waiting for the next user's row would stall (or deadlock with) every
    request placing a hold meanwhile. A hold that fails is left for the next run."""
    now = utcnow()
    expired = 0
    failed: set[int] = set()
    while True:
        async with ctx.session() as session:
            limit = HOLD_BATCH + len(failed)
            found = await holds.expired_ids(session, now, limit)
        for hold_id in (hold_id for hold_id in found if hold_id not in failed):
            try:
                async with ctx.session() as session:
                    await holds.release(session, hold_id, expired=True)
                expired += 1
            except Exception as exc:
                failed.add(hold_id)
                log.warning("hold_expiry_failed", hold_id=str(hold_id), error=type(exc).__name__)
        if len(found) < limit:
            break
        await ctx.checkpoint()
    if expired or failed:
        await ctx.log("info", f"released {expired} expired holds; {len(failed)} failed")
    return {"expired": expired, "failed": len(failed)}


@handler("ledger.expire_orders", timeout_seconds=600, max_attempts=3)
async def expire_orders(ctx: JobContext) -> dict[str, Any]:
    """Mark unpaid orders past their expiry as expired, a batch per transaction (a late
    confirmation still pays them: see orders.TRANSITIONS)."""
    now = utcnow()
    expired = 0
    while True:
        async with ctx.session() as session:
            count = await orders.expire_stale(session, now, ORDER_BATCH)
        expired += count
        if count < ORDER_BATCH:
            break
        await ctx.checkpoint()
    if expired:
        await ctx.log("info", f"expired {expired} unpaid orders")
    return {"expired": expired}


@handler("ledger.prune_idempotency", timeout_seconds=600, max_attempts=3)
async def prune_idempotency(ctx: JobContext) -> dict[str, Any]:
    """Forget Idempotency-Key records older than idempotency_retention_hours."""
    hours = settings_of(ctx.db).idempotency_retention_hours
    async with ctx.session() as session:
        deleted = await idempotency.prune(session, hours=hours)
    if deleted:
        await ctx.log("info", f"pruned {deleted} idempotency records older than {hours} h")
    return {"deleted": deleted}


cron.schedule("ledger.expire_holds", "*/5 * * * *", "ledger.expire_holds")
cron.schedule("ledger.expire_orders", "*/5 * * * *", "ledger.expire_orders")
cron.schedule("ledger.prune_idempotency", "29 * * * *", "ledger.prune_idempotency")


def configure_schedules(settings: Settings) -> None:
    """The schedules that depend on settings (called when a worker is built): the weekly
    reward runs on `weekly_reward_cron` only while `weekly_reward_enabled`."""
    if settings.weekly_reward_enabled:
        cron.schedule(WEEKLY_REWARDS, settings.weekly_reward_cron, WEEKLY_REWARDS)
    else:
        cron.unregister(WEEKLY_REWARDS)
