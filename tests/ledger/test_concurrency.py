"""Concurrent movements over real connections: spends on one account serialize, captures never
take more than was held, opposite movements and mixed hold traffic never deadlock, one
idempotency key moves money once, reversals never exceed the original.

The PostgreSQL leg is the point: each operation runs in its own transaction on its own pooled
connection, all at once. On SQLite the same tests run serialized by its single writer.
The pool is kept at 40 connections: the PostgreSQL server (max_connections 100) is shared with
other test runs; 200 operations over 40 connections still keep 40 transactions queued on the
same row lock at every moment."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.ledger.conftest import make_user
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError
from yuntu.ledger import accounts, holds, transfers
from yuntu.ledger.accounts import system_account, user_account
from yuntu.models.ledger import Asset, LedgerTransfer, SystemAccount, TransferType

pytestmark = pytest.mark.anyio

CONNECTIONS = 40


@pytest.fixture
async def wide_db(ledger_db: Database) -> AsyncIterator[Database]:
    """A second Database on the same test database with a pool wide enough for 40 concurrent
    transactions, warmed up so that connecting does not stagger the start."""
    extra: dict[str, Any] = {}
    if ledger_db.dialect == "postgresql":
        extra = {"pool_size": CONNECTIONS, "max_overflow": 0, "pool_timeout": 120}
    db = Database(ledger_db.url, **extra)
    if db.dialect == "postgresql":
        all_open = asyncio.Barrier(CONNECTIONS)

        async def open_one() -> None:
            async with db.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                await all_open.wait()  # keep it checked out until every one is open

        await asyncio.gather(*(open_one() for _ in range(CONNECTIONS)))
    try:
        yield db
    finally:
        await db.dispose()


async def outcome(work: Awaitable[Any]) -> str:
    """The work's outcome: ok, an AppError's name, or any other exception spelled out (a
    deadlock, say), so that an assertion on the set of outcomes shows what went wrong."""
    try:
        await work
    except AppError as error:
        return error.spec.name
    except Exception as error:
        return f"{type(error).__name__}: {str(error)[:200]}"
    return "ok"


async def credit(db: Database, user_id: int, amount: int, key: str) -> transfers.Transfer:
    async with db.transaction() as session:
        return await transfers.transfer(
            session,
            key=key,
            asset=Asset.CNY,
            debit=await system_account(session, SystemAccount.ADJUSTMENTS, Asset.CNY),
            credit=await user_account(session, user_id, Asset.CNY),
            amount=amount,
            type=TransferType.ADJUSTMENT,
        )


async def spend(db: Database, user_id: int, amount: int, key: str) -> transfers.Transfer:
    async with db.transaction() as session:
        return await transfers.transfer(
            session,
            key=key,
            asset=Asset.CNY,
            debit=await user_account(session, user_id, Asset.CNY),
            credit=await system_account(session, SystemAccount.REVENUE, Asset.CNY),
            amount=amount,
            type=TransferType.CONSUME,
            system_last=True,
        )


async def balance(db: Database, user_id: int) -> tuple[int, int]:
    async with db.read_sessionmaker() as session:
        return await accounts.balance_of(session, user_id, Asset.CNY)


async def test_200_simultaneous_spends_never_overdraw(wide_db: Database) -> None:
    alice = await make_user(wide_db, "alice")
    amount, fits = 7, 120
    start = fits * amount + amount - 1  # exactly `fits` spends fit, with 6 fen left over
    await credit(wide_db, alice, start, "seed")
    await spend(wide_db, alice, 1, "warm")  # creates the revenue account before the rush
    await credit(wide_db, alice, 1, "warm-back")

    results = await asyncio.gather(
        *(outcome(spend(wide_db, alice, amount, f"spend-{n}")) for n in range(200))
    )

    assert Counter(results) == {"ok": fits, "INSUFFICIENT_BALANCE": 200 - fits}
    assert await balance(wide_db, alice) == (start - fits * amount, 0)
    async with wide_db.read_sessionmaker() as session:
        afters = (
            await session.scalars(
                select(LedgerTransfer.debit_balance_after).where(
                    LedgerTransfer.idempotency_key.like("spend-%")
                )
            )
        ).all()
    # Each spend saw the balance the previous one left: the spends ran one after another on
    # the account, and none took it below zero.
    assert sorted(afters) == [start - k * amount for k in range(fits, 0, -1)]


async def test_concurrent_captures_never_take_more_than_held(wide_db: Database) -> None:
    alice = await make_user(wide_db, "alice")
    await credit(wide_db, alice, 2000, "seed")
    async with wide_db.transaction() as session:
        hold = await holds.place(
            session,
            key="hold",
            user_id=alice,
            asset=Asset.CNY,
            amount=1000,
            expires_in=timedelta(hours=1),
        )
    await credit(wide_db, alice, 1, "warm")  # the revenue side exists before the rush

    async def take(n: int) -> list[transfers.Transfer]:
        async with wide_db.transaction() as session:
            return await holds.capture(session, hold.id, 30, key=f"capture-{n}")

    results = await asyncio.gather(*(outcome(take(n)) for n in range(60)))

    assert Counter(results) == {"ok": 33, "HOLD_EXCEEDED": 27}  # 33 * 30 = 990 of 1000
    async with wide_db.transaction() as session:
        left = await holds.get(session, hold.id)
        assert (left.captured, left.released, left.status) == (990, 0, "pending")
        back = await holds.release(session, hold.id)
    assert back is not None and back.amount == 10
    assert await balance(wide_db, alice) == (2001 - 990, 0)


async def test_captures_racing_a_release_close_the_hold_once(wide_db: Database) -> None:
    alice = await make_user(wide_db, "alice")
    await credit(wide_db, alice, 1000, "seed")
    async with wide_db.transaction() as session:
        hold = await holds.place(
            session,
            key="hold",
            user_id=alice,
            asset=Asset.CNY,
            amount=1000,
            expires_in=timedelta(hours=1),
        )

    async def take(n: int) -> None:
        async with wide_db.transaction() as session:
            await holds.capture(session, hold.id, 25, key=f"capture-{n}")

    async def give_back() -> None:
        async with wide_db.transaction() as session:
            await holds.release(session, hold.id)

    work = [outcome(take(n)) for n in range(30)]
    work.insert(15, outcome(give_back()))
    results = await asyncio.gather(*work)

    assert set(results) <= {"ok", "HOLD_CLOSED", "HOLD_EXCEEDED"}, results
    async with wide_db.read_sessionmaker() as session:
        closed = await holds.get(session, hold.id)
    assert closed.status == "released"
    assert closed.captured == 25 * (results.count("ok") - 1)  # the release answers "ok" too
    assert closed.captured + closed.released == 1000
    assert await balance(wide_db, alice) == (closed.released, 0)


async def test_opposite_transfers_between_two_accounts_do_not_deadlock(
    wide_db: Database,
) -> None:
    alice, bob = await make_user(wide_db, "alice"), await make_user(wide_db, "bob")
    await credit(wide_db, alice, 500, "seed-a")
    await credit(wide_db, bob, 500, "seed-b")

    async def move(n: int) -> None:
        source, target = (alice, bob) if n % 2 else (bob, alice)
        async with wide_db.transaction() as session:
            await transfers.transfer(
                session,
                key=f"move-{n}",
                asset=Asset.CNY,
                debit=await user_account(session, source, Asset.CNY),
                credit=await user_account(session, target, Asset.CNY),
                amount=37 + n % 5 * 40,
                type=TransferType.ADJUSTMENT,
            )

    results = await asyncio.gather(*(outcome(move(n)) for n in range(160)))

    assert set(results) <= {"ok", "INSUFFICIENT_BALANCE"}, Counter(results)
    assert "ok" in results
    a, b = (await balance(wide_db, alice))[0], (await balance(wide_db, bob))[0]
    assert a + b == 1000 and a >= 0 and b >= 0


async def test_spends_holds_and_overflow_captures_of_one_user_do_not_deadlock(
    wide_db: Database,
) -> None:
    """Everything one user's traffic does at once: spends (user, then revenue), holds placed
    (user, then holds), captures beyond the hold that spend the rest from the balance (hold,
    holds, revenue and the user), releases. All must take their row locks in one order."""
    alice = await make_user(wide_db, "alice")
    await credit(wide_db, alice, 100_000, "seed")
    placed = []
    async with wide_db.transaction() as session:
        for n in range(20):
            hold = await holds.place(
                session,
                key=f"hold-{n}",
                user_id=alice,
                asset=Asset.CNY,
                amount=50,
                expires_in=timedelta(hours=1),
            )
            placed.append(hold.id)
    await spend(wide_db, alice, 1, "warm")

    async def overflow(n: int) -> None:
        async with wide_db.transaction() as session:
            await holds.capture(session, placed[n], 80, key=f"capture-{n}", overflow=True)

    async def release(n: int) -> None:
        async with wide_db.transaction() as session:
            await holds.release(session, placed[n])

    async def place(n: int) -> None:
        async with wide_db.transaction() as session:
            await holds.place(
                session,
                key=f"more-{n}",
                user_id=alice,
                asset=Asset.CNY,
                amount=10,
                expires_in=timedelta(hours=1),
            )

    work: list[Awaitable[str]] = []
    for n in range(20):
        work.append(outcome((overflow if n < 15 else release)(n)))
        work.append(outcome(spend(wide_db, alice, 3, f"spend-{n}")))
        work.append(outcome(place(n)))
        work.append(outcome(spend(wide_db, alice, 2, f"spend-more-{n}")))
    results = await asyncio.gather(*work)

    assert Counter(results) == {"ok": 80}, Counter(results)
    placed_back, overflowed, spent, still_held = 5 * 50, 15 * 30, 20 * (3 + 2), 20 * 10
    available = 100_000 - 20 * 50 - 1 - overflowed + placed_back - spent - still_held
    assert await balance(wide_db, alice) == (available, still_held)


async def test_one_idempotency_key_moves_money_once(wide_db: Database) -> None:
    alice = await make_user(wide_db, "alice")
    await credit(wide_db, alice, 1, "warm")
    created: list[int] = []

    async def send() -> None:
        moved = await credit(wide_db, alice, 100, "same-key")
        if moved.created:
            created.append(moved.id)

    results = await asyncio.gather(*(outcome(send()) for _ in range(30)))

    assert set(results) <= {"ok", "IDEMPOTENCY_IN_FLIGHT"}, Counter(results)
    assert len(created) == 1
    async with wide_db.read_sessionmaker() as session:
        found = await transfers.find(session, "same-key")
        count = await session.scalar(
            select(func.count())
            .select_from(LedgerTransfer)
            .where(LedgerTransfer.idempotency_key == "same-key")
        )
    assert found is not None and found.id == created[0] and count == 1
    assert await balance(wide_db, alice) == (101, 0)
    # Whoever was told "in flight" retries into the first transfer.
    assert (await credit(wide_db, alice, 100, "same-key")).id == created[0]


async def test_concurrent_reversals_never_exceed_the_original(wide_db: Database) -> None:
    """Administrators (distinct keys) reversing the same transfers at once: a grant, where the
    user's balance would stop a second full reversal anyway, and a spend, where the revenue
    account (allowed below zero) would not."""
    alice = await make_user(wide_db, "alice")
    grant = await credit(wide_db, alice, 300, "grant")
    purchase = await spend(wide_db, alice, 300, "purchase")
    await credit(wide_db, alice, 300, "grant-2")

    async def back(original: int, n: int) -> None:
        async with wide_db.transaction() as session:
            await transfers.reverse(session, original, key=f"reverse-{original}-{n}", amount=100)

    results = await asyncio.gather(
        *(outcome(back(original.id, n)) for n in range(12) for original in (grant, purchase))
    )

    # Three reversals of 100 each; the later ones find nothing left (None), never a 402.
    assert set(results) == {"ok"}, Counter(results)
    async with wide_db.read_sessionmaker() as session:
        for original in (grant, purchase):
            reversed_total = await session.scalar(
                select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                    LedgerTransfer.reverses_id == original.id
                )
            )
            assert reversed_total == 300
    assert await balance(wide_db, alice) == (300, 0)
