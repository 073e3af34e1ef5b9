"""The weekly subscriber reward run (PicKitchen 会员周积分发放): pay every subscriber of a week,
in batches, each user at most once, failures recorded and retried first on the next run.

Eligible for week W (Monday 00:00 UTC = start, next Monday = end) is every user, not deleted,
with a subscription whose plan type is one of `plans`, whose status is not `expired` (active,
cancelled and paused keep their benefits until the period ends), whose current period ends
after W's start, and which was first recorded before W's end: the subscription covered part of
W. The rule reads today's subscription rows, so a run for a long-past week pays whoever is
still subscribed and was subscribed then.

Every payment is `rewards.grant` (transfer key `reward:{user}:{week}`), so the run, a purchase
that paid the current week at once, a retry and any number of concurrent workers pay a user's
week once. A batch is one transaction and each user a SAVEPOINT inside it, so one failure does
not undo the others. Locks follow the ledger's global order (user accounts by id, then the
shared rewards account): a batch first locks its users' point accounts in id order, so two
workers on the same week wait for each other instead of deadlocking, and a purchase that pays
a user meanwhile waits for the batch (or the batch for it) without deadlocking."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import Database, insert_ignoring_conflicts, utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.kit.logging import get_logger
from yuntu.ledger import rewards
from yuntu.ledger.accounts import ACCOUNTS, user_account
from yuntu.ledger.transfers import TRANSFERS, find
from yuntu.models.identity import User, UserStatus
from yuntu.models.ledger import Asset, RewardFailure, Subscription, SubscriptionStatus

log = get_logger("yuntu.ledger.rewards")
FAILURES = cast(Table, RewardFailure.__table__)
PAID, ALREADY = "paid", "already_paid"
_DRIVER_CLASS = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>:\s*")


@dataclass
class Summary:
    week: str
    eligible: int = 0  # distinct eligible users found for the week
    paid: int = 0  # rewards paid by this run (retries of earlier weeks included)
    already_paid: int = 0  # eligible users whose week was paid before (or by another worker)
    failed: int = 0  # payments that failed in this run (recorded in reward_failures)
    retried: int = 0  # recorded failures this run tried again, before anything else

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_week(week: str, now: datetime | None = None) -> datetime:
    """The week's Monday 00:00 UTC; ValueError with a message for people when `week` is not an
    ISO week (2025-W53 does not exist) or has not started yet."""
    try:
        start = rewards.week_start(week)
    except ValueError:
        raise ValueError(f"no such ISO week: {week!r} (expected YYYY-Www, e.g. 2026-W48)") from None
    if start > (now or utcnow()):
        raise ValueError(f"week {week} has not started yet")
    return start


def eligibility(week: str, plans: Sequence[str]) -> Any:
    """(user_id, first eligible subscription id) of the week's subscribers, by user id."""
    start, end = rewards.week_start(week), rewards.week_end(week)
    return (
        select(Subscription.user_id, func.min(Subscription.id).label("subscription_id"))
        .join(User, User.id == Subscription.user_id)
        .where(
            Subscription.plan_type.in_(list(plans)),
            Subscription.status != SubscriptionStatus.EXPIRED,
            Subscription.current_period_end > start,
            Subscription.created_at < end,
            User.status != UserStatus.DELETED,
        )
        .group_by(Subscription.user_id)
        .order_by(Subscription.user_id)
    )


def describe(exc: BaseException) -> str:
    """What went wrong, for reward_failures.error: the error's class and the database's first
    line, never bound parameters or a statement (hide_parameters keeps values out as well)."""
    if isinstance(exc, AppError):
        return f"AppError {exc.spec.name}"
    if isinstance(exc, DBAPIError):
        lines = str(exc.orig).strip().splitlines()
        # asyncpg's adapter prefixes "<class 'asyncpg.exceptions.RaiseError'>: "
        match = _DRIVER_CLASS.match(lines[0]) if lines else None
        kind = match.group(1) if match else type(exc.orig).__name__
        first = lines[0][match.end() :] if match else (lines[0] if lines else "")
        return f"{type(exc).__name__} {kind}: {first}"[:500]
    return type(exc).__name__


