"""Consumption bills: one per billed thing (a render task, a generation), whose lines are the
transfers that paid for it.

`charge` takes money from the bill's hold (what exceeds the hold is spent straight from the
balance: `holds.capture(overflow=True)`), or directly from the balance when the bill has no hold
or its hold has already closed. Every transfer becomes one line with the transfer's amount, and
the bill's total moves in the same transaction, so `ledger verify` can check both. A charge's
key makes it idempotent: the same key again returns the lines written the first time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import insert_ignoring_conflicts, utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.kit.schemas import PageParams, paginate
from yuntu.ledger import holds
from yuntu.ledger.accounts import system_account, user_account
from yuntu.ledger.transfers import Reference, Transfer, find, transfer
from yuntu.models.ledger import (
    Bill,
    BillLine,
    BillStatus,
    HoldStatus,
    SystemAccount,
    TransferType,
)

BILLS = cast(Table, Bill.__table__)
OVERFLOW_NOTE = " (beyond the hold)"


def reference_of(bill: Bill) -> Reference:
    return Reference(bill.reference_type, bill.reference_id)


async def find_bill(session: AsyncSession, reference: Reference) -> Bill | None:
    values = reference.values()
    return await session.scalar(
        select(Bill)
        .where(
            Bill.reference_type == values["reference_type"],
            Bill.reference_id == values["reference_id"],
        )
        .execution_options(populate_existing=True)
    )


async def open_bill(
    session: AsyncSession,
    *,
    user_id: int,
    asset: str,
    title: str,
    reference: Reference,
    hold_id: int | None = None,
) -> Bill:
    """The bill of `reference`, opened now or earlier (one per reference, even under
    concurrent calls)."""
    existing = await find_bill(session, reference)
    if existing is None:
        now = utcnow()
        await session.execute(
            insert_ignoring_conflicts(session.bind.dialect.name, BILLS).values(
                id=new_id(),
                user_id=user_id,
                asset=asset,
                title=title[:255],
                hold_id=hold_id,
                status=BillStatus.OPEN,
                total=0,
                closed_at=None,
                created_at=now,
                updated_at=now,
                **reference.values(),
            )
        )
        existing = await find_bill(session, reference)
    assert existing is not None
    if (existing.user_id, existing.asset) != (user_id, asset):
        raise ValueError(f"bill for {reference} belongs to another user or asset")
    return existing


def _transfer_key(bill: Bill, key: str) -> str:
    # Scoped to the bill: two bills may use the same charge keys ("frame:1").
    return f"bill:{bill.id}:{key}"


async def _lines_of(session: AsyncSession, transfer_ids: Sequence[int]) -> list[BillLine]:
    rows = await session.scalars(
        select(BillLine).where(BillLine.transfer_id.in_(transfer_ids)).order_by(BillLine.id)
    )
    return list(rows)


async def charge(
    session: AsyncSession,
    bill: Bill,
    amount: int,
    *,
    key: str,
    description: str,
    quantity: int = 1,
    unit: str | None = None,
    details: dict[str, Any] | None = None,
) -> list[BillLine]:
    """Charge `amount` to the bill: one line per transfer (two when a capture overflows its
    hold: the first line carries the whole quantity, the overflow line quantity 0). 402 when
    the balance cannot cover what the hold does not. A hold that already closed (released,
    expired) no longer covers anything: the charge is spent from the balance. The same key
    returns the lines of the first call; a closed bill takes no new charge (409)."""
    if amount <= 0:
        raise ValueError(f"bill charge must be positive: {amount}")
    transfer_key = _transfer_key(bill, key)
    earlier = [found for found in (await find(session, transfer_key),) if found is not None]
    overflowed = await find(session, f"{transfer_key}:overflow")
    if overflowed is not None:
        earlier.append(overflowed)
    if earlier:
        return await _lines_of(session, [moved.id for moved in earlier])
    await session.refresh(bill)
    if bill.status != BillStatus.OPEN:
        raise AppError(E.INVALID_STATE, details={"bill": str(bill.id), "status": bill.status})

    reference = reference_of(bill)
    moved: list[Transfer] = []
    hold = await holds.get(session, bill.hold_id) if bill.hold_id is not None else None
    if hold is not None and hold.status == HoldStatus.PENDING:
        try:
            moved = await holds.capture(
                session,
                hold.id,
                amount,
                key=transfer_key,
                overflow=True,
                description=description,
                reference=reference,
            )
        except AppError as error:  # closed meanwhile (nothing was moved): spend directly
            if error.spec != E.HOLD_CLOSED:
                raise
    if not moved:
        moved = [
            await transfer(
                session,
                key=transfer_key,
                asset=bill.asset,
                debit=await user_account(session, bill.user_id, bill.asset),
                credit=await system_account(session, SystemAccount.REVENUE, bill.asset),
                amount=amount,
                type=TransferType.CONSUME,
                reference=reference,
                description=description,
                system_last=True,
            )
        ]
    lines = []
    for index, paid in enumerate(moved):
        overflow = paid.idempotency_key.endswith(":overflow")
        line = BillLine(
            id=new_id(),
            bill_id=bill.id,
            description=(description + (OVERFLOW_NOTE if overflow else ""))[:255],
            quantity=quantity if index == 0 else 0,
            unit=unit,
            amount=paid.amount,
            transfer_id=paid.id,
            details=details,
            created_at=utcnow(),
        )
        session.add(line)
        lines.append(line)
    await session.flush()
    await session.execute(
        update(BILLS)
        .where(BILLS.c.id == bill.id)
        .values(total=BILLS.c.total + sum(paid.amount for paid in moved), updated_at=utcnow())
    )
    await session.refresh(bill)
    return lines


async def close_bill(session: AsyncSession, bill: Bill) -> Bill:
    """Close the bill and give back what its hold has left. Closing twice changes nothing."""
    await session.refresh(bill)
    if bill.status == BillStatus.CLOSED:
        return bill
    if bill.hold_id is not None:
        await holds.release(session, bill.hold_id)
    now = utcnow()
    await session.execute(
        update(BILLS)
        .where(BILLS.c.id == bill.id, BILLS.c.status == BillStatus.OPEN)
        .values(status=BillStatus.CLOSED, closed_at=now, updated_at=now)
    )
    await session.refresh(bill)
    return bill


async def list_bills(
    session: AsyncSession,
    user_id: int,
    asset: str,
    params: PageParams,
    status: str | None = None,
) -> tuple[list[tuple[Bill, list[BillLine]]], int]:
    """One page of the user's bills of `asset`, newest first, each with its lines (oldest
    first); the lines of the whole page come in one query."""
    statement = select(Bill).where(Bill.user_id == user_id, Bill.asset == asset)
    if status is not None:
        statement = statement.where(Bill.status == status)
    page, total = await paginate(
        session, statement.order_by(Bill.created_at.desc(), Bill.id.desc()), params
    )
    grouped: dict[int, list[BillLine]] = {bill.id: [] for bill in page}
    if grouped:
        rows = await session.scalars(
            select(BillLine)
            .where(BillLine.bill_id.in_(list(grouped)))
            .order_by(BillLine.bill_id, BillLine.created_at, BillLine.id)
        )
        for line in rows:
            grouped[line.bill_id].append(line)
    return [(bill, grouped[bill.id]) for bill in page], total
