"""Holds: two-phase spends (a render task's estimate, an AI generation's price).

Placing a hold is a transfer from the user to the holds account, so the held amount is no longer
available and the balance stays the sum of transfers. A capture moves part of the hold on to
revenue; the release sends what is left back to the user and closes the hold. The hold row keeps
`captured` and `released`, changed by conditional updates, so concurrent captures cannot take
more than was held and a hold is closed exactly once. TRANSITIONS is the table of allowed
hold states."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.ledger.accounts import ACCOUNTS, insufficient, system_account, user_account
from yuntu.ledger.transfers import Reference, Transfer, find, stored_key, transfer
from yuntu.models.ledger import HoldStatus, LedgerHold, SystemAccount, TransferType

HOLDS = cast(Table, LedgerHold.__table__)

TRANSITIONS: dict[HoldStatus, frozenset[HoldStatus]] = {
    HoldStatus.PENDING: frozenset(
        {HoldStatus.PENDING, HoldStatus.CAPTURED, HoldStatus.RELEASED, HoldStatus.EXPIRED}
    ),
    HoldStatus.CAPTURED: frozenset(),
    HoldStatus.RELEASED: frozenset(),
    HoldStatus.EXPIRED: frozenset(),
}


def can_move(source: str, target: str) -> bool:
    return HoldStatus(target) in TRANSITIONS[HoldStatus(source)]


async def place(
    session: AsyncSession,
    *,
    key: str,
    user_id: int,
    asset: str,
    amount: int,
    expires_in: timedelta,
    reference: Reference | None = None,
    description: str | None = None,
) -> LedgerHold:
    """Hold `amount` of the user's `asset` (402 when not available). The same key returns the
    hold placed first."""
    key = stored_key(key)
    existing = await session.scalar(select(LedgerHold).where(LedgerHold.idempotency_key == key))
    if existing is not None:
        if (existing.asset, existing.amount) != (asset, amount):
            raise AppError(E.IDEMPOTENCY_KEY_REUSED, details={"idempotency_key": key})
        return existing
    account = await user_account(session, user_id, asset)
    holds_account = await system_account(session, SystemAccount.HOLDS, asset)
    hold = LedgerHold(
        id=new_id(),
        idempotency_key=key,
        account_id=account,
        asset=asset,
        amount=amount,
        captured=0,
        released=0,
        status=HoldStatus.PENDING,
        expires_at=utcnow() + expires_in,
        description=(description or "")[:255] or None,
        **(reference.values() if reference else {}),
    )
    session.add(hold)
    await session.flush()
    try:
        await transfer(
            session,
            key=f"hold:{hold.id}",
            asset=asset,
            debit=account,
            credit=holds_account,
            amount=amount,
            type=TransferType.HOLD,
            hold_id=hold.id,
            reference=reference,
            description=description,
            system_last=True,
        )
    except AppError:
        # Refused (402): leave no hold behind, even for a caller that handles the error and
        # commits (a task marked "insufficient balance" in the same transaction).
        await session.execute(delete(HOLDS).where(HOLDS.c.id == hold.id))
        session.expunge(hold)
        raise
    return hold


async def get(session: AsyncSession, hold_id: int, *, for_update: bool = False) -> LedgerHold:
    statement = select(LedgerHold).where(LedgerHold.id == hold_id)
    if for_update:
        statement = statement.with_for_update()
    hold = await session.scalar(statement.execution_options(populate_existing=True))
    if hold is None:
        raise AppError(E.NOT_FOUND)
    return hold


async def capture(
    session: AsyncSession,
    hold_id: int,
    amount: int,
    *,
    key: str,
    to: SystemAccount = SystemAccount.REVENUE,
    description: str | None = None,
    reference: Reference | None = None,
    overflow: bool = False,
) -> list[Transfer]:
    """Capture `amount` of the hold (409 HOLD_EXCEEDED beyond what is left, HOLD_CLOSED once
    closed). With `overflow`, what exceeds the hold is spent straight from the user's balance
    (402 if it cannot be). The same key returns the same transfers."""
    if amount <= 0:
        raise ValueError(f"capture amount must be positive: {amount}")
    hold = await get(session, hold_id)
    done = [found for found in (await find(session, key), await find(session, f"{key}:overflow"))]
    if any(done):
        earlier = [found for found in done if found is not None]
        if sum(found.amount for found in earlier) != amount:
            raise AppError(E.IDEMPOTENCY_KEY_REUSED, details={"idempotency_key": key})
        return earlier
    if hold.status != HoldStatus.PENDING:
        raise AppError(E.HOLD_CLOSED)
    if amount > hold.remaining and not overflow:
        raise AppError(E.HOLD_EXCEEDED)
    from_hold = min(amount, hold.remaining)
    extra = amount - from_hold
    revenue = await system_account(session, to, hold.asset)
    holds_account = await system_account(session, SystemAccount.HOLDS, hold.asset)
    reference = reference or _reference_of(hold)
    moved: list[Transfer] = []
    if from_hold > 0:
        taken = await session.scalar(
            update(HOLDS)
            .where(
                HOLDS.c.id == hold.id,
                HOLDS.c.status == HoldStatus.PENDING,
                HOLDS.c.amount - HOLDS.c.captured - HOLDS.c.released >= from_hold,
            )
            .values(captured=HOLDS.c.captured + from_hold, updated_at=utcnow())
            .returning(HOLDS.c.id)
        )
        if taken is None:  # a concurrent capture or release got there first
            raise AppError(E.HOLD_EXCEEDED)
    if extra > 0:
        # Row locks go hold, user account, system accounts in every ledger transaction; the
        # overflow debits the user after the system rows are locked, so lock the user first
        # (else a capture and a spend of the same user deadlock on PostgreSQL), and refuse
        # before anything moved when the balance cannot cover the overflow.
        balance = await session.scalar(
            select(ACCOUNTS.c.balance)
            .where(ACCOUNTS.c.id == hold.account_id)
            .with_for_update(key_share=True)
        )
        if balance is None or balance < extra:
            if from_hold > 0:
                await session.execute(
                    update(HOLDS)
                    .where(HOLDS.c.id == hold.id)
                    .values(captured=HOLDS.c.captured - from_hold, updated_at=utcnow())
                )
            raise AppError(insufficient(hold.asset))
    if from_hold > 0:
        moved.append(
            await transfer(
                session,
                key=key,
                asset=hold.asset,
                debit=holds_account,
                credit=revenue,
                amount=from_hold,
                type=TransferType.CAPTURE,
                hold_id=hold.id,
                reference=reference,
                description=description,
            )
        )
    if extra > 0:
        moved.append(
            await transfer(
                session,
                key=f"{key}:overflow",
                asset=hold.asset,
                debit=hold.account_id,
                credit=revenue,
                amount=extra,
                type=TransferType.CONSUME,
                reference=reference,
                description=description,
                system_last=True,
            )
        )
    await session.refresh(hold)
    if hold.remaining == 0 and hold.status == HoldStatus.PENDING:
        await _close(session, hold, HoldStatus.CAPTURED)
    return moved


async def release(
    session: AsyncSession, hold_id: int, *, expired: bool = False, description: str | None = None
) -> Transfer | None:
    """Close the hold and give back what was not captured. Closing a closed hold changes
    nothing (returns None), so callers may release on every path."""
    hold = await get(session, hold_id)
    if hold.status != HoldStatus.PENDING:
        return None
    target = HoldStatus.EXPIRED if expired else HoldStatus.RELEASED
    rest = hold.remaining
    closed = await session.scalar(
        update(HOLDS)
        .where(
            HOLDS.c.id == hold.id,
            HOLDS.c.status == HoldStatus.PENDING,
            HOLDS.c.captured == hold.captured,
            HOLDS.c.released == hold.released,
        )
        .values(
            released=HOLDS.c.released + rest,
            status=target if rest > 0 else HoldStatus.CAPTURED,
            closed_at=utcnow(),
            updated_at=utcnow(),
        )
        .returning(HOLDS.c.id)
    )
    if closed is None:  # changed under us: read again and decide once more
        return await release(session, hold_id, expired=expired, description=description)
    await session.refresh(hold)
    if rest == 0:
        return None
    holds_account = await system_account(session, SystemAccount.HOLDS, hold.asset)
    return await transfer(
        session,
        key=f"release:{hold.id}",
        asset=hold.asset,
        debit=holds_account,
        credit=hold.account_id,
        amount=rest,
        type=TransferType.RELEASE,
        hold_id=hold.id,
        reference=_reference_of(hold),
        description=description or ("hold expired" if expired else "hold released"),
    )


async def _close(session: AsyncSession, hold: LedgerHold, status: HoldStatus) -> None:
    assert can_move(hold.status, status)
    await session.execute(
        update(HOLDS)
        .where(HOLDS.c.id == hold.id, HOLDS.c.status == HoldStatus.PENDING)
        .values(status=status, closed_at=utcnow(), updated_at=utcnow())
    )
    await session.refresh(hold)


def _reference_of(hold: LedgerHold) -> Reference | None:
    if hold.reference_type is None or hold.reference_id is None:
        return None
    return Reference(hold.reference_type, hold.reference_id)


async def expired_ids(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    rows = await session.scalars(
        select(LedgerHold.id)
        .where(LedgerHold.status == HoldStatus.PENDING, LedgerHold.expires_at <= now)
        .order_by(LedgerHold.expires_at)
        .limit(limit)
    )
    return list(rows)
