"""Yuntu balance, recharge, transactions and bills: /users/balance, /users/recharge,
/users/transactions, /users/bills."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from yuntu.identity.deps import CurrentUser, DbSession, IdempotentUser
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params
from yuntu.ledger import accounts, bills, recharge, statements
from yuntu.ledger.payments import PaymentProvider, provider_for
from yuntu.ledger.schemas import (
    BalanceOut,
    BillLineOut,
    BillOut,
    OrderOut,
    PaymentOut,
    RechargeIn,
    RechargeOut,
    TimeRangeQuery,
    TransactionOut,
    exact_yuan_fields,
)
from yuntu.models.ledger import Asset, BillStatus, TransferType

router = make_router(tags=["ledger"], responses=error_responses(401))
Pagination = Annotated[PageParams, Depends(page_params)]
OrderId = Annotated[Id, Path(description="Recharge order id")]


async def payment_provider(request: Request) -> PaymentProvider | None:
    """The configured provider, built once per app (its key derives from the secret key)."""
    state = request.app.state
    if not hasattr(state, "payment_provider"):
        state.payment_provider = provider_for(request.app.state.settings)
    provider: PaymentProvider | None = state.payment_provider
    return provider


Provider = Annotated[PaymentProvider | None, Depends(payment_provider)]


@router.get("/users/balance", summary="My CNY balance")
async def get_balance(auth: CurrentUser, session: DbSession) -> Envelope[BalanceOut]:
    """`balance` is what can be spent now; `held` is set aside for work in progress (a render
    task's estimate) until it is charged or released; `total` is both."""
    available, held = await accounts.balance_of(session, auth.user.id, Asset.CNY)
    return Envelope(
        data=BalanceOut(currency=Asset.CNY, balance=available, held=held, total=available + held)
    )


@router.post(
    "/users/recharge",
    status_code=201,
    summary="Start a recharge: create an order to pay",
    responses=error_responses(409, 503),
    dependencies=[exact_yuan_fields("amount")],
)
async def create_recharge(
    body: RechargeIn, auth: IdempotentUser, session: DbSession, request: Request, provider: Provider
) -> Envelope[RechargeOut]:
    """Creates a pending order for `amount` yuan (between `recharge_min_fen` and
    `recharge_max_fen`) and returns what the client needs to pay it. **The balance does not
    move here**: it is credited when the payment provider's signed confirmation arrives.
    With the development provider (`payment.simulated: true`, no money is taken) the client
    completes the payment by POSTing to `payment.checkout_url`.

    Send an `Idempotency-Key`: a retry returns the same order. 503 FEATURE_NOT_CONFIGURED when
    no payment provider is configured."""
    order, payment = await recharge.start(
        session,
        user_id=auth.user.id,
        amount_fen=body.amount,
        description=body.description,
        provider=provider,
        settings=request.app.state.settings,
        idempotency_key=auth.idempotency_key,
        base_url=str(request.base_url),
    )
    return Envelope(
        data=RechargeOut(order=OrderOut.model_validate(order), payment=PaymentOut(**payment))
    )


@router.get(
    "/users/recharge/{order_id}",
    summary="A recharge order's status",
    responses=error_responses(404),
)
async def get_recharge(
    order_id: OrderId, auth: CurrentUser, session: DbSession
) -> Envelope[OrderOut]:
    """Poll this after paying: `pending` until the provider's confirmation arrives, then
    `paid` (the balance is credited) or `failed`; `expired` if left unpaid. Another user's
    order answers 404."""
    order = await recharge.get_order(session, auth.user.id, order_id)
    return Envelope(data=OrderOut.model_validate(order))


@router.get("/users/transactions", summary="My balance movements")
async def list_transactions(
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    period: TimeRangeQuery,
    type: Annotated[
        list[TransferType] | None,
        Query(description="Only these types (repeat the parameter for several)"),
    ] = None,
) -> Envelope[Page[TransactionOut]]:
    """Newest first. `amount` is signed from your side: `"-12.50"` left your balance (spent,
    put on hold), `"100.00"` came in (recharge, release of a hold, refund). `balance_after` is
    your available balance right after the movement."""
    rows, total = await statements.list_movements(
        session,
        auth.user.id,
        Asset.CNY,
        pagination,
        types=type,
        since=period.since,
        until=period.until,
    )
    items = [
        TransactionOut(
            id=row.id,
            type=TransferType(row.type),
            amount=row.amount,
            balance_after=row.balance_after,
            description=row.description,
            reference_type=row.reference_type,
            reference_id=row.reference_id,
            created_at=row.created_at,
        )
        for row in rows
    ]
    return Envelope(data=Page[TransactionOut](**make_page(items, total, pagination)))


@router.get("/users/bills", summary="My consumption bills with their lines")
async def list_bills(
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[BillStatus | None, Query(description="Only open or closed bills")] = None,
) -> Envelope[Page[BillOut]]:
    """Newest first. One bill per render task (or other billed work); each line is one charge
    (frames rendered, a capture beyond the estimate) and `total` is the sum of the lines."""
    rows, total = await bills.list_bills(session, auth.user.id, Asset.CNY, pagination, status)
    items = [
        BillOut(
            id=bill.id,
            title=bill.title,
            reference_type=bill.reference_type,
            reference_id=bill.reference_id,
            status=BillStatus(bill.status),
            total=bill.total,
            currency=bill.asset,
            created_at=bill.created_at,
            closed_at=bill.closed_at,
            lines=[BillLineOut.model_validate(item) for item in lines],
        )
        for bill, lines in rows
    ]
    return Envelope(data=Page[BillOut](**make_page(items, total, pagination)))
