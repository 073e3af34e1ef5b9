"""Recharging the CNY balance: create an order, let a PaymentProvider take the money, credit the
balance when the provider's verified notice arrives.

Creating the order moves nothing. `handle_notice` is the only path to the credit, for the real
callback and for the simulated gateway alike: verify the signature on the raw bytes, match the
notice to the order (amount and currency must agree), then `orders.mark_paid` (credits once, so
a repeated notice changes nothing) or `orders.fail`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.errors import AppError, E
from yuntu.ledger import orders
from yuntu.ledger.money import fen_to_str
from yuntu.ledger.payments import DevSimulatedProvider, PaymentNotice, PaymentProvider
from yuntu.models.ledger import Asset, Order, OrderKind, OrderStatus
from yuntu.settings import Settings

AMOUNT_FIELD = "body.amount"


def require_provider(provider: PaymentProvider | None) -> PaymentProvider:
    if provider is None:
        raise AppError(
            E.FEATURE_NOT_CONFIGURED, details={"feature": "recharge", "setting": "payment_provider"}
        )
    return provider


def _amount_error(message: str) -> AppError:
    return AppError(E.VALIDATION_ERROR, details=[{"field": AMOUNT_FIELD, "message": message}])


async def start(
    session: AsyncSession,
    *,
    user_id: int,
    amount_fen: int,
    description: str | None,
    provider: PaymentProvider | None,
    settings: Settings,
    idempotency_key: str | None,
    base_url: str,
) -> tuple[Order, dict[str, Any]]:
    """A pending recharge order and what the client needs to pay it (503 without a
    provider). Moves no money."""
    active = require_provider(provider)
    order = await create_order(
        session,
        user_id=user_id,
        amount_fen=amount_fen,
        description=description,
        provider=active,
        settings=settings,
        idempotency_key=idempotency_key,
    )
    return order, active.checkout(order, base_url)


async def create_order(
    session: AsyncSession,
    *,
    user_id: int,
    amount_fen: int,
    description: str | None,
    provider: PaymentProvider,
    settings: Settings,
    idempotency_key: str | None,
) -> Order:
    """A pending recharge order of `amount_fen` (within the configured bounds, else 422)."""
    if amount_fen < settings.recharge_min_fen:
        raise _amount_error(f"must be at least {fen_to_str(settings.recharge_min_fen)}")
    if amount_fen > settings.recharge_max_fen:
        raise _amount_error(f"must be at most {fen_to_str(settings.recharge_max_fen)}")
    earlier = await orders.replay_by_key(
        session,
        user_id,
        idempotency_key,
        lambda order: (
            (order.kind, order.amount, order.description)
            == (OrderKind.RECHARGE, amount_fen, description)
        ),
    )
    if earlier is not None:
        return earlier
    return await orders.create(
        session,
        user_id=user_id,
        kind=OrderKind.RECHARGE,
        amount=amount_fen,
        currency=Asset.CNY,
        credit_asset=Asset.CNY,
        credit_amount=amount_fen,
        provider=provider.name,
        description=description,
        idempotency_key=idempotency_key,
        expires_in=timedelta(minutes=settings.order_expiry_minutes),
    )


async def get_order(session: AsyncSession, user_id: int, order_id: int) -> Order:
    """The caller's recharge order; anyone else's (or a points order) answers 404."""
    order = await orders.get_for_user(session, user_id, order_id)
    if order.kind != OrderKind.RECHARGE:
        raise AppError(E.NOT_FOUND)
    return order


async def handle_notice(
    session: AsyncSession,
    provider: PaymentProvider,
    headers: Mapping[str, str],
    raw_body: bytes,
) -> Order:
    """Apply a provider's callback. Nothing is read or written before the signature checks
    out (401). Unknown order 404; amount or currency unlike the order's 409 PAYMENT_MISMATCH.
    A paid notice credits once, even for an order that already expired, failed or was
    cancelled (the buyer's money was taken); a failed notice fails a pending order only."""
    notice = provider.verify_notice(headers, raw_body)
    order = await orders.get_by_no(session, notice.order_no)
    if order is None or order.provider != provider.name or order.kind != OrderKind.RECHARGE:
        raise AppError(E.NOT_FOUND)
    if (notice.amount_fen, notice.currency) != (order.amount, order.currency):
        raise AppError(
            E.PAYMENT_MISMATCH,
            details={
                "order_no": order.order_no,
                "order_amount": fen_to_str(order.amount),
                "order_currency": order.currency,
                "notice_amount": fen_to_str(notice.amount_fen),
                "notice_currency": notice.currency,
            },
        )
    if notice.outcome == "paid":
        await orders.mark_paid(
            session,
            order,
            transaction_id=notice.transaction_id,
            channel=provider.name,
            environment="simulated" if provider.simulated else "production",
        )
    else:
        await orders.fail(session, order, OrderStatus.FAILED)
    await session.refresh(order)
    return order


def simulated_transaction_id(order: Order) -> str:
    # One per order: the simulated gateway "takes the money" at most once per order.
    return f"SIM{order.id}"


async def simulate_checkout(
    session: AsyncSession,
    provider: PaymentProvider,
    *,
    user_id: int,
    order_no: str,
    outcome: str,
) -> Order:
    """The development gateway: the order's owner says how the payment went; the gateway signs
    a notice about it and hands the raw bytes to `handle_notice`, as its callback would."""
    if not isinstance(provider, DevSimulatedProvider):
        raise AppError(E.ROUTE_NOT_FOUND)
    order = await orders.get_by_no(session, order_no)
    if order is None or order.user_id != user_id or order.provider != provider.name:
        raise AppError(E.NOT_FOUND)
    headers, body = provider.build_notice(
        PaymentNotice(
            order_no=order.order_no,
            transaction_id=simulated_transaction_id(order),
            amount_fen=order.amount,
            currency=order.currency,
            outcome="paid" if outcome == "paid" else "failed",
        )
    )
    return await handle_notice(session, provider, headers, body)
