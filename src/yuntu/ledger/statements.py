"""A user's statement of one asset: every transfer that touched their account, newest first,
signed from the user's side (negative when the money or points left them), with the balance
right after it. Shared by /users/transactions (CNY) and /points/transactions (POINTS).

The query is a UNION ALL of the debit side and the credit side (a transfer never has the same
account on both), so each half walks its own (account, created_at) index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.schemas import PageParams
from yuntu.ledger.accounts import find_user_account
from yuntu.models.ledger import LedgerTransfer

TRANSFERS = cast(Table, LedgerTransfer.__table__)


@dataclass(frozen=True, slots=True)
class Movement:
    id: int
    type: str
    amount: int  # signed: + credited to the user, - taken from them
    balance_after: int
    description: str | None
    reference_type: str | None
    reference_id: str | None
    created_at: datetime


def _side(account_id: int, *, credit: bool, filters: list[Any]) -> Select[Any]:
    column = TRANSFERS.c.credit_account_id if credit else TRANSFERS.c.debit_account_id
    return select(
        TRANSFERS.c.id,
        TRANSFERS.c.type,
        (TRANSFERS.c.amount if credit else -TRANSFERS.c.amount).label("amount"),
        (TRANSFERS.c.credit_balance_after if credit else TRANSFERS.c.debit_balance_after).label(
            "balance_after"
        ),
        TRANSFERS.c.description,
        TRANSFERS.c.reference_type,
        TRANSFERS.c.reference_id,
        TRANSFERS.c.created_at,
    ).where(column == account_id, *filters)


async def list_movements(
    session: AsyncSession,
    user_id: int,
    asset: str,
    params: PageParams,
    *,
    types: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[Movement], int]:
    """One page of the user's movements of `asset` and the total matching. `since` is
    inclusive, `until` exclusive. Read sessions are fine: a user who never moved anything has
    no account and an empty statement."""
    account_id = await find_user_account(session, user_id, asset)
    if account_id is None:
        return [], 0
    filters: list[Any] = []
    if types:
        filters.append(TRANSFERS.c.type.in_([str(kind) for kind in types]))
    if since is not None:
        filters.append(TRANSFERS.c.created_at >= since)
    if until is not None:
        filters.append(TRANSFERS.c.created_at < until)
    both = union_all(
        _side(account_id, credit=False, filters=filters),
        _side(account_id, credit=True, filters=filters),
    ).subquery()
    total = await session.scalar(select(func.count()).select_from(both))
    rows = await session.execute(
        select(both)
        # Snowflake ids grow with time: they order movements made within the same instant.
        .order_by(both.c.created_at.desc(), both.c.id.desc())
        .offset(params.offset)
        .limit(params.page_size)
    )
    items = [
        Movement(
            id=row.id,
            type=row.type,
            amount=int(row.amount),
            balance_after=int(row.balance_after),
            description=row.description,
            reference_type=row.reference_type,
            reference_id=row.reference_id,
            created_at=row.created_at,
        )
        for row in rows
    ]
    return items, int(total or 0)
