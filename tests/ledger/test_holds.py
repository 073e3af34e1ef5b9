"""Holds: place, capture in parts, overflow, release the rest, expiry; the state table."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ledger.conftest import make_user
from tests.ledger.test_transfers import credit
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError
from yuntu.ledger import accounts, holds
from yuntu.models.ledger import Asset, HoldStatus

pytestmark = pytest.mark.anyio


def test_state_table() -> None:
    for source in HoldStatus:
        for target in HoldStatus:
            expected = source == HoldStatus.PENDING
            assert holds.can_move(source, target) is expected


async def test_hold_capture_release(ledger_db: Database) -> None:
    alice = await make_user(ledger_db, "alice")
    await credit(ledger_db, alice, 1000, "seed")
    async with ledger_db.transaction() as session:
        hold = await holds.place(
            session,
            key="h1",
            user_id=alice,
            asset=Asset.CNY,
            amount=700,
            expires_in=timedelta(hours=1),
        )
    async with ledger_db.read_sessionmaker() as session:
        assert await accounts.balance_of(session, alice, Asset.CNY) == (300, 700)
    async with ledger_db.transaction() as session:
        await holds.capture(session, hold.id, 200, key="c1")
        again = await holds.capture(session, hold.id, 200, key="c1")
        assert len(again) == 1
        with pytest.raises(AppError) as exceeded:
            await holds.capture(session, hold.id, 501, key="c2")
        assert exceeded.value.spec.name == "HOLD_EXCEEDED"
    async with ledger_db.transaction() as session:
        back = await holds.release(session, hold.id)
        assert back is not None and back.amount == 500
        assert await holds.release(session, hold.id) is None
    async with ledger_db.read_sessionmaker() as session:
        assert await accounts.balance_of(session, alice, Asset.CNY) == (800, 0)
        closed = await holds.get(session, hold.id)
        assert (closed.status, closed.captured, closed.released) == ("released", 200, 500)


async def test_overflow_capture_spends_from_balance_and_closes(ledger_db: Database) -> None:
    alice = await make_user(ledger_db, "alice")
    await credit(ledger_db, alice, 1000, "seed")
    async with ledger_db.transaction() as session:
        hold = await holds.place(
            session,
            key="h1",
            user_id=alice,
            asset=Asset.CNY,
            amount=100,
            expires_in=timedelta(hours=1),
        )
        moved = await holds.capture(session, hold.id, 150, key="c1", overflow=True)
        assert [t.amount for t in moved] == [100, 50]
        closed = await holds.get(session, hold.id)
        assert closed.status == HoldStatus.CAPTURED
    with pytest.raises(AppError):
        async with ledger_db.transaction() as session:
            await holds.place(
                session,
                key="h2",
                user_id=alice,
                asset=Asset.CNY,
                amount=851,
                expires_in=timedelta(hours=1),
            )
    async with ledger_db.read_sessionmaker() as session:
        assert await accounts.balance_of(session, alice, Asset.CNY) == (850, 0)


async def test_capture_key_reused_with_another_amount_is_refused(ledger_db: Database) -> None:
    alice = await make_user(ledger_db, "alice")
    await credit(ledger_db, alice, 1000, "seed")
    async with ledger_db.transaction() as session:
        hold = await holds.place(
            session,
            key="h1",
            user_id=alice,
            asset=Asset.CNY,
            amount=300,
            expires_in=timedelta(hours=1),
        )
        await holds.capture(session, hold.id, 100, key="frame-1")
    async with ledger_db.transaction() as session:
        with pytest.raises(AppError) as refused:
            await holds.capture(session, hold.id, 120, key="frame-1")
        assert refused.value.spec.name == "IDEMPOTENCY_KEY_REUSED"
        await holds.release(session, hold.id)
