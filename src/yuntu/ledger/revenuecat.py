"""The RevenueCat webhook: authenticate, parse, record once, find the user, dispatch.

Contract (RevenueCat docs, integrations/webhooks): a POST of `{"api_version": "1.0", "event":
{...}}`; only HTTP 200 counts as delivered, anything else is retried up to 5 times with the same
`event.id`; delivery is at least once and in no particular order.

- Authentication: the `Authorization` header must equal `revenuecat_webhook_auth` (compared
  whole, in constant time; unset answers 401 to everything). With `revenuecat_webhook_secret`
  set, `X-RevenueCat-Webhook-Signature: t=<unix>,v1=<hex>` must also be
  HMAC-SHA256(secret, f"{t}.".encode() + raw body) with `t` within the tolerance. A failure
  answers 401 SIGNATURE_INVALID and records nothing.
- Each `event.id` is recorded once in `revenuecat_events` (unique index) in the same transaction
  as its effects: a repeat, even a concurrent one, answers 200 and does nothing.
- The user: `app_user_id`, then `original_app_user_id`, then `aliases` (a TRANSFER names the
  destination in `transferred_to`). Our app sets RevenueCat's appUserID to our user id, so a
  decimal id of an existing user matches first; otherwise an id recorded as a subscription's
  RevenueCat subscriber. An unknown user answers 200 with outcome `unknown_user` and changes
  nothing (RevenueCat would only retry the same event).
- A processing error rolls everything back (the event is not recorded) and answers non-200, so
  RevenueCat delivers it again later.

Outcomes recorded: applied, stale, no_change (subscriptions), credited, refunded,
duplicate_transaction, refund_unmatched, unknown_product (packs), transferred, test, ignored,
unknown_user."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import insert_ignoring_conflicts, utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import MAX_ID, new_id
from yuntu.ledger import points, subscriptions
from yuntu.ledger.catalogue import PlanType, find_product, plan_type
from yuntu.models.identity import User
from yuntu.models.ledger import Subscription, WebhookEvent
from yuntu.settings import PointsProduct, Settings

EVENTS = cast(Table, WebhookEvent.__table__)
SIGNATURE_HEADER = "X-RevenueCat-Webhook-Signature"
LIFECYCLE = frozenset(subscriptions.EVENT_TARGET) - {"NON_RENEWING_PURCHASE"}
HANDLED = LIFECYCLE | {"NON_RENEWING_PURCHASE", "TRANSFER", "TEST"}
REFUND_REASONS = frozenset({"CUSTOMER_SUPPORT"})


def _text(value: Any, limit: int = 255) -> str | None:
    if isinstance(value, str) and value:
        return value[:limit]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [text for text in (_text(item) for item in value) if text]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _time(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RcEvent:
    """The fields of one webhook event we use; anything malformed reads as absent."""

    id: str
    type: str
    data: dict[str, Any]

    def text(self, key: str, limit: int = 255) -> str | None:
        return _text(self.data.get(key), limit)

    def time(self, key: str) -> datetime | None:
        return _time(_int(self.data.get(key)))

    @property
    def app_user_id(self) -> str | None:
        return self.text("app_user_id")

    @property
    def subscriber_id(self) -> str | None:
        """The RevenueCat app user id the subscription is recorded under."""
        return self.app_user_id or self.text("original_app_user_id")

    @property
    def user_ids(self) -> list[str]:
        """Every id that may name our user, in order of preference."""
        if self.type == "TRANSFER":
            return _texts(self.data.get("transferred_to"))
        ids = [self.app_user_id, self.text("original_app_user_id")]
        ids.extend(_texts(self.data.get("aliases")))
        return list(dict.fromkeys(item for item in ids if item))

    @property
    def product_id(self) -> str | None:
        return self.text("product_id", 128)

    @property
    def new_product_id(self) -> str | None:
        return self.text("new_product_id", 128)

    @property
    def transaction_id(self) -> str | None:
        return self.text("transaction_id", 128)

    @property
    def environment(self) -> str:
        return (self.text("environment", 16) or "UNKNOWN").upper()

    @property
    def store(self) -> str | None:
        return self.text("store", 32)

    @property
    def entitlement_ids(self) -> list[str] | None:
        value = self.data.get("entitlement_ids")
        if isinstance(value, list):
            return _texts(value)
        single = self.text("entitlement_id")
        return [single] if single else None

    @property
    def event_ms(self) -> int:
        # Missing: treated as newest (RevenueCat always sends it).
        return _int(self.data.get("event_timestamp_ms")) or int(time.time() * 1000)

    @property
    def event_time(self) -> datetime | None:
        return self.time("event_timestamp_ms")

    @property
    def purchased_at(self) -> datetime | None:
        return self.time("purchased_at_ms")

    @property
    def expiration_at(self) -> datetime | None:
        return self.time("expiration_at_ms")

    @property
    def grace_until(self) -> datetime | None:
        return self.time("grace_period_expiration_at_ms")

    @property
    def is_refund(self) -> bool:
        """RevenueCat reports a refund as a CANCELLATION by customer support or at a negative
        price."""
        if self.type != "CANCELLATION":
            return False
        price = self.data.get("price")
        negative = isinstance(price, int | float) and not isinstance(price, bool) and price < 0
        return negative or self.data.get("cancel_reason") in REFUND_REASONS

    @property
    def rc_key(self) -> str:
        original = self.text("original_transaction_id", 255)
        if original:
            return original
        return f"{self.subscriber_id or ''}:{self.product_id or ''}"[:255]


@dataclass(frozen=True, slots=True)
class Ack:
    event_id: str
    outcome: str
    duplicate: bool


def authenticate(
    settings: Settings,
    *,
    body: bytes,
    authorization: str | None,
    signature: str | None,
    now: float | None = None,
) -> None:
    expected = settings.revenuecat_webhook_auth
    if expected is None or not expected.get_secret_value():
        raise AppError(E.SIGNATURE_INVALID)
    if not hmac.compare_digest(
        expected.get_secret_value().encode(), (authorization or "").encode()
    ):
        raise AppError(E.SIGNATURE_INVALID)
    secret = settings.revenuecat_webhook_secret
    if secret is not None and secret.get_secret_value():
        moment = time.time() if now is None else now
        if not signature_ok(
            secret.get_secret_value(),
            signature,
            body,
            moment,
            settings.revenuecat_signature_tolerance_seconds,
        ):
            raise AppError(E.SIGNATURE_INVALID)


def signature_ok(secret: str, header: str | None, body: bytes, now: float, tolerance: int) -> bool:
    if not header:
        return False
    stamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            stamp = value
        elif name == "v1":
            candidates.append(value.strip().lower())
    if stamp is None or not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(digest.encode(), item.encode()) for item in candidates)


def sign(secret: str, body: bytes, stamp: int) -> str:
    """The signature header RevenueCat sends for `body` at unix time `stamp`."""
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (PostgreSQL's json type refuses them).
    raise ValueError(f"{name} is not JSON")


def parse(body: bytes) -> tuple[RcEvent, dict[str, Any]]:
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise AppError(E.MALFORMED_JSON) from None
    event = payload.get("event") if isinstance(payload, dict) else None
    if not isinstance(event, dict):
        raise AppError(E.BAD_REQUEST, details=[{"field": "event", "message": "object required"}])
    problems = [
        {"field": f"event.{name}", "message": "non-empty string of at most 128 characters"}
        for name in ("id", "type")
        if not isinstance(event.get(name), str) or not 0 < len(event[name]) <= 128
    ]
    if problems:
        raise AppError(E.BAD_REQUEST, details=problems)
    return RcEvent(id=event["id"], type=event["type"].upper(), data=event), payload


async def receive(
    session: AsyncSession,
    settings: Settings,
    *,
    body: bytes,
    authorization: str | None,
    signature: str | None,
) -> Ack:
    """Handle one delivery: authenticate, then record and apply the event once."""
    authenticate(settings, body=body, authorization=authorization, signature=signature)
    event, payload = parse(body)
    record_id = await session.scalar(
        insert_ignoring_conflicts(session.bind.dialect.name, EVENTS)
        .values(
            id=new_id(),
            event_id=event.id,
            type=event.type[:48],
            app_user_id=event.app_user_id,
            environment=event.environment,
            event_ms=_int(event.data.get("event_timestamp_ms")),
            outcome="processing",
            payload=payload,
            received_at=utcnow(),
        )
        .returning(EVENTS.c.id)
    )
    if record_id is None:
        first = await session.scalar(select(EVENTS.c.outcome).where(EVENTS.c.event_id == event.id))
        return Ack(event_id=event.id, outcome=str(first or "duplicate"), duplicate=True)
    user_id, outcome, detail = await _dispatch(session, settings, event)
    await session.execute(
        update(EVENTS)
        .where(EVENTS.c.id == record_id)
        .values(outcome=outcome, detail=(detail or None) and detail[:500], user_id=user_id)
    )
    return Ack(event_id=event.id, outcome=outcome, duplicate=False)


def _decimal_ids(ids: Iterable[str]) -> list[int]:
    found = []
    for item in ids:
        if item.isascii() and item.isdigit() and str(int(item)) == item and 0 < int(item) <= MAX_ID:
            found.append(int(item))
    return found


async def resolve_users(session: AsyncSession, ids: list[str]) -> list[int]:
    """Our users named by these RevenueCat ids, best match first: a decimal id of an existing
    user, then a RevenueCat id recorded on one of our subscriptions."""
    if not ids:
        return []
    matches: list[int] = []
    numeric = _decimal_ids(ids)
    if numeric:
        existing = set(await session.scalars(select(User.id).where(User.id.in_(numeric))))
        matches.extend(item for item in numeric if item in existing)
    rows = (
        await session.execute(
            select(Subscription.rc_subscriber_id, Subscription.user_id)
            .where(Subscription.rc_subscriber_id.in_(ids))
            .order_by(Subscription.updated_at.desc())
        )
    ).all()
    by_subscriber: dict[str, int] = {}
    for subscriber, user_id in rows:
        by_subscriber.setdefault(subscriber, user_id)
    matches.extend(by_subscriber[item] for item in ids if item in by_subscriber)
    return list(dict.fromkeys(matches))


async def _dispatch(
    session: AsyncSession, settings: Settings, event: RcEvent
) -> tuple[int | None, str, str | None]:
    """Returns (user id, outcome, detail)."""
    users = await resolve_users(session, event.user_ids)
    user_id = users[0] if users else None
    if event.type not in HANDLED:
        return user_id, "ignored", f"{event.type} is not acted on"
    if event.type == "TEST":
        return user_id, "test", None
    if event.environment == "SANDBOX" and not settings.effective_revenuecat_accept_sandbox:
        # Sandbox purchases cost nothing: honouring them in production would sell points free.
        return user_id, "sandbox_ignored", "SANDBOX events are not acted on here"
    if user_id is None:
        return None, "unknown_user", f"no user for {', '.join(event.user_ids)[:400] or 'no id'}"
    if event.type == "TRANSFER":
        return user_id, *await _transfer(session, user_id, event)
    product = find_product(settings, event.product_id)
    if product is not None:
        return user_id, *await _pack(session, user_id, product, event)
    lifetime = plan_type(settings, event.product_id) == PlanType.LIFETIME
    if event.type == "NON_RENEWING_PURCHASE" and not lifetime:
        return user_id, "unknown_product", f"{event.product_id} is not a points pack"
    if event.is_refund:
        result = await subscriptions.refund(session, settings, user_id=user_id, event=event)
    else:
        result = await subscriptions.apply_event(session, settings, user_id=user_id, event=event)
    return user_id, result.outcome, f"subscription {result.subscription_id}: {result.detail}"


async def _pack(
    session: AsyncSession, user_id: int, product: PointsProduct, event: RcEvent
) -> tuple[str, str]:
    if event.type == "NON_RENEWING_PURCHASE":
        return await points.credit_purchase(
            session,
            user_id=user_id,
            product=product,
            # Stores always give one; without it the event itself is the purchase.
            transaction_id=event.transaction_id or f"event:{event.id}"[:128],
            channel=event.store,
            environment=event.environment,
            paid_at=event.purchased_at,
        )
    if event.is_refund:
        refunded = await points.refund_purchase(session, transaction_id=event.transaction_id)
        if refunded is None:
            return "refund_unmatched", f"no paid order for transaction {event.transaction_id}"
        return refunded
    return "ignored", f"{event.type} of points pack {product.product_id}"


async def _transfer(session: AsyncSession, user_id: int, event: RcEvent) -> tuple[str, str]:
    sources = _texts(event.data.get("transferred_from"))
    source_users = set(await resolve_users(session, sources)) - {user_id}
    destination = event.user_ids[0] if event.user_ids else str(user_id)
    moved = await subscriptions.transfer(
        session,
        to_user_id=user_id,
        to_subscriber_id=destination,
        from_user_ids=source_users,
        from_subscriber_ids=sources,
    )
    return "transferred", f"{moved} subscription(s) moved to user {user_id}"
