"""`yuntu ledger verify`: recompute every ledger invariant from the append-only transfers.

Each check is one aggregate query, so verifying a large book costs a few scans, not a loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from typing import cast as typed

from sqlalchemy import String, Table, and_, case, cast, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.models.ledger import (
    Bill,
    BillLine,
    HoldStatus,
    LedgerAccount,
    LedgerHold,
    LedgerTransfer,
    Order,
    OrderStatus,
    SystemAccount,
    TransferType,
)

A = typed(Table, LedgerAccount.__table__)
T = typed(Table, LedgerTransfer.__table__)
H = typed(Table, LedgerHold.__table__)
LIMIT = 20  # problems listed per check


@dataclass
class Report:
    accounts: int = 0
    transfers: int = 0
    holds: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: str, **facts: Any) -> None:
        self.problems.append({"check": check, **facts})

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accounts": self.accounts,
            "transfers": self.transfers,
            "holds": self.holds,
            "problems": self.problems,
        }


async def verify(session: AsyncSession) -> Report:
    report = Report()
    report.accounts = int(await session.scalar(select(func.count()).select_from(A)) or 0)
    report.transfers = int(await session.scalar(select(func.count()).select_from(T)) or 0)
    report.holds = int(await session.scalar(select(func.count()).select_from(H)) or 0)
    await _balances_are_sums(session, report)
    await _assets_balance(session, report)
    await _transfers_match_accounts(session, report)
    await _no_negative_user_balance(session, report)
    await _holds_consistent(session, report)
    await _reversals_bounded(session, report)
    await _orders_consistent(session, report)
    await _bills_consistent(session, report)
    return report


async def _balances_are_sums(session: AsyncSession, report: Report) -> None:
    movements = union_all(
        select(T.c.credit_account_id.label("account"), T.c.amount.label("delta")),
        select(T.c.debit_account_id.label("account"), (-T.c.amount).label("delta")),
    ).subquery()
    sums = (
        select(movements.c.account, func.sum(movements.c.delta).label("total"))
        .group_by(movements.c.account)
        .subquery()
    )
    total = func.coalesce(sums.c.total, 0)
    rows = await session.execute(
        select(A.c.id, A.c.balance, total)
        .select_from(A.outerjoin(sums, sums.c.account == A.c.id))
        .where(A.c.balance != total)
        .limit(LIMIT)
    )
    for account, balance, computed in rows:
        report.add("balance_equals_transfers", account=account, balance=balance, sum=computed)


async def _assets_balance(session: AsyncSession, report: Report) -> None:
    rows = await session.execute(
        select(A.c.asset, func.sum(A.c.balance))
        .group_by(A.c.asset)
        .having(func.sum(A.c.balance) != 0)
    )
    for asset, total in rows:
        report.add("asset_sums_to_zero", asset=asset, sum=total)


async def _transfers_match_accounts(session: AsyncSession, report: Report) -> None:
    debit = A.alias("debit")
    credit = A.alias("credit")
    rows = await session.execute(
        select(T.c.id, T.c.asset, debit.c.asset, credit.c.asset)
        .select_from(
            T.join(debit, debit.c.id == T.c.debit_account_id).join(
                credit, credit.c.id == T.c.credit_account_id
            )
        )
        .where(or_(debit.c.asset != T.c.asset, credit.c.asset != T.c.asset))
        .limit(LIMIT)
    )
    for transfer, asset, debit_asset, credit_asset in rows:
        report.add(
            "transfer_assets_match",
            transfer=transfer,
            asset=asset,
            debit_asset=debit_asset,
            credit_asset=credit_asset,
        )


async def _no_negative_user_balance(session: AsyncSession, report: Report) -> None:
    rows = await session.execute(
        select(A.c.id, A.c.balance)
        .where(or_(A.c.user_id.is_not(None), A.c.allow_negative.is_(False)), A.c.balance < 0)
        .limit(LIMIT)
    )
    for account, balance in rows:
        report.add("user_balance_not_negative", account=account, balance=balance)


def _sum_of(kind: TransferType) -> Any:
    return (
        select(func.coalesce(func.sum(T.c.amount), 0))
        .where(T.c.hold_id == H.c.id, T.c.type == kind.value)
        .scalar_subquery()
    )


async def _holds_consistent(session: AsyncSession, report: Report) -> None:
    placed, captured, released = (
        _sum_of(TransferType.HOLD),
        _sum_of(TransferType.CAPTURE),
        _sum_of(TransferType.RELEASE),
    )
    remaining = H.c.amount - H.c.captured - H.c.released
    bad = or_(
        placed != H.c.amount,
        captured != H.c.captured,
        released != H.c.released,
        and_(H.c.status == HoldStatus.PENDING, H.c.closed_at.is_not(None)),
        and_(H.c.status != HoldStatus.PENDING, remaining != 0),
        and_(H.c.status == HoldStatus.CAPTURED, H.c.released != 0),
    )
    rows = await session.execute(
        select(H.c.id, H.c.status, H.c.amount, H.c.captured, H.c.released, placed, captured)
        .where(bad)
        .limit(LIMIT)
    )
    for hold, status, amount, took, gave, placed_sum, captured_sum in rows:
        report.add(
            "hold_matches_transfers",
            hold=hold,
            status=status,
            amount=amount,
            captured=took,
            released=gave,
            placed_transfers=placed_sum,
            captured_transfers=captured_sum,
        )
    # The holds account of each asset holds exactly what open holds have left.
    open_left = (
        select(H.c.asset, func.sum(remaining).label("left"))
        .where(H.c.status == HoldStatus.PENDING)
        .group_by(H.c.asset)
        .subquery()
    )
    rows = await session.execute(
        select(A.c.asset, A.c.balance, func.coalesce(open_left.c.left, 0))
        .select_from(A.outerjoin(open_left, open_left.c.asset == A.c.asset))
        .where(A.c.code == SystemAccount.HOLDS.value)
        .where(A.c.balance != func.coalesce(open_left.c.left, 0))
    )
    for asset, balance, left in rows:
        report.add("holds_account_equals_open_holds", asset=asset, balance=balance, open=left)


async def _reversals_bounded(session: AsyncSession, report: Report) -> None:
    original = T.alias("original")
    rows = await session.execute(
        select(original.c.id, original.c.amount, func.sum(T.c.amount))
        .select_from(T.join(original, original.c.id == T.c.reverses_id))
        .group_by(original.c.id, original.c.amount)
        .having(func.sum(T.c.amount) > original.c.amount)
        .limit(LIMIT)
    )
    for transfer, amount, reversed_total in rows:
        report.add(
            "reversals_within_original", transfer=transfer, amount=amount, reversed=reversed_total
        )


async def _orders_consistent(session: AsyncSession, report: Report) -> None:
    """A paid (or refunded) order has exactly one credit for it; any other order has none; a
    refunded order's refunds plus its shortfall equal what was credited."""
    credited_type = case(
        (Order.kind == "recharge", literal(TransferType.RECHARGE.value)),
        else_=literal(TransferType.PURCHASE.value),
    )
    credits = (
        select(func.count())
        .where(
            T.c.reference_type == "order",
            T.c.reference_id == cast(Order.id, String(64)),
            T.c.type == credited_type,
        )
        .scalar_subquery()
    )
    credited = (
        select(func.coalesce(func.sum(T.c.amount), 0))
        .where(
            T.c.reference_type == "order",
            T.c.reference_id == cast(Order.id, String(64)),
            T.c.type == credited_type,
        )
        .scalar_subquery()
    )
    refunded = (
        select(func.coalesce(func.sum(T.c.amount), 0))
        .where(
            T.c.reference_type == "order",
            T.c.reference_id == cast(Order.id, String(64)),
            T.c.type == TransferType.REFUND.value,
        )
        .scalar_subquery()
    )
    paid_like = Order.status.in_([OrderStatus.PAID, OrderStatus.REFUNDED])
    bad = or_(
        and_(paid_like, or_(credits != 1, credited != Order.credit_amount)),
        and_(~paid_like, credits != 0),
        and_(Order.status == OrderStatus.REFUNDED, refunded + Order.refund_shortfall != credited),
        and_(Order.status != OrderStatus.REFUNDED, refunded != 0),
    )
    rows = await session.execute(
        select(Order.id, Order.status, Order.credit_amount, credits, credited, refunded)
        .where(bad)
        .limit(LIMIT)
    )
    for order, status, amount, count, total, back in rows:
        report.add(
            "order_matches_transfers",
            order=order,
            status=status,
            credit_amount=amount,
            credit_transfers=count,
            credited=total,
            refunded=back,
        )


async def _bills_consistent(session: AsyncSession, report: Report) -> None:
    """A bill's total is the sum of its lines; a line backed by a transfer has its amount."""
    lines_total = (
        select(func.coalesce(func.sum(BillLine.amount), 0))
        .where(BillLine.bill_id == Bill.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Bill.id, Bill.total, lines_total).where(Bill.total != lines_total).limit(LIMIT)
    )
    for bill, total, computed in rows:
        report.add("bill_total_equals_lines", bill=bill, total=total, lines=computed)
    rows = await session.execute(
        select(BillLine.id, BillLine.amount, T.c.amount)
        .select_from(BillLine.__table__.join(T, T.c.id == BillLine.transfer_id))
        .where(BillLine.amount != T.c.amount)
        .limit(LIMIT)
    )
    for line, amount, moved in rows:
        report.add("bill_line_equals_transfer", line=line, amount=amount, transfer_amount=moved)
