"""Administrator ledger tools: credit or debit a user with a reason, reverse a transfer, list
transfers. Every change is a new transfer (never an edit) and is written to the audit log in the
same transaction, with the balances before and after."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from yuntu.admin import audit
from yuntu.kit.errors import AppError, E
from yuntu.ledger import accounts
from yuntu.ledger.transfers import Transfer, reverse, transfer
from yuntu.models.identity import User
from yuntu.models.ledger import LedgerAccount, LedgerTransfer, SystemAccount, TransferType

Direction = Literal["credit", "debit"]


async def _balances(session: AsyncSession, user_id: int, asset: str) -> dict[str, int]:
    available, held = await accounts.balance_of(session, user_id, asset)
    return {"balance": available, "held": held}


async def adjust(
    session: AsyncSession,
    *,
    admin_id: int,
    user_id: int,
    asset: str,
    direction: Direction,
    amount: int,
    reason: str,
    ip: str | None,
    idempotency_key: str | None,
) -> Transfer:
    """Credit or debit a user against the adjustments account (a debit cannot overdraw: 402)."""
    if await session.get(User, user_id) is None:
        raise AppError(E.NOT_FOUND)
    before = await _balances(session, user_id, asset)
    account = await accounts.user_account(session, user_id, asset)
    adjustments = await accounts.system_account(session, SystemAccount.ADJUSTMENTS, asset)
    debit, credit = (adjustments, account) if direction == "credit" else (account, adjustments)
    suffix = idempotency_key or uuid.uuid4().hex
    moved = await transfer(
        session,
        key=f"adjust:{admin_id}:{suffix}",
        asset=asset,
        debit=debit,
        credit=credit,
        amount=amount,
        type=TransferType.ADJUSTMENT,
        reference=None,
        description=reason,
        actor_user_id=admin_id,
    )
    if moved.created:
        await audit.record(
            session,
            actor_user_id=admin_id,
            action=f"ledger.{direction}",
            target_type="user",
            target_id=user_id,
            ip=ip,
            before={"asset": asset, **before},
            after={
                "asset": asset,
                **await _balances(session, user_id, asset),
                "amount": amount,
                "reason": reason,
                "transfer_id": str(moved.id),
            },
        )
    return moved


async def reverse_transfer(
    session: AsyncSession,
    *,
    admin_id: int,
    transfer_id: int,
    amount: int | None,
    reason: str,
    ip: str | None,
    idempotency_key: str | None,
) -> Transfer:
    """A correction: the opposite movement of (part of) an earlier transfer. 402 when the side
    that received the money no longer has it; 409 when nothing is left to reverse."""
    original = await session.get(LedgerTransfer, transfer_id)
    if original is None:
        raise AppError(E.NOT_FOUND)
    moved = await reverse(
        session,
        transfer_id,
        key=f"admin-reversal:{admin_id}:{idempotency_key or uuid.uuid4().hex}",
        amount=amount,
        description=reason,
        actor_user_id=admin_id,
    )
    if moved is None:
        raise AppError(E.CONFLICT, message="nothing left to reverse")
    if moved.created:
        await audit.record(
            session,
            actor_user_id=admin_id,
            action="ledger.reverse",
            target_type="transfer",
            target_id=transfer_id,
            ip=ip,
            before={"amount": original.amount, "type": original.type},
            after={"reversal_id": str(moved.id), "amount": moved.amount, "reason": reason},
        )
    return moved


@dataclass(frozen=True, slots=True)
class TransferFilter:
    user_id: int | None = None
    asset: str | None = None
    type: str | None = None
    reference_type: str | None = None
    reference_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def transfers_statement(filters: TransferFilter) -> Select[Any]:
    debit = aliased(LedgerAccount)
    credit = aliased(LedgerAccount)
    statement = (
        select(LedgerTransfer, debit, credit)
        .join(debit, debit.id == LedgerTransfer.debit_account_id)
        .join(credit, credit.id == LedgerTransfer.credit_account_id)
    )
    if filters.user_id is not None:
        statement = statement.where(
            (debit.user_id == filters.user_id) | (credit.user_id == filters.user_id)
        )
    if filters.asset:
        statement = statement.where(LedgerTransfer.asset == filters.asset)
    if filters.type:
        statement = statement.where(LedgerTransfer.type == filters.type)
    if filters.reference_type:
        statement = statement.where(LedgerTransfer.reference_type == filters.reference_type)
    if filters.reference_id:
        statement = statement.where(LedgerTransfer.reference_id == filters.reference_id)
    if filters.since:
        statement = statement.where(LedgerTransfer.created_at >= filters.since)
    if filters.until:
        statement = statement.where(LedgerTransfer.created_at < filters.until)
    return statement.order_by(LedgerTransfer.created_at.desc(), LedgerTransfer.id.desc())


async def list_transfers(
    session: AsyncSession, filters: TransferFilter, offset: int, limit: int
) -> tuple[list[tuple[LedgerTransfer, LedgerAccount, LedgerAccount]], int]:
    statement = transfers_statement(filters)
    total = await session.scalar(
        select(func.count()).select_from(statement.order_by(None).subquery())
    )
    rows = (await session.execute(statement.offset(offset).limit(limit))).tuples().all()
    return [tuple(row) for row in rows], int(total or 0)  # type: ignore[misc]


def side(account: LedgerAccount) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "user_id": account.user_id,
        "system": account.code,
    }