async def _lock_accounts(session: AsyncSession, user_ids: list[int]) -> None:
    """Create the users' point accounts if needed and lock them in account id order, before the
    first grant takes the shared rewards account. Creation is per user in a savepoint; a user
    whose account cannot be created fails later in its own savepoint."""
    accounts: list[int] = []
    for user_id in user_ids:
        try:
            async with session.begin_nested():
                accounts.append(await user_account(session, user_id, Asset.POINTS))
        except Exception as exc:
            log.debug("reward_account_failed", user_id=str(user_id), error=type(exc).__name__)
    if accounts and session.bind.dialect.name == "postgresql":
        try:
            async with session.begin_nested():
                await session.execute(
                    select(ACCOUNTS.c.id)
                    .where(ACCOUNTS.c.id.in_(accounts))
                    .order_by(ACCOUNTS.c.id)
                    .with_for_update()
                )
        except DBAPIError:  # e.g. a deadlock with a foreign transaction: grants lock one by one
            pass


async def _pay(
    session: AsyncSession, user_id: int, week: str, points: int, subscription_id: int | None
) -> str:
    """PAID, ALREADY, or the description of the failure."""
    try:
        async with session.begin_nested():
            paid = await rewards.grant(
                session, user_id=user_id, week=week, points=points, subscription_id=subscription_id
            )
        return PAID if paid.created else ALREADY
    except (AppError, IntegrityError) as exc:
        # A concurrent payment of the same key: it is paid, by someone else.
        duplicate = isinstance(exc, IntegrityError) or exc.spec is E.IDEMPOTENCY_IN_FLIGHT
        if duplicate and await find(session, rewards.reward_key(user_id, week)) is not None:
            return ALREADY
        return describe(exc)
    except Exception as exc:
        return describe(exc)


async def _record_failure(session: AsyncSession, week: str, user_id: int, error: str) -> None:
    now = utcnow()
    inserted = await session.scalar(
        insert_ignoring_conflicts(session.bind.dialect.name, FAILURES)
        .values(
            id=new_id(),
            week=week,
            user_id=user_id,
            error=error,
            attempts=1,
            resolved_at=None,
            created_at=now,
            updated_at=now,
        )
        .returning(FAILURES.c.id)
    )
    if inserted is None:
        await session.execute(
            update(FAILURES)
            .where(FAILURES.c.week == week, FAILURES.c.user_id == user_id)
            .values(error=error, attempts=FAILURES.c.attempts + 1, resolved_at=None, updated_at=now)
        )


async def _resolve(session: AsyncSession, week: str, user_ids: list[int]) -> None:
    if user_ids:
        now = utcnow()
        await session.execute(
            update(FAILURES)
            .where(
                FAILURES.c.week == week,
                FAILURES.c.user_id.in_(user_ids),
                FAILURES.c.resolved_at.is_(None),
            )
            .values(resolved_at=now, updated_at=now)
        )


