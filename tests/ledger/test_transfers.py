"""Transfers: double entry, idempotency keys, no overdraft, reversals."""

from __future__ import annotations

import pytest

from tests.ledger.conftest import make_user
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError
from yuntu.ledger import accounts, transfers
from yuntu.ledger.accounts import system_account, user_account
from yuntu.models.ledger import Asset, SystemAccount, TransferType

pytestmark = pytest.mark.anyio


async def credit(
    db: Database, user_id: int, amount: int, key: str, asset: str = Asset.CNY
) -> transfers.Transfer:
    async with db.transaction() as session:
        return await transfers.transfer(
            session,
            key=key,
            asset=asset,
            debit=await system_account(session, SystemAccount.ADJUSTMENTS, asset),
            credit=await user_account(session, user_id, asset),
            amount=amount,
            type=TransferType.ADJUSTMENT,
        )


async def spend(
    db: Database, user_id: int, amount: int, key: str, asset: str = Asset.CNY
) -> transfers.Transfer:
    async with db.transaction() as session:
        return await transfers.transfer(
            session,
            key=key,
            asset=asset,
            debit=await user_account(session, user_id, asset),
            credit=await system_account(session, SystemAccount.REVENUE, asset),
            amount=amount,
            type=TransferType.CONSUME,
        )


async def test_balances_follow_transfers_and_never_go_negative(ledger_db: Database) -> None:
    alice = await make_user(ledger_db, "alice")
    first = await credit(ledger_db, alice, 1000, "k1")
    assert first.created and first.credit_balance_after == 1000
    spent = await spend(ledger_db, alice, 400, "k2")
    assert spent.debit_balance_after == 600
    with pytest.raises(AppError) as refused:
        await spend(ledger_db, alice, 601, "k3")
    assert refused.value.spec.name == "INSUFFICIENT_BALANCE"
    with pytest.raises(AppError) as refused_points:
        await spend(ledger_db, alice, 1, "k4", Asset.POINTS)
    assert refused_points.value.spec.name == "INSUFFICIENT_POINTS"
    async with ledger_db.read_sessionmaker() as session:
        assert await accounts.balance_of(session, alice, Asset.CNY) == (600, 0)
        assert await accounts.balance_of(session, alice, Asset.POINTS) == (0, 0)


async def test_same_key_returns_first_transfer_and_different_movement_is_refused(
    ledger_db: Database,
) -> None:
    alice = await make_user(ledger_db, "alice")
    first = await credit(ledger_db, alice, 500, "same")
    again = await credit(ledger_db, alice, 500, "same")
    assert (again.id, again.created) == (first.id, False)
    with pytest.raises(AppError) as refused:
        await credit(ledger_db, alice, 501, "same")
    assert refused.value.spec.name == "IDEMPOTENCY_KEY_REUSED"
    async with ledger_db.read_sessionmaker() as session:
        assert (await accounts.balance_of(session, alice, Asset.CNY))[0] == 500


async def test_reversal_is_a_new_transfer_bounded_by_the_original(ledger_db: Database) -> None:
    alice = await make_user(ledger_db, "alice")
    original = await credit(ledger_db, alice, 300, "grant")
    async with ledger_db.transaction() as session:
        back = await transfers.reverse(session, original.id, amount=100)
    assert back is not None and back.amount == 100 and back.reverses_id == original.id
    async with ledger_db.transaction() as session:
        rest = await transfers.reverse(session, original.id)
    assert rest is not None and rest.amount == 200
    async with ledger_db.transaction() as session:
        assert await transfers.reverse(session, original.id) is None
        assert (await accounts.balance_of(session, alice, Asset.CNY))[0] == 0
