"""PicKitchen subscriptions: /subscription/status and the RevenueCat webhook."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request

from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope
from yuntu.ledger import revenuecat, subscriptions
from yuntu.ledger.points_schemas import (
    WEBHOOK_BODY,
    SubscriptionOut,
    SubscriptionStatusOut,
    WebhookAckOut,
)

router = make_router(tags=["subscription"], responses=error_responses(401))


@router.get("/subscription/status", summary="My VIP status and subscriptions")
async def subscription_status(
    auth: CurrentUser, session: DbSession
) -> Envelope[SubscriptionStatusOut]:
    """`is_vip` is true while one of your subscriptions gives benefits: not expired and its
    period not ended (a cancelled one keeps them until `current_period_end`; lifetime has no
    end, so `vip_expire_time` is null). It turns false as soon as `vip_expire_time` passes,
    even before the store's expiration notice arrives. `subscriptions` lists yours, most
    recently changed first."""
    status = await subscriptions.status_of(session, auth.user.id)
    return Envelope(
        data=SubscriptionStatusOut(
            is_vip=status.is_vip,
            vip_type=status.vip_type,
            vip_expire_time=status.vip_expire_time,
            subscriptions=[SubscriptionOut.model_validate(item) for item in status.subscriptions],
        )
    )


@router.post(
    "/subscription/webhook",
    summary="RevenueCat webhook",
    responses=error_responses(400, 401),
    openapi_extra=WEBHOOK_BODY,
)
async def revenuecat_webhook(
    request: Request,
    session: DbSession,
    authorization: Annotated[
        str | None,
        Header(description="Must equal the value configured in RevenueCat's dashboard"),
    ] = None,
    signature: Annotated[
        str | None,
        Header(
            alias=revenuecat.SIGNATURE_HEADER,
            description="t=<unix>,v1=<hex HMAC-SHA256>; required when a webhook secret is set",
        ),
    ] = None,
) -> Envelope[WebhookAckOut]:
    """Called by RevenueCat, not by apps. 401 SIGNATURE_INVALID when the `Authorization`
    header (or, with a secret configured, the signature) does not match; nothing is recorded.
    400 for a body that is not JSON or lacks `event.id` / `event.type`.

    Every event is recorded once by `event.id`; a repeat answers 200 with `duplicate: true` and
    does nothing. Events for a user we do not know answer 200 (`outcome: unknown_user`), as do
    event types we do not act on (`ignored`). Subscription events update the subscription and
    the user's VIP state; NON_RENEWING_PURCHASE of a points pack pays the user's order and
    credits the points; a refund takes back what was granted."""
    ack = await revenuecat.receive(
        session,
        request.app.state.settings,
        body=await request.body(),
        authorization=authorization,
        signature=signature,
    )
    return Envelope(
        data=WebhookAckOut(event_id=ack.event_id, outcome=ack.outcome, duplicate=ack.duplicate)
    )