async def _paid_keys(session: AsyncSession, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    rows = await session.scalars(
        select(TRANSFERS.c.idempotency_key).where(TRANSFERS.c.idempotency_key.in_(keys))
    )
    return set(rows)


async def _settle(
    session: AsyncSession,
    week: str,
    todo: list[tuple[int, int | None]],
    points: int,
    summary: Summary,
    *,
    lock: bool = True,
) -> None:
    """Pay `todo` [(user id, subscription id)] for `week` inside the batch's transaction."""
    if lock:
        await _lock_accounts(session, sorted(user_id for user_id, _ in todo))
    settled: list[int] = []
    for user_id, subscription_id in todo:
        outcome = await _pay(session, user_id, week, points, subscription_id)
        if outcome == PAID:
            summary.paid += 1
            settled.append(user_id)
        elif outcome == ALREADY:
            summary.already_paid += 1
            settled.append(user_id)
        else:
            summary.failed += 1
            await _record_failure(session, week, user_id, outcome)
            log.warning("weekly_reward_failed", week=week, user_id=str(user_id), error=outcome)
    await _resolve(session, week, settled)


async def _retry_failures(
    db: Database,
    points: int,
    plans: Sequence[str],
    batch: int,
    summary: Summary,
    between_batches: Callable[[], Awaitable[None]] | None,
) -> set[tuple[int, str]]:
    """Pay the recorded, unresolved failures of every week (oldest first), each under its own
    week's key. A failure is a debt: its eligibility was established when it was recorded."""
    tried: set[tuple[int, str]] = set()
    after = 0
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(FAILURES.c.id, FAILURES.c.user_id, FAILURES.c.week)
                    .join(User, User.id == FAILURES.c.user_id)
                    .where(
                        FAILURES.c.resolved_at.is_(None),
                        FAILURES.c.id > after,
                        User.status != UserStatus.DELETED,
                    )
                    .order_by(FAILURES.c.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                break
            after = rows[-1].id
            users = sorted({row.user_id for row in rows})
            found = await session.execute(
                select(Subscription.user_id, func.min(Subscription.id))
                .where(Subscription.user_id.in_(users), Subscription.plan_type.in_(list(plans)))
                .group_by(Subscription.user_id)
            )
            references: dict[int, int] = {int(user): int(sub) for user, sub in found}
            by_week: dict[str, list[tuple[int, int | None]]] = {}
            for row in sorted(rows, key=lambda r: (r.week, r.user_id)):
                by_week.setdefault(row.week, []).append((row.user_id, references.get(row.user_id)))
                tried.add((row.user_id, row.week))
            summary.retried += len(rows)
            # Every account of the batch before any grant (the lock order), then week by week.
            # Users paid meanwhile (a purchase, another worker) count as already paid.
            await _lock_accounts(session, users)
            for week, todo in by_week.items():
                await _settle(session, week, todo, points, summary, lock=False)
        if len(rows) < batch:
            break
        if between_batches is not None:
            await between_batches()
    return tried


async def run_week(
    db: Database,
    week: str,
    *,
    points: int,
    plans: Sequence[str],
    batch: int = 100,
    now: datetime | None = None,
    between_batches: Callable[[], Awaitable[None]] | None = None,
) -> Summary:
    """Pay `week`'s reward to every eligible subscriber, after retrying recorded failures.
    ValueError for a malformed week or one that has not started. `between_batches` runs after
    each committed batch (a job's checkpoint)."""
    if points <= 0 or batch <= 0:
        raise ValueError("points and batch must be positive")
    check_week(week, now)
    started = time.monotonic()
    summary = Summary(week=week)
    retried = await _retry_failures(db, points, plans, batch, summary, between_batches)
    after = 0
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    eligibility(week, plans).where(Subscription.user_id > after).limit(batch)
                )
            ).all()
            if not rows:
                break
            after = rows[-1].user_id
            summary.eligible += len(rows)
            # Users retried above were counted there (paid or failed again).
            candidates = [
                (row.user_id, row.subscription_id)
                for row in rows
                if (row.user_id, week) not in retried
            ]
            paid = await _paid_keys(
                session, [rewards.reward_key(user_id, week) for user_id, _ in candidates]
            )
            todo = [
                (user_id, subscription_id)
                for user_id, subscription_id in candidates
                if rewards.reward_key(user_id, week) not in paid
            ]
            summary.already_paid += len(candidates) - len(todo)
            await _resolve(
                session,
                week,
                [u for u, _ in candidates if rewards.reward_key(u, week) in paid],
            )
            if todo:
                await _settle(session, week, todo, points, summary)
        if len(rows) < batch:
            break
        if between_batches is not None:
            await between_batches()
    log.info(
        "weekly_rewards_run",
        **summary.as_dict(),
        points=points,
        plans=list(plans),
        batch=batch,
        seconds=round(time.monotonic() - started, 3),
    )
    return summary
