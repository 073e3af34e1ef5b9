"""The weekly subscriber reward run: eligibility, batches, exactly once (also with several
workers racing), failures recorded and retried, mid-week purchases not paid twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from yuntu.kit.db import Database, utcnow
from yuntu.kit.ids import new_id
from yuntu.ledger import rewards
from yuntu.ledger.reward_runs import run_week
from yuntu.models.identity import User
from yuntu.models.ledger import (
    Asset,
    LedgerAccount,
    LedgerTransfer,
    RewardFailure,
    Subscription,
    SystemAccount,
    TransferType,
)

pytestmark = pytest.mark.anyio

WEEK = "2026-W48"  # Monday 2026-11-23 .. Monday 2026-11-30 (UTC)
PLANS = ["weekly"]


async def seed_subscribers(
    db: Database, week: str, eligible: int, *, with_ineligible: bool = True
) -> list[int]:
    """`eligible` subscribers of `week` (active, cancelled and paused; one with two weekly
    subscriptions; one whose period ends a second after the week starts) and, with
    `with_ineligible`, one user for each way of not qualifying. Returns the eligible user ids
    in id order. Rows go in by bulk insert."""
    start, end = rewards.week_start(week), rewards.week_end(week)
    now = utcnow()
    users: list[dict[str, Any]] = []
    subs: list[dict[str, Any]] = []

    def add(
        user_id: int | None = None,
        *,
        status: str = "active",
        plan: str = "weekly",
        period_end: datetime = end + timedelta(days=2),
        created: datetime = start - timedelta(days=3),
        user_status: str = "active",
    ) -> int:
        if user_id is None:
            user_id = new_id()
            name = f"sub{user_id}"
            users.append(
                {
                    "id": user_id,
                    "username": name,
                    "username_key": name,
                    "status": user_status,
                    "role": "user",
                    "member_level": 0,
                    "is_vip": True,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        sub_id = new_id()
        subs.append(
            {
                "id": sub_id,
                "user_id": user_id,
                "rc_key": f"rc-{sub_id}",
                "rc_subscriber_id": f"app-{user_id}",
                "product_id": f"pk_{plan}",
                "plan_type": plan,
                "status": status,
                "will_renew": status == "active",
                "environment": "PRODUCTION",
                "current_period_start": period_end - timedelta(days=7),
                "current_period_end": period_end,
                "last_event_ms": 0,
                "created_at": created,
                "updated_at": now,
            }
        )
        return user_id

    statuses = ["active", "cancelled", "paused"]
    chosen = [add(status=statuses[i % 3]) for i in range(eligible)]
    if chosen:
        add(chosen[0])  # a second weekly subscription: still one reward
    if len(chosen) > 1:
        subs[1]["current_period_end"] = start + timedelta(seconds=1)
    if with_ineligible:
        add(status="expired")
        add(plan="monthly")
        add(period_end=start)  # ended exactly when the week began
        add(period_end=start - timedelta(days=1))
        add(created=end)  # first recorded after the week
        add(user_status="deleted")
    async with db.transaction() as session:
        # Core executemany: kit.db.bulk_insert hands whole-second datetimes to SQLite's own
        # adapter, whose text ("... 00:00:00") sorts before SQLAlchemy's ("... 00:00:00.000000")
        # and would blur the week's exact boundaries tested here.
        await session.execute(insert(User), users)
        await session.execute(insert(Subscription), subs)
    return sorted(chosen)


async def point_balances(db: Database) -> dict[int, int]:
    async with db.read_sessionmaker() as session:
        rows = await session.execute(
            select(LedgerAccount.user_id, LedgerAccount.balance).where(
                LedgerAccount.user_id.is_not(None), LedgerAccount.asset == Asset.POINTS
            )
        )
        return {int(user_id): int(balance) for user_id, balance in rows if balance}


async def reward_count(db: Database, week: str | None = None) -> int:
    async with db.read_sessionmaker() as session:
        statement = select(func.count()).where(LedgerTransfer.type == TransferType.REWARD)
        if week is not None:
            statement = statement.where(LedgerTransfer.idempotency_key.like(f"reward:%:{week}"))
        return int(await session.scalar(statement) or 0)


async def rewards_account_balance(db: Database) -> int:
    async with db.read_sessionmaker() as session:
        balance = await session.scalar(
            select(LedgerAccount.balance).where(
                LedgerAccount.code == SystemAccount.REWARDS, LedgerAccount.asset == Asset.POINTS
            )
        )
        return int(balance or 0)


@asynccontextmanager
async def failing_reward(db: Database, user_id: int, week: str) -> AsyncIterator[None]:
    """A real database fault: a trigger refuses to insert this user's reward transfer for the
    week (on SQLite RAISE(ABORT), on PostgreSQL RAISE EXCEPTION), until the block ends."""
    key = rewards.reward_key(user_id, week)  # digits, a colon and the week: safe to inline
    if db.dialect == "postgresql":
        create = [
            "CREATE FUNCTION test_reward_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.idempotency_key = '{key}' THEN RAISE EXCEPTION 'injected fault'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER test_reward_fault BEFORE INSERT ON ledger_transfers "
            "FOR EACH ROW EXECUTE FUNCTION test_reward_fault()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS test_reward_fault ON ledger_transfers",
            "DROP FUNCTION IF EXISTS test_reward_fault()",
        ]
    else:
        create = [
            "CREATE TRIGGER test_reward_fault BEFORE INSERT ON ledger_transfers "
            f"WHEN NEW.idempotency_key = '{key}' "
            "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS test_reward_fault"]
    async with db.transaction() as session:
        for statement in create:
            await session.execute(text(statement))
    try:
        yield
    finally:
        async with db.transaction() as session:
            for statement in drop:
                await session.execute(text(statement))


async def test_week_run_pays_every_subscriber_once_in_batches(ledger_db: Database) -> None:
    eligible = await seed_subscribers(ledger_db, WEEK, 230)
    committed: list[int] = []

    async def after_batch() -> None:  # each batch is committed before the next starts
        committed.append(await reward_count(ledger_db, WEEK))

    first = await run_week(
        ledger_db, WEEK, points=7, plans=PLANS, batch=100, between_batches=after_batch
    )
    assert first.as_dict() == {
        "week": WEEK,
        "eligible": 230,
        "paid": 230,
        "already_paid": 0,
        "failed": 0,
        "retried": 0,
    }
    assert committed == [100, 200]  # then the last 30
    assert await point_balances(ledger_db) == dict.fromkeys(eligible, 7)
    assert await rewards_account_balance(ledger_db) == -230 * 7

    second = await run_week(ledger_db, WEEK, points=7, plans=PLANS, batch=100)
    assert (second.eligible, second.paid, second.already_paid, second.failed) == (230, 0, 230, 0)
    assert await reward_count(ledger_db) == 230
    async with ledger_db.read_sessionmaker() as session:
        transfer = await session.scalar(
            select(LedgerTransfer).where(
                LedgerTransfer.idempotency_key == rewards.reward_key(eligible[0], WEEK)
            )
        )
    assert transfer is not None and transfer.reference_type == "subscription"
    assert transfer.description == f"weekly subscriber reward {WEEK}"


async def test_other_plans_and_weeks(ledger_db: Database) -> None:
    await seed_subscribers(ledger_db, WEEK, 2)
    both = await run_week(ledger_db, WEEK, points=5, plans=["weekly", "monthly"], batch=100)
    assert (both.eligible, both.paid) == (3, 3)
    later = await run_week(ledger_db, "2026-W47", points=5, plans=PLANS, batch=100)
    # W47 also counts the two whose periods ended at or a day before W48 began.
    assert (later.eligible, later.paid) == (4, 4)
    with pytest.raises(ValueError, match="has not started"):
        await run_week(
            ledger_db, rewards.iso_week(utcnow() + timedelta(days=7)), points=5, plans=PLANS
        )
    with pytest.raises(ValueError, match="no such ISO week"):
        await run_week(ledger_db, "2026-48", points=5, plans=PLANS)


async def test_workers_racing_on_one_week_pay_each_subscriber_once(db_url: str) -> None:
    """Four runs of the same week at once, each with its own engine and connections and its
    own batch size (so their batches overlap partly): on PostgreSQL they really race (row
    locks, unique keys), on SQLite they serialize."""
    databases = [Database(db_url) for _ in range(4)]
    try:
        eligible = await seed_subscribers(databases[0], WEEK, 40, with_ineligible=False)
        summaries = await asyncio.gather(
            *(
                run_week(db, WEEK, points=11, plans=PLANS, batch=size)
                for db, size in zip(databases, (3, 7, 10, 13), strict=True)
            )
        )
        assert [s.failed for s in summaries] == [0, 0, 0, 0]
        assert sum(s.paid for s in summaries) == 40
        assert all(s.paid + s.already_paid == 40 == s.eligible for s in summaries)
        assert await point_balances(databases[0]) == dict.fromkeys(eligible, 11)
        assert await reward_count(databases[0]) == 40
        async with databases[0].read_sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(RewardFailure)) == 0
    finally:
        for db in databases:
            await db.dispose()


async def test_failure_is_recorded_and_retried_first_on_the_next_run(ledger_db: Database) -> None:
    users = await seed_subscribers(ledger_db, WEEK, 5, with_ineligible=False)
    unlucky = users[2]
    earlier = "2026-W47"
    async with failing_reward(ledger_db, unlucky, earlier):
        first = await run_week(ledger_db, earlier, points=3, plans=PLANS, batch=2)
    assert (first.paid, first.failed, first.already_paid) == (4, 1, 0)
    async with ledger_db.read_sessionmaker() as session:
        failure = (await session.scalars(select(RewardFailure))).one()
    assert (failure.week, failure.user_id, failure.attempts) == (earlier, unlucky, 1)
    assert failure.resolved_at is None
    assert "injected fault" in failure.error, failure.error
    assert "INSERT" not in failure.error and "reward:" not in failure.error  # no statement
    balances = await point_balances(ledger_db)
    assert unlucky not in balances and len(balances) == 4

    # Still failing on a second attempt: the count goes up and nothing else changes.
    async with failing_reward(ledger_db, unlucky, earlier):
        again = await run_week(ledger_db, earlier, points=3, plans=PLANS, batch=2)
    assert (again.retried, again.failed, again.paid, again.already_paid) == (1, 1, 0, 4)
    async with ledger_db.read_sessionmaker() as session:
        assert (await session.scalars(select(RewardFailure.attempts))).one() == 2

    # The fault is gone; the next Monday's run pays the old week first, under its own key.
    monday = await run_week(ledger_db, WEEK, points=3, plans=PLANS, batch=2)
    assert (monday.retried, monday.failed, monday.paid, monday.eligible) == (1, 0, 6, 5)
    async with ledger_db.read_sessionmaker() as session:
        resolved = (await session.scalars(select(RewardFailure))).one()
        paid = await session.scalar(
            select(LedgerTransfer.amount).where(
                LedgerTransfer.idempotency_key == rewards.reward_key(unlucky, earlier)
            )
        )
    assert resolved.resolved_at is not None and paid == 3
    assert await point_balances(ledger_db) == dict.fromkeys(users, 6)
    nothing = await run_week(ledger_db, WEEK, points=3, plans=PLANS, batch=2)
    assert (nothing.retried, nothing.paid, nothing.already_paid) == (0, 0, 5)


async def test_mid_week_purchase_is_not_paid_again(ledger_db: Database) -> None:
    users = await seed_subscribers(ledger_db, WEEK, 3, with_ineligible=False)
    async with ledger_db.transaction() as session:  # the purchase paid the week at once
        await rewards.grant(session, user_id=users[1], week=WEEK, points=2000, subscription_id=None)
    summary = await run_week(ledger_db, WEEK, points=2000, plans=PLANS, batch=100)
    assert (summary.eligible, summary.paid, summary.already_paid) == (3, 2, 1)
    assert await point_balances(ledger_db) == dict.fromkeys(users, 2000)
