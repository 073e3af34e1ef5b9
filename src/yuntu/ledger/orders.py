"""Orders: a recharge of the CNY balance or a points pack, paid through a provider.

The balance moves only in `mark_paid`, called when the provider's verified confirmation arrives
(a signed callback, a RevenueCat webhook), never on the client's word. An order is credited at
most once (its credit transfer's key is derived from the order id), and a late confirmation of
an order that already expired, failed or was cancelled is still honoured: the money was taken.

TRANSITIONS is the table of allowed order states."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.ledger.accounts import system_account, user_account
from yuntu.ledger.transfers import Reference, Transfer, find, reverse, transfer
from yuntu.models.ledger import Order, OrderKind, OrderStatus, SystemAccount, TransferType

ORDERS = cast(Table, Order.__table__)
S = OrderStatus
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.PAID, S.FAILED, S.CANCELLED, S.EXPIRED}),
    # A provider that confirms after we gave up: the buyer paid, so the order is paid.
    S.FAILED: frozenset({S.PAID}),
    S.CANCELLED: frozenset({S.PAID}),
    S.EXPIRED: frozenset({S.PAID}),
    S.PAID: frozenset({S.REFUNDED}),
    S.REFUNDED: frozenset(),
}


def can_move(source: str, target: str) -> bool:
    return OrderStatus(target) in TRANSITIONS[OrderStatus(source)]


def reference(order: Order) -> Reference:
    return Reference("order", order.id)


def paid_key(order: Order) -> str:
    return f"order:{order.id}:paid"


async def create(
    session: AsyncSession,
    *,
    user_id: int,
    kind: OrderKind,
    amount: int,
    currency: str,
    credit_asset: str,
    credit_amount: int,
    provider: str,
    product_id: str | None = None,
    quantity: int = 1,
    description: str | None = None,
    idempotency_key: str | None = None,
    expires_in: timedelta | None = None,
) -> Order:
    order_id = new_id()
    order = Order(
        id=order_id,
        order_no=f"{'RC' if kind == OrderKind.RECHARGE else 'PK'}{order_id}",
        user_id=user_id,
        kind=kind,
        product_id=product_id,
        quantity=quantity,
        amount=amount,
        currency=currency,
        credit_asset=credit_asset,
        credit_amount=credit_amount,
        status=OrderStatus.PENDING,
        provider=provider,
        description=description,
        idempotency_key=idempotency_key,
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    session.add(order)
    await session.flush()
    return order


async def replay_by_key(
    session: AsyncSession, user_id: int, key: str | None, same: Callable[[Order], bool]
) -> Order | None:
    """The user's order created with client key `key`, when `same` says it was this request;
    409 when the key made a different order. The request record normally replays first; after
    its retention has passed the order still holds the key."""
    if key is None:
        return None
    earlier = await session.scalar(
        select(Order).where(Order.user_id == user_id, Order.idempotency_key == key)
    )
    if earlier is not None and not same(earlier):
        raise AppError(E.IDEMPOTENCY_KEY_REUSED, details={"idempotency_key": key})
    return earlier


async def get_for_user(session: AsyncSession, user_id: int, order_id: int) -> Order:
    """Another user's order answers 404, exactly like a missing one."""
    order = await session.scalar(
        select(Order).where(Order.id == order_id, Order.user_id == user_id)
    )
    if order is None:
        raise AppError(E.NOT_FOUND)
    return order


async def get_by_no(session: AsyncSession, order_no: str) -> Order | None:
    return await session.scalar(
        select(Order).where(Order.order_no == order_no).execution_options(populate_existing=True)
    )


async def _move(session: AsyncSession, order: Order, target: OrderStatus, **values: object) -> bool:
    """Conditional status change; False when the order is no longer in the state we read."""
    if not can_move(order.status, target):
        raise AppError(E.ORDER_NOT_PAYABLE, details={"status": order.status, "to": target})
    changed = await session.scalar(
        update(ORDERS)
        .where(ORDERS.c.id == order.id, ORDERS.c.status == order.status)
        .values(status=target, updated_at=utcnow(), **values)
        .returning(ORDERS.c.id)
    )
    await session.refresh(order)
    return changed is not None


async def mark_paid(
    session: AsyncSession,
    order: Order,
    *,
    transaction_id: str | None,
    channel: str | None = None,
    environment: str | None = None,
    paid_at: datetime | None = None,
) -> Transfer:
    """Credit the order's points or money once. A repeat confirmation returns the first
    transfer; a refunded order is not credited again."""
    if order.status in (OrderStatus.PAID, OrderStatus.REFUNDED):
        existing = await find(session, paid_key(order))
        assert existing is not None, f"paid order {order.id} has no credit transfer"
        return existing
    moved = await _move(
        session,
        order,
        OrderStatus.PAID,
        transaction_id=transaction_id,
        payment_channel=channel,
        environment=environment,
        paid_at=paid_at or utcnow(),
    )
    if not moved:  # changed under us (a concurrent confirmation): decide again
        return await mark_paid(
            session,
            order,
            transaction_id=transaction_id,
            channel=channel,
            environment=environment,
            paid_at=paid_at,
        )
    clearing = await system_account(session, SystemAccount.PAYMENT_CLEARING, order.credit_asset)
    account = await user_account(session, order.user_id, order.credit_asset)
    return await transfer(
        session,
        key=paid_key(order),
        asset=order.credit_asset,
        debit=clearing,
        credit=account,
        amount=order.credit_amount,
        type=TransferType.RECHARGE if order.kind == OrderKind.RECHARGE else TransferType.PURCHASE,
        reference=reference(order),
        description=order.description,
        system_last=False,
    )


async def fail(session: AsyncSession, order: Order, status: OrderStatus) -> bool:
    """Pending -> failed, cancelled or expired; False if it was not pending any more."""
    if order.status != OrderStatus.PENDING:
        return False
    return await _move(session, order, status)


async def refund(
    session: AsyncSession, order: Order, *, description: str | None = None
) -> tuple[Transfer | None, int]:
    """Take back what the order credited, as far as the user still has it. Returns the refund
    transfer (None if nothing was left) and the shortfall recorded on the order."""
    if order.status == OrderStatus.REFUNDED:
        return await find(session, f"order:{order.id}:refund"), order.refund_shortfall
    if order.status != OrderStatus.PAID:
        raise AppError(E.ORDER_NOT_PAYABLE, details={"status": order.status, "to": "refunded"})
    credit = await find(session, paid_key(order))
    assert credit is not None
    refunds = await system_account(session, SystemAccount.REFUNDS, order.credit_asset)
    back = await reverse(
        session,
        credit.id,
        key=f"order:{order.id}:refund",
        type=TransferType.REFUND,
        description=description or "refund",
        partial_ok=True,
        to=refunds,
    )
    shortfall = order.credit_amount - (back.amount if back else 0)
    if not await _move(
        session, order, OrderStatus.REFUNDED, refunded_at=utcnow(), refund_shortfall=shortfall
    ):
        raise AppError(E.IDEMPOTENCY_IN_FLIGHT)
    return back, shortfall


async def expire_stale(session: AsyncSession, now: datetime, limit: int = 500) -> int:
    result = await session.execute(
        update(ORDERS)
        .where(
            ORDERS.c.id.in_(
                select(ORDERS.c.id)
                .where(ORDERS.c.status == OrderStatus.PENDING, ORDERS.c.expires_at <= now)
                .limit(limit)
                .scalar_subquery()
            ),
            ORDERS.c.status == OrderStatus.PENDING,
        )
        .values(status=OrderStatus.EXPIRED, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
