"""Ledger accounts: one per user and asset, created on first movement, and the system accounts
on the other side of every user movement."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import database_of, insert_ignoring_conflicts, on_commit, utcnow
from yuntu.kit.errors import E, ErrorSpec
from yuntu.kit.ids import new_id
from yuntu.models.ledger import Asset, HoldStatus, LedgerAccount, LedgerHold, SystemAccount

ACCOUNTS = cast(Table, LedgerAccount.__table__)


def insufficient(asset: str) -> ErrorSpec:
    return E.INSUFFICIENT_POINTS if asset == Asset.POINTS else E.INSUFFICIENT_BALANCE


async def _get_or_create(
    session: AsyncSession, *, user_id: int | None, code: str | None, asset: str
) -> int:
    column, value = (ACCOUNTS.c.user_id, user_id) if code is None else (ACCOUNTS.c.code, code)
    find = select(ACCOUNTS.c.id).where(column == value, ACCOUNTS.c.asset == asset)
    found = await session.scalar(find)
    if found is not None:
        return int(found)
    now = utcnow()
    statement = (
        insert_ignoring_conflicts(session.bind.dialect.name, ACCOUNTS)
        .values(
            id=new_id(),
            user_id=user_id,
            code=code,
            asset=asset,
            balance=0,
            allow_negative=code is not None,
            created_at=now,
            updated_at=now,
        )
        .returning(ACCOUNTS.c.id)
    )
    created = await session.scalar(statement)
    if created is None:  # another transaction created it meanwhile
        created = await session.scalar(find)
    assert created is not None
    return int(created)


async def user_account(session: AsyncSession, user_id: int, asset: str) -> int:
    """The user's account for `asset`, created if this is its first movement (write session)."""
    return await _get_or_create(session, user_id=user_id, code=None, asset=asset)


async def system_account(session: AsyncSession, code: SystemAccount, asset: str) -> int:
    # System account ids never change once created: cached per database after their commit.
    constants = database_of(session).constants
    cached = constants.get(("ledger.system", code, asset))
    if cached is not None:
        return int(cached)
    account_id = await _get_or_create(session, user_id=None, code=code, asset=asset)
    on_commit(session, lambda: constants.setdefault(("ledger.system", code, asset), account_id))
    return account_id


async def find_user_account(session: AsyncSession, user_id: int, asset: str) -> int | None:
    """Without creating it (read sessions)."""
    found = await session.scalar(
        select(ACCOUNTS.c.id).where(ACCOUNTS.c.user_id == user_id, ACCOUNTS.c.asset == asset)
    )
    return None if found is None else int(found)


async def balance_of(session: AsyncSession, user_id: int, asset: str) -> tuple[int, int]:
    """(available balance, amount on hold) of a user; zeros for a user who never moved any."""
    balance = await session.scalar(
        select(ACCOUNTS.c.balance).where(ACCOUNTS.c.user_id == user_id, ACCOUNTS.c.asset == asset)
    )
    if balance is None:
        return 0, 0
    held = await session.scalar(
        select(
            func.coalesce(
                func.sum(LedgerHold.amount - LedgerHold.captured - LedgerHold.released), 0
            )
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerHold.account_id)
        .where(
            LedgerAccount.user_id == user_id,
            LedgerAccount.asset == asset,
            LedgerHold.status == HoldStatus.PENDING,
        )
    )
    return int(balance), int(held or 0)
