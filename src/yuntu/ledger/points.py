"""PicKitchen points: balance, statement, and points-pack orders paid through RevenueCat.

A pack order is created by the app before it starts the store purchase (POST /order/create);
the points move only when RevenueCat's NON_RENEWING_PURCHASE webhook arrives (`credit_purchase`),
which pays the user's oldest open order for that product, or a new one when the app never
created it. The store's transaction id is unique among RevenueCat orders, so one purchase
reported by several events is credited once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import PageParams, paginate
from yuntu.ledger import orders, statements
from yuntu.ledger.accounts import balance_of
from yuntu.ledger.catalogue import find_product, minor_units
from yuntu.ledger.statements import Movement
from yuntu.models.identity import User
from yuntu.models.ledger import Asset, Order, OrderKind, OrderStatus
from yuntu.settings import PointsProduct, Settings

PROVIDER = "revenuecat"
# Orders a late store confirmation may still pay, oldest first; pending ones before the others.
_PAYABLE = (OrderStatus.PENDING, OrderStatus.EXPIRED, OrderStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Balance:
    balance: int  # available
    held: int  # reserved by running generations
    total: int


async def balance(session: AsyncSession, user_id: int) -> Balance:
    available, held = await balance_of(session, user_id, Asset.POINTS)
    return Balance(balance=available, held=held, total=available + held)


async def transactions(
    session: AsyncSession, user_id: int, type: str | None, params: PageParams
) -> tuple[list[Movement], int]:
    """The user's points movements, newest first, signed from the user's side."""
    return await statements.list_movements(
        session, user_id, Asset.POINTS, params, types=[type] if type else None
    )


def _product(settings: Settings, product_id: str) -> PointsProduct:
    product = find_product(settings, product_id)
    if product is None:
        raise AppError(
            E.NOT_FOUND,
            message=f"unknown points pack: {product_id}",
            details={"product_id": product_id},
        )
    return product


def _description(product: PointsProduct) -> str:
    return product.title or f"{product.points} points"


async def create_order(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: int,
    product_id: str,
    idempotency_key: str | None,
) -> tuple[Order, PointsProduct]:
    """A pending pack order the app then buys through RevenueCat."""
    product = _product(settings, product_id)
    earlier = await orders.replay_by_key(
        session,
        user_id,
        idempotency_key,
        lambda order: (order.kind, order.product_id) == (OrderKind.POINTS_PACK, product_id),
    )
    if earlier is not None:
        return earlier, product
    order = await _new_order(
        session,
        user_id,
        product,
        idempotency_key=idempotency_key,
        expires_in=timedelta(minutes=settings.order_expiry_minutes),
    )
    return order, product


async def _new_order(
    session: AsyncSession,
    user_id: int,
    product: PointsProduct,
    *,
    idempotency_key: str | None = None,
    expires_in: timedelta | None = None,
) -> Order:
    """A pending order for one pack at its catalogue price."""
    return await orders.create(
        session,
        user_id=user_id,
        kind=OrderKind.POINTS_PACK,
        amount=minor_units(product.price),
        currency=product.currency,
        credit_asset=Asset.POINTS,
        credit_amount=product.points,
        provider=PROVIDER,
        product_id=product.product_id,
        description=_description(product),
        idempotency_key=idempotency_key,
        expires_in=expires_in,
    )


def _pack_order(user_id: int) -> Any:
    return select(Order).where(Order.user_id == user_id, Order.kind == OrderKind.POINTS_PACK)


async def get_order(session: AsyncSession, user_id: int, order_id: int) -> Order:
    """The caller's pack order; anyone else's (or a recharge) answers 404 like a missing one."""
    order = await session.scalar(_pack_order(user_id).where(Order.id == order_id))
    if order is None:
        raise AppError(E.NOT_FOUND)
    return order


async def list_orders(
    session: AsyncSession, user_id: int, status: str | None, params: PageParams
) -> tuple[list[Order], int]:
    query = _pack_order(user_id).order_by(Order.created_at.desc(), Order.id.desc())
    if status is not None:
        query = query.where(Order.status == status)
    return await paginate(session, query, params)


async def _by_transaction(session: AsyncSession, transaction_id: str) -> Order | None:
    return await session.scalar(
        select(Order)
        .where(Order.provider == PROVIDER, Order.transaction_id == transaction_id)
        .execution_options(populate_existing=True)
    )


async def _open_order(session: AsyncSession, user_id: int, product_id: str) -> Order | None:
    """The oldest order the purchase can pay (pending ones first)."""
    return await session.scalar(
        _pack_order(user_id)
        .where(
            Order.product_id == product_id,
            Order.status.in_(_PAYABLE),
            Order.transaction_id.is_(None),
        )
        .order_by(
            case((Order.status == OrderStatus.PENDING, 0), else_=1),
            Order.created_at,
            Order.id,
        )
        .limit(1)
        .with_for_update()
    )


async def credit_purchase(
    session: AsyncSession,
    *,
    user_id: int,
    product: PointsProduct,
    transaction_id: str,
    channel: str | None,
    environment: str | None,
    paid_at: datetime | None,
) -> tuple[str, str]:
    """Pay a pack bought in the store. Returns (outcome, detail): `credited`, or
    `duplicate_transaction` when this store transaction was already credited."""
    # One purchase at a time per user (PostgreSQL; SQLite has a single writer): a concurrent
    # event of the same transaction then finds it paid, and the oldest open order is the one
    # paid, whatever the timing.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    existing = await _by_transaction(session, transaction_id)
    if existing is not None:
        return "duplicate_transaction", f"order {existing.order_no} already paid by it"
    try:
        async with session.begin_nested():
            order = await _pay(
                session,
                user_id=user_id,
                product=product,
                transaction_id=transaction_id,
                channel=channel,
                environment=environment,
                paid_at=paid_at,
            )
    except IntegrityError:
        # The same store transaction paid meanwhile for another user (the unique index).
        winner = await _by_transaction(session, transaction_id)
        if winner is None:
            raise
        return "duplicate_transaction", f"order {winner.order_no} already paid by it"
    return "credited", f"order {order.order_no} paid: +{order.credit_amount} points"


async def _pay(
    session: AsyncSession,
    *,
    user_id: int,
    product: PointsProduct,
    transaction_id: str,
    channel: str | None,
    environment: str | None,
    paid_at: datetime | None,
) -> Order:
    for attempt in range(2):
        order = await _open_order(session, user_id, product.product_id) if attempt == 0 else None
        if order is None:
            order = await _new_order(session, user_id, product)
        await orders.mark_paid(
            session,
            order,
            transaction_id=transaction_id,
            channel=channel,
            environment=environment,
            paid_at=paid_at,
        )
        if order.transaction_id == transaction_id:
            return order
        # Another purchase paid the order we picked in the meantime: ours gets its own.
    raise AssertionError("a new order was paid by another transaction")


async def refund_purchase(
    session: AsyncSession, *, transaction_id: str | None
) -> tuple[str, str] | None:
    """The store refunded a pack: take its points back as far as the user still has them (the
    rest is recorded as the order's shortfall; a balance never goes negative). None when no
    pack order carries this transaction."""
    order = await _by_transaction(session, transaction_id) if transaction_id else None
    if order is None or order.kind != OrderKind.POINTS_PACK:
        return None
    if order.status == OrderStatus.REFUNDED:
        return "duplicate_transaction", f"order {order.order_no} already refunded"
    back, shortfall = await orders.refund(session, order, description="refunded by the store")
    return (
        "refunded",
        f"order {order.order_no}: took back {back.amount if back else 0} points, "
        f"shortfall {shortfall}",
    )
