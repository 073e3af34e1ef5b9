"""PicKitchen points and points-pack orders: /points/balance, /points/transactions, /order/*."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from yuntu.identity.deps import CurrentUser, DbSession, IdempotentUser
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params
from yuntu.ledger import points
from yuntu.ledger.points_schemas import (
    OrderCreateIn,
    PackOrderCreatedOut,
    PackOrderOut,
    PointsBalanceOut,
    PointsTransactionOut,
    PurchaseOut,
)
from yuntu.models.ledger import OrderStatus, TransferType

router = make_router(tags=["points"], responses=error_responses(401))
Pagination = Annotated[PageParams, Depends(page_params)]


@router.get("/points/balance", summary="My points")
async def get_points_balance(auth: CurrentUser, session: DbSession) -> Envelope[PointsBalanceOut]:
    """`balance` can be spent now; `held` is reserved by generations in progress until they are
    charged or released; `total` is both."""
    result = await points.balance(session, auth.user.id)
    return Envelope(
        data=PointsBalanceOut(balance=result.balance, held=result.held, total=result.total)
    )


@router.get("/points/transactions", summary="My points movements")
async def list_points_transactions(
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    type: Annotated[TransferType | None, Query(description="Only movements of this type")] = None,
) -> Envelope[Page[PointsTransactionOut]]:
    """Newest first. `amount` is signed from your side (a purchase or reward is positive, a
    spend or refund negative); `balance_after` is the available points right after it."""
    items, total = await points.transactions(session, auth.user.id, type, pagination)
    out = [PointsTransactionOut.model_validate(item) for item in items]
    return Envelope(data=Page[PointsTransactionOut](**make_page(out, total, pagination)))


@router.post(
    "/order/create",
    status_code=201,
    summary="Start buying a points pack",
    responses=error_responses(404, 409),
)
async def create_pack_order(
    body: OrderCreateIn, auth: IdempotentUser, session: DbSession, request: Request
) -> Envelope[PackOrderCreatedOut]:
    """Creates a pending order for a pack of the catalogue (`points_products`; an unknown
    `product_id` answers 404) and returns what the app needs to buy it through RevenueCat: the
    store product id and the `app_user_id` the SDK must be logged in as (your user id).
    **No points move here**: they are credited when RevenueCat's NON_RENEWING_PURCHASE webhook
    for that purchase arrives, which marks this order paid. An unpaid order expires after
    `order_expiry_minutes` (a late purchase still pays it).

    Send an `Idempotency-Key`: a retry returns the same order."""
    order, product = await points.create_order(
        session,
        request.app.state.settings,
        user_id=auth.user.id,
        product_id=body.product_id,
        idempotency_key=auth.idempotency_key,
    )
    return Envelope(
        data=PackOrderCreatedOut(
            order=PackOrderOut.model_validate(order),
            purchase=PurchaseOut(
                store_product_id=product.product_id,
                app_user_id=str(auth.user.id),
                title=product.title,
            ),
        )
    )


@router.get("/order/list", summary="My points-pack orders")
async def list_pack_orders(
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this state")] = None,
) -> Envelope[Page[PackOrderOut]]:
    """Newest first."""
    rows, total = await points.list_orders(session, auth.user.id, status, pagination)
    items = [PackOrderOut.model_validate(row) for row in rows]
    return Envelope(data=Page[PackOrderOut](**make_page(items, total, pagination)))


@router.get(
    "/order/{order_id}", summary="One of my points-pack orders", responses=error_responses(404)
)
async def get_pack_order(
    order_id: Annotated[Id, Path(description="Order id")], auth: CurrentUser, session: DbSession
) -> Envelope[PackOrderOut]:
    """Another user's order answers 404, exactly like a missing one."""
    order = await points.get_order(session, auth.user.id, order_id)
    return Envelope(data=PackOrderOut.model_validate(order))
