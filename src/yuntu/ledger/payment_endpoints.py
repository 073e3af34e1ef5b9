"""The development payment provider's simulated checkout and its signed callback.

Both exist only while `payment_provider` is `dev_simulated` (development); otherwise they answer
404 like any unknown route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.errors import AppError, E
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope
from yuntu.ledger import recharge
from yuntu.ledger.payments import DEV_SIMULATED, SIGNATURE_HEADER, PaymentProvider
from yuntu.ledger.schemas import NoticeOut, OrderOut, SimulatedCheckoutIn
from yuntu.ledger.user_endpoints import Provider
from yuntu.models.ledger import OrderStatus

router = make_router(tags=["payments"], responses=error_responses(401))
OrderNo = Annotated[
    str, Path(max_length=40, pattern=r"^[A-Z]{2}[0-9]{1,19}$", examples=["RC7262149437321216"])
]


async def simulated_provider(provider: Provider) -> PaymentProvider:
    # Declared before authentication: without the development provider these routes answer
    # exactly like routes that do not exist, whoever asks.
    if provider is None or provider.name != DEV_SIMULATED:
        raise AppError(E.ROUTE_NOT_FOUND)
    return provider


Simulated = Annotated[PaymentProvider, Depends(simulated_provider)]


@router.post(
    f"/payments/{DEV_SIMULATED}/checkout/{{order_no}}",
    summary="Development only: pay (or fail) a recharge order without money",
    responses=error_responses(404, 409),
)
async def simulated_checkout(
    order_no: OrderNo,
    provider: Simulated,
    auth: CurrentUser,
    session: DbSession,
    body: SimulatedCheckoutIn | None = None,
) -> Envelope[OrderOut]:
    """**A stand-in for a payment gateway, for development.** No money is taken. The order's
    owner chooses the outcome; the simulated gateway signs a notice about it and delivers it
    through the same verification as `POST /payments/dev_simulated/notify`, so the balance moves
    only through a verified notice. Paying twice credits once. Another user's order answers
    404; so does this route when the provider is not `dev_simulated`."""
    outcome = body.outcome if body is not None else "paid"
    order = await recharge.simulate_checkout(
        session, provider, user_id=auth.user.id, order_no=order_no, outcome=outcome
    )
    return Envelope(data=OrderOut.model_validate(order))


@router.post(
    f"/payments/{DEV_SIMULATED}/notify",
    summary="Development provider's payment callback (signed)",
    responses=error_responses(404, 409),
    openapi_extra={
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256(key, '<t>.' + raw body)>",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": [
                            "order_no",
                            "transaction_id",
                            "amount_fen",
                            "currency",
                            "outcome",
                        ],
                        "properties": {
                            "order_no": {"type": "string"},
                            "transaction_id": {"type": "string"},
                            "amount_fen": {"type": "integer", "minimum": 0},
                            "currency": {"type": "string"},
                            "outcome": {"type": "string", "enum": ["paid", "failed"]},
                        },
                    }
                }
            },
        },
    },
)
async def simulated_notify(
    provider: Simulated, request: Request, session: DbSession
) -> Envelope[NoticeOut]:
    """Public, but only a correctly signed notice (within 300 s of its timestamp) is read:
    anything else answers 401 SIGNATURE_INVALID and changes nothing. The notice's amount and
    currency must equal the order's (409 PAYMENT_MISMATCH otherwise). `paid` credits the
    balance once, even when the order had expired or failed meanwhile; a repeated notice
    answers 200 with the same result."""
    raw = await request.body()
    order = await recharge.handle_notice(session, provider, request.headers, raw)
    return Envelope(data=NoticeOut(order_no=order.order_no, status=OrderStatus(order.status)))
