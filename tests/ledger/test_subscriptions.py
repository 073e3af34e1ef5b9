"""Subscriptions driven by RevenueCat events over HTTP: the state table, the lifecycle with VIP
and the weekly reward paid at purchase, events out of order, transfers between users, refunds,
pause and billing issues, lifetime plans, VIP ending when its time passes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import API
from tests.ledger.rc_helpers import (
    WEEK_MS,
    deliver,
    device_user,
    event,
    now_ms,
    purchase,
    rc_settings,
    subscriptions_of,
    vip_row,
)
from yuntu.ledger import accounts, catalogue, rewards, subscriptions, transfers
from yuntu.models.ledger import Asset, SubscriptionStatus, SystemAccount, TransferType
from yuntu.settings import Settings

pytestmark = pytest.mark.anyio
S = SubscriptionStatus


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return getattr(request, "param", rc_settings())


def test_state_table_every_pair() -> None:
    allowed = {
        (S.ACTIVE, S.ACTIVE),
        (S.ACTIVE, S.CANCELLED),
        (S.ACTIVE, S.PAUSED),
        (S.ACTIVE, S.EXPIRED),
        (S.CANCELLED, S.ACTIVE),
        (S.CANCELLED, S.CANCELLED),
        (S.CANCELLED, S.EXPIRED),
        (S.PAUSED, S.ACTIVE),
        (S.PAUSED, S.CANCELLED),
        (S.PAUSED, S.PAUSED),
        (S.PAUSED, S.EXPIRED),
        (S.EXPIRED, S.ACTIVE),
        (S.EXPIRED, S.EXPIRED),
    }
    for source in S:
        for target in S:
            assert subscriptions.can_move(source, target) is ((source, target) in allowed)
    assert set(subscriptions.EVENT_TARGET) == {
        "INITIAL_PURCHASE",
        "RENEWAL",
        "UNCANCELLATION",
        "NON_RENEWING_PURCHASE",
        "CANCELLATION",
        "SUBSCRIPTION_PAUSED",
        "EXPIRATION",
        "PRODUCT_CHANGE",
        "BILLING_ISSUE",
        "SUBSCRIPTION_EXTENDED",
    }


def test_plan_types() -> None:
    settings = Settings(_env_file=None, subscription_plans={"vip_7d": "weekly"})  # type: ignore[call-arg]
    cases = {
        "vip_7d": "weekly",
        "vip_7d:base-plan": "weekly",  # Google Play's subscription:base_plan
        "com.subscription.weekly": "weekly",
        "pk_monthly_999": "monthly",
        "com.app.annual": "yearly",
        "pro.yearly": "yearly",
        "pk.lifetime": "lifetime",
        "biweekly_plan": "other",  # whole words only
        "premium": "other",
        None: "other",
    }
    for product, expected in cases.items():
        assert catalogue.plan_type(settings, product) == expected, product


async def _status(client: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"{API}/subscription/status", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _points(client: Any, headers: dict[str, str]) -> int:
    response = await client.get(f"{API}/points/balance", headers=headers)
    return int(response.json()["data"]["balance"])


async def test_lifecycle_active_cancelled_uncancelled_expired_resubscribed(client, app):
    uid, headers = await device_user(client)
    start = now_ms() - 60_000
    end = start + WEEK_MS
    week = rewards.iso_week(datetime.now(UTC))

    assert await deliver(client, purchase("INITIAL_PURCHASE", uid, start=start, end=end)) == (
        "applied"
    )
    status = await _status(client, headers)
    assert (status["is_vip"], status["vip_type"]) == (True, "weekly")
    (sub,) = status["subscriptions"]
    assert sub["status"] == "active" and sub["will_renew"] and sub["is_active"]
    assert sub["environment"] == "PRODUCTION" and sub["store"] == "APP_STORE"
    assert status["vip_expire_time"] == sub["current_period_end"]
    assert await _points(client, headers) == 2000  # this week's reward, paid at once
    statement = (await client.get(f"{API}/points/transactions", headers=headers)).json()["data"]
    (reward,) = statement["items"]
    assert (reward["type"], reward["amount"], reward["balance_after"]) == ("reward", 2000, 2000)
    assert reward["description"] == f"weekly subscriber reward {week}"
    assert reward["reference_type"] == "subscription" and reward["reference_id"] == sub["id"]

    # Cancel auto-renew: benefits stay until the period ends.
    await deliver(client, purchase("CANCELLATION", uid, start=start, end=end))
    status = await _status(client, headers)
    assert status["is_vip"] is True
    assert status["subscriptions"][0]["status"] == "cancelled"
    assert status["subscriptions"][0]["will_renew"] is False
    assert status["subscriptions"][0]["cancelled_at"] is not None

    await deliver(client, purchase("UNCANCELLATION", uid, start=start, end=end))
    (sub,) = (await _status(client, headers))["subscriptions"]
    assert (sub["status"], sub["will_renew"], sub["cancelled_at"]) == ("active", True, None)

    await deliver(client, purchase("EXPIRATION", uid, start=start, end=now_ms() - 1000))
    status = await _status(client, headers)
    assert (status["is_vip"], status["vip_type"], status["vip_expire_time"]) == (False, None, None)
    assert status["subscriptions"][0]["status"] == "expired"
    assert status["subscriptions"][0]["is_active"] is False

    # Re-subscribe (a renewal after the lapse): active again; the week's reward is not paid twice.
    again = purchase("RENEWAL", uid, start=now_ms(), end=now_ms() + WEEK_MS)
    assert await deliver(client, again) == "applied"
    status = await _status(client, headers)
    assert status["is_vip"] is True and status["subscriptions"][0]["status"] == "active"
    assert await _points(client, headers) == 2000
    (row,) = await subscriptions_of(app, uid)
    assert await vip_row(app, uid) == (True, "weekly", row.current_period_end)


async def test_events_out_of_order(client, app):
    uid, headers = await device_user(client)
    t = now_ms() - 10_000
    start = t - 60_000
    # Newest first: expiration, cancellation, renewal, initial purchase.
    sent = [
        ("EXPIRATION", t + 4, "applied"),
        ("CANCELLATION", t + 3, "stale"),
        ("RENEWAL", t + 2, "stale"),
        ("INITIAL_PURCHASE", t + 1, "stale"),
    ]
    for kind, when, outcome in sent:
        payload = purchase(kind, uid, original="o-late", start=start, end=t, when=when)
        assert await deliver(client, payload) == outcome, kind
    (sub,) = await subscriptions_of(app, uid)
    assert (sub.status, sub.last_event_ms) == ("expired", t + 4)
    assert await vip_row(app, uid) == (False, None, None)
    assert await _points(client, headers) == 0  # the purchase's period had ended

    # A cancellation processed before its purchase: the subscription starts cancelled (benefits
    # until the period ends) and the late purchase, though stale, still pays this week's reward.
    end = now_ms() + WEEK_MS
    cancel = purchase("CANCELLATION", uid, original="o-new", start=t, end=end, when=t + 20)
    assert await deliver(client, cancel) == "applied"
    first = purchase("INITIAL_PURCHASE", uid, original="o-new", start=t, end=end, when=t + 10)
    assert await deliver(client, first) == "stale"
    status = await _status(client, headers)
    assert status["is_vip"] is True
    assert {item["status"] for item in status["subscriptions"]} == {"expired", "cancelled"}
    assert await _points(client, headers) == 2000

    # Events with equal timestamps both apply (the later delivery wins).
    same = purchase("UNCANCELLATION", uid, original="o-new", start=t, end=end, when=t + 20)
    assert await deliver(client, same) == "applied"
    assert {s.status for s in await subscriptions_of(app, uid)} == {"expired", "active"}


async def test_transfer_moves_subscriptions_between_users(client, app):
    alice, alice_headers = await device_user(client, "alice")
    bob, bob_headers = await device_user(client, "bob")
    await deliver(client, purchase("INITIAL_PURCHASE", alice, original="o-a"))
    assert (await _status(client, alice_headers))["is_vip"] is True

    transfer = event("TRANSFER", bob)
    transfer["event"]["transferred_from"] = [alice]
    assert await deliver(client, transfer) == "transferred"
    assert (await _status(client, alice_headers))["is_vip"] is False
    bob_status = await _status(client, bob_headers)
    assert bob_status["is_vip"] is True and len(bob_status["subscriptions"]) == 1
    assert await subscriptions_of(app, alice) == []
    (moved,) = await subscriptions_of(app, bob)
    assert moved.rc_subscriber_id == bob
    assert await _points(client, alice_headers) == 2000  # rewards already paid stay put

    # Back again by RevenueCat id (a subscriber id recorded on the subscription), then nothing
    # left to move.
    back = event("TRANSFER", alice)
    back["event"]["transferred_from"] = ["$RCAnonymousID:unknown", bob]
    assert await deliver(client, back) == "transferred"
    assert len(await subscriptions_of(app, alice)) == 1
    assert (await _status(client, bob_headers))["is_vip"] is False
    empty = event("TRANSFER", bob)
    empty["event"]["transferred_from"] = ["$RCAnonymousID:unknown"]
    assert await deliver(client, empty) == "transferred"
    assert len(await subscriptions_of(app, alice)) == 1


async def _spend(app: Any, user_id: str, amount: int) -> None:
    """A generation spending points: the real ledger movement."""
    async with app.state.db.transaction() as session:
        await transfers.transfer(
            session,
            key=f"spend:{user_id}:{amount}",
            asset=Asset.POINTS,
            debit=await accounts.user_account(session, int(user_id), Asset.POINTS),
            credit=await accounts.system_account(session, SystemAccount.REVENUE, Asset.POINTS),
            amount=amount,
            type=TransferType.CONSUME,
        )


async def test_refund_expires_and_takes_back_rewards_never_below_zero(client, app):
    uid, headers = await device_user(client)
    start = now_ms() - 60_000
    await deliver(client, purchase("INITIAL_PURCHASE", uid, original="o-r", start=start))
    assert await _points(client, headers) == 2000
    await _spend(app, uid, 500)

    refund = purchase(
        "CANCELLATION", uid, original="o-r", start=start, cancel_reason="CUSTOMER_SUPPORT"
    )
    assert await deliver(client, refund) == "refunded"
    status = await _status(client, headers)
    assert status["is_vip"] is False and status["subscriptions"][0]["status"] == "expired"
    assert await _points(client, headers) == 0  # 1,500 taken back; the 500 spent are gone
    items = (await client.get(f"{API}/points/transactions?type=refund", headers=headers)).json()
    (taken,) = items["data"]["items"]
    assert (taken["amount"], taken["balance_after"]) == (-1500, 0)

    # A second refund notice (negative price, another event) takes nothing more.
    again = purchase("CANCELLATION", uid, original="o-r", start=start, price=-4.99)
    assert await deliver(client, again) == "refunded"
    assert await _points(client, headers) == 0


async def test_pause_and_billing_issue_keep_benefits_until_the_period_ends(client, app):
    uid, headers = await device_user(client)
    start = now_ms() - 60_000
    await deliver(client, purchase("INITIAL_PURCHASE", uid, original="o-p", start=start))
    await deliver(client, purchase("SUBSCRIPTION_PAUSED", uid, original="o-p", start=start))
    status = await _status(client, headers)
    assert status["is_vip"] is True and status["subscriptions"][0]["status"] == "paused"
    # The next renewal resumes it.
    await deliver(client, purchase("RENEWAL", uid, original="o-p", start=start))
    grace = now_ms() + 2 * WEEK_MS
    issue = purchase("BILLING_ISSUE", uid, original="o-p", start=start)
    issue["event"]["grace_period_expiration_at_ms"] = grace
    await deliver(client, issue)
    status = await _status(client, headers)
    (sub,) = status["subscriptions"]
    assert sub["status"] == "active" and sub["billing_issue_at"] is not None
    assert status["is_vip"] is True
    (row,) = await subscriptions_of(app, uid)
    assert int(row.current_period_end.timestamp() * 1000) == grace  # benefits through grace

    extended = purchase("SUBSCRIPTION_EXTENDED", uid, original="o-p", start=start, end=grace + 1000)
    await deliver(client, extended)
    (row,) = await subscriptions_of(app, uid)
    assert row.status == "active" and int(row.current_period_end.timestamp() * 1000) == grace + 1000
    assert row.billing_issue_at is not None

    # An expired subscription does not come back through a cancellation notice.
    await deliver(client, purchase("EXPIRATION", uid, original="o-p", start=start, end=now_ms()))
    assert await deliver(client, purchase("CANCELLATION", uid, original="o-p")) == "no_change"
    assert (await subscriptions_of(app, uid))[0].status == "expired"


async def test_product_change_and_several_subscriptions(client, app):
    uid, headers = await device_user(client)
    now = now_ms()
    await deliver(client, purchase("INITIAL_PURCHASE", uid, original="o-w", start=now - 1000))
    yearly_end = now + 52 * WEEK_MS
    yearly = purchase(
        "INITIAL_PURCHASE", uid, product="pk.yearly", original="o-y", start=now, end=yearly_end
    )
    await deliver(client, yearly)
    status = await _status(client, headers)
    assert status["vip_type"] == "yearly"  # the subscription that lasts longest
    change = purchase("PRODUCT_CHANGE", uid, original="o-w", start=now - 1000)
    change["event"]["new_product_id"] = "pk.monthly"
    assert await deliver(client, change) == "applied"
    weekly = next(s for s in await subscriptions_of(app, uid) if s.rc_key == "o-w")
    assert (weekly.product_id, weekly.plan_type) == ("pk.weekly", "weekly")  # pending
    renewal = purchase("RENEWAL", uid, product="pk.monthly", original="o-w", start=now)
    await deliver(client, renewal)
    weekly = next(s for s in await subscriptions_of(app, uid) if s.rc_key == "o-w")
    assert (weekly.product_id, weekly.plan_type) == ("pk.monthly", "monthly")
    await deliver(client, purchase("EXPIRATION", uid, product="pk.yearly", original="o-y", end=now))
    status = await _status(client, headers)
    assert (status["is_vip"], status["vip_type"]) == (True, "monthly")
    assert await _points(client, headers) == 2000  # one reward per week, whatever the plans


async def test_lifetime_purchase_gives_vip_without_end(client, app):
    uid, headers = await device_user(client)
    lifetime = event(
        "NON_RENEWING_PURCHASE",
        uid,
        product_id="pk.lifetime",
        transaction_id="life-1",
        original_transaction_id="life-1",
        purchased_at_ms=now_ms(),
    )
    assert await deliver(client, lifetime) == "applied"
    status = await _status(client, headers)
    assert (status["is_vip"], status["vip_type"], status["vip_expire_time"]) == (
        True,
        "lifetime",
        None,
    )
    assert status["subscriptions"][0]["will_renew"] is False
    unknown = event("NON_RENEWING_PURCHASE", uid, product_id="stickers_pack", transaction_id="x")
    assert await deliver(client, unknown) == "unknown_product"


async def test_vip_ends_when_its_time_passes_without_an_expiration_event(client, app):
    uid, headers = await device_user(client)
    soon = now_ms() + 1200
    await deliver(client, purchase("INITIAL_PURCHASE", uid, start=now_ms() - 1000, end=soon))
    assert (await _status(client, headers))["is_vip"] is True
    await asyncio.sleep(max(0.0, (soon - now_ms()) / 1000) + 0.05)
    status = await _status(client, headers)
    assert (status["is_vip"], status["vip_type"], status["vip_expire_time"]) == (False, None, None)
    assert status["subscriptions"][0]["status"] == "active"  # no EXPIRATION yet
    assert status["subscriptions"][0]["is_active"] is False


@pytest.mark.parametrize(
    "settings_overrides", [rc_settings(weekly_reward_enabled=False)], indirect=True
)
async def test_no_reward_when_switched_off(client, app):
    uid, headers = await device_user(client)
    await deliver(client, purchase("INITIAL_PURCHASE", uid))
    assert (await _status(client, headers))["is_vip"] is True
    assert await _points(client, headers) == 0
