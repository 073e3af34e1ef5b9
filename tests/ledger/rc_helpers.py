"""RevenueCat webhook test helpers: the documented sample payloads (revenuecat_samples.json,
copied verbatim from RevenueCat's docs) turned into deliveries to our webhook.

The samples share event ids (and most share one transaction id): every helper that sends one
as a distinct event gives it a fresh `id` and, where asked, fresh transaction ids."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from tests.conftest import API
from yuntu.ledger.revenuecat import sign
from yuntu.models.identity import User
from yuntu.models.ledger import Order, Subscription, WebhookEvent

WEBHOOK = f"{API}/subscription/webhook"
AUTH = "Bearer rc-hook-0123456789abcdef"
SECRET = "whsec-test-0123456789abcdef"
SAMPLES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "revenuecat_samples.json").read_text()
)["events"]
WEEK_MS = 7 * 24 * 3600 * 1000


async def device_user(client: httpx.AsyncClient, name: str = "alice") -> tuple[str, dict[str, str]]:
    """A PicKitchen user (device login): their id and bearer headers."""
    response = await client.post(f"{API}/auth/login", json={"device_id": f"device-{name}-0001"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data["user"]["id"], {"Authorization": f"Bearer {data['access_token']}"}


def rc_settings(**extra: Any) -> dict[str, Any]:
    """Settings with the webhook's Authorization value configured."""
    return {"revenuecat_webhook_auth": AUTH, **extra}


def sample(name: str) -> dict[str, Any]:
    """A copy of one sample's payload ({"api_version", "event"})."""
    for entry in SAMPLES:
        if entry["name"] == name:
            return copy.deepcopy(entry["payload"])
    raise KeyError(name)


def first_of(kind: str) -> dict[str, Any]:
    for entry in SAMPLES:
        if entry["payload"]["event"]["type"] == kind:
            return copy.deepcopy(entry["payload"])
    # TEST and TEMPORARY_ENTITLEMENT_GRANT have no documented sample; RevenueCat says TEST uses
    # a purchase-like payload.
    payload = sample("sample-events_1")
    payload["event"]["type"] = kind
    return payload


def now_ms() -> int:
    return int(time.time() * 1000)


def for_user(payload: dict[str, Any], user_id: str) -> dict[str, Any]:
    """Address the event to our user (the app logs RevenueCat in with our user id)."""
    event = payload["event"]
    if event["type"] == "TRANSFER":
        event["transferred_to"] = [user_id]
        return payload
    event["app_user_id"] = user_id
    event["aliases"] = [user_id, *event.get("aliases", [])]
    return payload


def event(
    kind: str,
    user_id: str,
    *,
    event_id: str | None = None,
    when: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A fresh event of `kind` (from the first documented sample of that type) for our user, at
    `when` (ms, default now), with a new id and `fields` overriding the sample's."""
    payload = for_user(first_of(kind), user_id)
    event = payload["event"]
    event["id"] = event_id or str(uuid.uuid4())
    event["event_timestamp_ms"] = when if when is not None else now_ms()
    event.update(fields)
    return payload


def purchase(
    kind: str,
    user_id: str,
    *,
    product: str = "pk.weekly",
    original: str = "orig-1",
    transaction: str | None = None,
    start: int | None = None,
    end: int | None = None,
    when: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A subscription lifecycle event with its period (default: this week)."""
    start = start if start is not None else now_ms() - 60_000
    return event(
        kind,
        user_id,
        when=when,
        product_id=product,
        original_transaction_id=original,
        transaction_id=transaction or f"{original}-{uuid.uuid4().hex[:8]}",
        purchased_at_ms=start,
        expiration_at_ms=end if end is not None else start + WEEK_MS,
        environment="PRODUCTION",
        cancel_reason=fields.pop("cancel_reason", None),
        price=fields.pop("price", 4.99),
        **fields,
    )


async def post(
    client: httpx.AsyncClient,
    payload: dict[str, Any] | bytes,
    *,
    auth: str | None = AUTH,
    secret: str | None = None,
    stamp: int | None = None,
    signature: str | None = None,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    if signature is not None:
        headers["X-RevenueCat-Webhook-Signature"] = signature
    elif secret is not None:
        headers["X-RevenueCat-Webhook-Signature"] = sign(
            secret, body, stamp if stamp is not None else int(time.time())
        )
    return await client.post(WEBHOOK, content=body, headers=headers)


async def deliver(client: httpx.AsyncClient, payload: dict[str, Any], **kwargs: Any) -> str:
    """Send and expect 200; returns the recorded outcome."""
    response = await post(client, payload, **kwargs)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return str(data["outcome"])


async def recorded(app: Any) -> list[WebhookEvent]:
    async with app.state.db.read_sessionmaker() as session:
        return list(
            (await session.scalars(select(WebhookEvent).order_by(WebhookEvent.received_at))).all()
        )


async def subscriptions_of(app: Any, user_id: str) -> list[Subscription]:
    async with app.state.db.read_sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(Subscription)
                    .where(Subscription.user_id == int(user_id))
                    .order_by(Subscription.rc_key)
                )
            ).all()
        )


async def orders_of(app: Any, user_id: str) -> list[Order]:
    async with app.state.db.read_sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(Order).where(Order.user_id == int(user_id)).order_by(Order.created_at)
                )
            ).all()
        )


async def vip_row(app: Any, user_id: str) -> tuple[bool, str | None, Any]:
    async with app.state.db.read_sessionmaker() as session:
        row = (
            await session.execute(
                select(User.is_vip, User.vip_type, User.vip_expire_time).where(
                    User.id == int(user_id)
                )
            )
        ).one()
        return bool(row[0]), row[1], row[2]
