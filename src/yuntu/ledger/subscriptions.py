"""RevenueCat subscriptions: the state table, applying webhook events, and the user's VIP fields.

A subscription is identified by `rc_key`: the store's original transaction id (stable across
renewals and product changes), else `{app_user_id}:{product_id}`. Each event moves it by
EVENT_TARGET and TRANSITIONS; an event older than the newest one applied (`last_event_ms`)
changes nothing (RevenueCat promises no order), an event for a subscription we never saw creates
it in the state the event implies. After every change the user's `is_vip`, `vip_type` and
`vip_expire_time` are recomputed from all their subscriptions in the same transaction.

Benefits last while a subscription is not expired and its period has not ended: a cancelled or
paused subscription keeps them until `current_period_end`; a lifetime one has no end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import insert_ignoring_conflicts, utcnow
from yuntu.kit.ids import new_id
from yuntu.ledger import rewards
from yuntu.ledger.accounts import system_account
from yuntu.ledger.catalogue import PlanType, plan_type
from yuntu.ledger.transfers import TRANSFERS, find, reverse
from yuntu.models.identity import User
from yuntu.models.ledger import Asset, Subscription, SubscriptionStatus, SystemAccount, TransferType
from yuntu.settings import Settings

if TYPE_CHECKING:
    from yuntu.ledger.revenuecat import RcEvent

SUBSCRIPTIONS = cast(Table, Subscription.__table__)
S = SubscriptionStatus
TRANSITIONS: dict[SubscriptionStatus, frozenset[SubscriptionStatus]] = {
    # Renewal keeps it active; the user cancels auto-renew, Play pauses it, or it lapses.
    S.ACTIVE: frozenset({S.ACTIVE, S.CANCELLED, S.PAUSED, S.EXPIRED}),
    # Uncancel or re-subscribe; a period that ends without renewal expires.
    S.CANCELLED: frozenset({S.ACTIVE, S.CANCELLED, S.EXPIRED}),
    S.PAUSED: frozenset({S.ACTIVE, S.CANCELLED, S.PAUSED, S.EXPIRED}),
    # Only a new purchase (re-subscribe, renewal after a lapse, uncancel) brings it back.
    S.EXPIRED: frozenset({S.ACTIVE, S.EXPIRED}),
}
# The status an event moves a subscription to; None keeps the current one (a subscription first
# seen through such an event starts active).
EVENT_TARGET: dict[str, SubscriptionStatus | None] = {
    "INITIAL_PURCHASE": S.ACTIVE,
    "RENEWAL": S.ACTIVE,
    "UNCANCELLATION": S.ACTIVE,
    "NON_RENEWING_PURCHASE": S.ACTIVE,  # a lifetime plan
    "CANCELLATION": S.CANCELLED,
    "SUBSCRIPTION_PAUSED": S.PAUSED,
    "EXPIRATION": S.EXPIRED,
    # A product change may take effect only at the next renewal, which then says so.
    "PRODUCT_CHANGE": None,
    "BILLING_ISSUE": None,  # not expired: the store retries (grace period)
    "SUBSCRIPTION_EXTENDED": None,  # the period end moves; the status stays
}
PURCHASES = frozenset({"INITIAL_PURCHASE", "RENEWAL", "UNCANCELLATION", "NON_RENEWING_PURCHASE"})


def can_move(source: str, target: str) -> bool:
    return SubscriptionStatus(target) in TRANSITIONS[SubscriptionStatus(source)]


def is_live(sub: Subscription, now: datetime) -> bool:
    """Whether the subscription gives benefits at `now`."""
    if sub.status == S.EXPIRED:
        return False
    if sub.current_period_end is None:
        return sub.plan_type == PlanType.LIFETIME
    return sub.current_period_end > now


@dataclass(slots=True)
class Applied:
    outcome: str  # applied, stale, no_change, refunded
    detail: str
    subscription_id: int


async def _locked(
    session: AsyncSession, settings: Settings, user_id: int, event: RcEvent
) -> tuple[Subscription, bool]:
    """The event's subscription, row-locked (PostgreSQL); created if new (True)."""
    key = event.rc_key
    now = utcnow()
    inserted = await session.scalar(
        insert_ignoring_conflicts(session.bind.dialect.name, SUBSCRIPTIONS)
        .values(
            id=new_id(),
            user_id=user_id,
            rc_key=key,
            rc_subscriber_id=(event.subscriber_id or str(user_id))[:128],
            product_id=(event.product_id or "unknown")[:128],
            plan_type=plan_type(settings, event.product_id),
            status=S.EXPIRED,  # a placeholder: the event sets the real state below
            will_renew=False,
            environment=event.environment,
            last_event_ms=0,
            created_at=now,
            updated_at=now,
        )
        .returning(SUBSCRIPTIONS.c.id)
    )
    sub = await session.scalar(
        select(Subscription)
        .where(Subscription.rc_key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert sub is not None
    return sub, inserted is not None


def _update(
    sub: Subscription,
    settings: Settings,
    event: RcEvent,
    target: SubscriptionStatus,
    created: bool,
) -> None:
    moment = event.event_time or utcnow()
    # A product change takes effect at the next renewal, which names the new product.
    if event.product_id and (event.type != "PRODUCT_CHANGE" or created):
        sub.product_id = event.product_id[:128]
        sub.plan_type = plan_type(settings, event.product_id)
    if event.subscriber_id:
        sub.rc_subscriber_id = event.subscriber_id[:128]
    sub.environment = event.environment
    sub.store = event.store or sub.store
    if event.entitlement_ids is not None:
        sub.entitlement_ids = event.entitlement_ids
    if event.purchased_at is not None:
        sub.current_period_start = event.purchased_at
    end = event.expiration_at
    if event.type == "BILLING_ISSUE" and event.grace_until is not None:
        end = max(end, event.grace_until) if end else event.grace_until
    if end is not None or event.type == "NON_RENEWING_PURCHASE":
        sub.current_period_end = end
    if event.transaction_id:
        sub.last_transaction_id = event.transaction_id[:128]
    if event.type in PURCHASES:
        sub.will_renew = event.type != "NON_RENEWING_PURCHASE"
        sub.cancelled_at = None
        sub.billing_issue_at = None
        sub.expired_at = None
    elif target == S.CANCELLED:
        sub.will_renew = False
        sub.cancelled_at = moment
    elif target == S.PAUSED:
        sub.will_renew = False
    elif target == S.EXPIRED:
        sub.will_renew = False
        sub.expired_at = moment
    if event.type == "BILLING_ISSUE":
        sub.billing_issue_at = moment
    if created and target == S.ACTIVE and event.type not in PURCHASES:
        sub.will_renew = True
    sub.status = target
    sub.last_event_ms = event.event_ms


async def apply_event(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: int,
    event: RcEvent,
    now: datetime | None = None,
) -> Applied:
    """Apply one lifecycle event of `user_id`'s subscription (refunds: see `refund`)."""
    now = now or utcnow()
    sub, created = await _locked(session, settings, user_id, event)
    source = None if created else SubscriptionStatus(sub.status)
    previous_owner = sub.user_id
    notes: list[str] = []
    if not created and event.event_ms < sub.last_event_ms:
        outcome = "stale"
        notes.append(f"older than the last event applied ({sub.last_event_ms})")
    else:
        target = EVENT_TARGET[event.type] or source or S.ACTIVE
        if source is not None and not can_move(source, target):
            outcome = "no_change"
            notes.append(f"{source} does not move to {target} on {event.type}")
        else:
            _update(sub, settings, event, target, created)
            sub.user_id = user_id
            outcome = "applied"
            notes.append(f"{source or 'new'} -> {target}")
            if event.type == "PRODUCT_CHANGE" and event.new_product_id:
                notes.append(f"product change to {event.new_product_id} pending")
    await session.flush()
    reactivated = event.type == "INITIAL_PURCHASE" or (
        outcome == "applied" and event.type in PURCHASES and source in (None, S.EXPIRED)
    )
    if reactivated:
        paid = await _reward_now(session, settings, sub, now)
        if paid:
            notes.append(paid)
    await sync_vip(session, sub.user_id, now)
    if previous_owner != sub.user_id:
        notes.append(f"moved from user {previous_owner}")
        await sync_vip(session, previous_owner, now)
    return Applied(outcome, "; ".join(notes), sub.id)


async def _reward_now(
    session: AsyncSession, settings: Settings, sub: Subscription, now: datetime
) -> str | None:
    """A new (or renewed after a lapse) subscriber of a rewarded plan gets this week's points at
    once; keyed by user and week, so the Monday run never pays the week again."""
    if not settings.weekly_reward_enabled or sub.plan_type not in settings.weekly_reward_plans:
        return None
    if not is_live(sub, now):
        return None  # a purchase whose period already ended (a very late delivery)
    week = rewards.iso_week(now)
    paid = await rewards.grant(
        session,
        user_id=sub.user_id,
        week=week,
        points=settings.weekly_reward_points,
        subscription_id=sub.id,
    )
    return f"reward {week} +{paid.amount}" if paid.created else f"reward {week} already paid"


async def refund(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: int,
    event: RcEvent,
    now: datetime | None = None,
) -> Applied:
    """A refunded subscription purchase: expire the subscription now and take back the rewards
    paid for it since the refunded purchase (what the user still has; the rest is gone)."""
    now = now or utcnow()
    sub, created = await _locked(session, settings, user_id, event)
    notes: list[str] = []
    if not created and event.event_ms < sub.last_event_ms:
        notes.append("refund older than the last event applied: state kept")
    else:
        _update(sub, settings, event, S.EXPIRED, created)
        sub.expired_at = now
        sub.cancelled_at = event.event_time or now
        notes.append("expired by refund")
    await session.flush()
    taken, granted = await _reverse_rewards(session, sub, since=event.purchased_at)
    if granted:
        notes.append(f"rewards taken back {taken} of {granted} points")
    await sync_vip(session, sub.user_id, now)
    return Applied("refunded", "; ".join(notes), sub.id)


async def _reverse_rewards(
    session: AsyncSession, sub: Subscription, since: datetime | None
) -> tuple[int, int]:
    query = select(TRANSFERS.c.id, TRANSFERS.c.amount).where(
        TRANSFERS.c.type == TransferType.REWARD.value,
        TRANSFERS.c.reference_type == "subscription",
        TRANSFERS.c.reference_id == str(sub.id),
        TRANSFERS.c.reverses_id.is_(None),
    )
    if since is not None:
        query = query.where(TRANSFERS.c.created_at >= since)
    granted_rows = (await session.execute(query.order_by(TRANSFERS.c.created_at))).all()
    refunds = await system_account(session, SystemAccount.REFUNDS, Asset.POINTS)
    taken = granted = 0
    for transfer_id, amount in granted_rows:
        granted += int(amount)
        key = f"reward:{transfer_id}:refund"
        done = await find(session, key)
        if done is None:
            done = await reverse(
                session,
                transfer_id,
                key=key,
                type=TransferType.REFUND,
                description="subscription refunded",
                partial_ok=True,
                to=refunds,
            )
        taken += done.amount if done else 0
    return taken, granted


async def transfer(
    session: AsyncSession,
    *,
    to_user_id: int,
    to_subscriber_id: str,
    from_user_ids: set[int],
    from_subscriber_ids: list[str],
    now: datetime | None = None,
) -> int:
    """RevenueCat moved purchases between app users: the source users' subscriptions (and any
    recorded under a source RevenueCat id) now belong to the destination. Points already paid
    stay where they are."""
    now = now or utcnow()
    conditions: list[Any] = []
    if from_user_ids:
        conditions.append(Subscription.user_id.in_(from_user_ids))
    if from_subscriber_ids:
        conditions.append(Subscription.rc_subscriber_id.in_(from_subscriber_ids))
    if not conditions:
        return 0
    moving = (
        await session.scalars(
            select(Subscription)
            .where(or_(*conditions), Subscription.user_id != to_user_id)
            .order_by(Subscription.id)
            .with_for_update()
        )
    ).all()
    owners = {sub.user_id for sub in moving}
    for sub in moving:
        sub.user_id = to_user_id
        sub.rc_subscriber_id = to_subscriber_id[:128]
    await session.flush()
    for owner in sorted(owners | {to_user_id}):
        await sync_vip(session, owner, now)
    return len(moving)


async def sync_vip(session: AsyncSession, user_id: int, now: datetime | None = None) -> None:
    """Recompute the user's VIP fields from their subscriptions. The user's row is locked
    first, so two events of the same user computing at once cannot overwrite each other with a
    view that misses the other's change (PostgreSQL: the read after the lock sees it)."""
    now = now or utcnow()
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    subs = (
        await session.scalars(
            select(Subscription).where(
                Subscription.user_id == user_id, Subscription.status != S.EXPIRED
            )
        )
    ).all()
    live = [sub for sub in subs if is_live(sub, now)]
    values: dict[str, Any] = {"is_vip": False, "vip_type": None, "vip_expire_time": None}
    if live:
        lifetime = [sub for sub in live if sub.current_period_end is None]
        best = lifetime[0] if lifetime else max(live, key=_period_end)
        values = {
            "is_vip": True,
            "vip_type": best.plan_type,
            "vip_expire_time": best.current_period_end,
        }
    await session.execute(update(User).where(User.id == user_id).values(**values))


def _period_end(sub: Subscription) -> datetime:
    assert sub.current_period_end is not None
    return sub.current_period_end


@dataclass(slots=True)
class Status:
    is_vip: bool
    vip_type: str | None
    vip_expire_time: datetime | None
    subscriptions: list[dict[str, Any]]


async def status_of(session: AsyncSession, user_id: int, limit: int = 50) -> Status:
    """The user's VIP state (read fresh: the authenticated user may be a cached copy) and their
    subscriptions, newest first. VIP ends when its time passes, even before EXPIRATION arrives."""
    now = utcnow()
    row = (
        await session.execute(
            select(User.is_vip, User.vip_type, User.vip_expire_time).where(User.id == user_id)
        )
    ).one()
    is_vip = bool(row.is_vip) and (row.vip_expire_time is None or row.vip_expire_time > now)
    subs = (
        await session.scalars(
            select(Subscription)
            .where(Subscription.user_id == user_id)
            .order_by(Subscription.updated_at.desc(), Subscription.id.desc())
            .limit(limit)
        )
    ).all()
    items = [
        {
            **{column: getattr(sub, column) for column in _OUT_COLUMNS},
            "is_active": is_live(sub, now),
        }
        for sub in subs
    ]
    return Status(
        is_vip=is_vip,
        vip_type=row.vip_type if is_vip else None,
        vip_expire_time=row.vip_expire_time if is_vip else None,
        subscriptions=items,
    )


_OUT_COLUMNS = (
    "id",
    "product_id",
    "plan_type",
    "status",
    "will_renew",
    "store",
    "environment",
    "entitlement_ids",
    "current_period_start",
    "current_period_end",
    "cancelled_at",
    "billing_issue_at",
    "expired_at",
)
