"""The RevenueCat webhook over HTTP: authentication and signatures, malformed bodies, the
documented sample payloads replayed shuffled and duplicated, every event type, duplicates
(also concurrent ones) and unknown users."""

from __future__ import annotations

import asyncio
import json
import random
import time
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import API
from tests.ledger.rc_helpers import (
    AUTH,
    SAMPLES,
    SECRET,
    deliver,
    device_user,
    event,
    first_of,
    for_user,
    orders_of,
    post,
    purchase,
    rc_settings,
    recorded,
    sample,
    subscriptions_of,
    vip_row,
)
from yuntu.ledger.revenuecat import sign
from yuntu.settings import PointsProduct

pytestmark = pytest.mark.anyio

# The documented NON_RENEWING_PURCHASE sample buys "2100_tokens": sold here as a points pack.
PACKS = [
    PointsProduct(product_id="2100_tokens", points=2100, price=Decimal("25.49"), currency="USD"),
    PointsProduct(product_id="points_1000", points=1000, price=Decimal("0.99"), currency="USD"),
]


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return getattr(request, "param", rc_settings(points_products=PACKS))


def _refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert (body["error"], body["code"], body["data"]) == ("SIGNATURE_INVALID", 401008, None)


async def test_authorization_is_checked_whole_and_failures_record_nothing(client, app):
    uid, _ = await device_user(client)
    payload = event("INITIAL_PURCHASE", uid)
    for header in (None, "", "wrong", AUTH[:-1], AUTH + " ", "Bearer", AUTH.lower()):
        _refused(await post(client, payload, auth=header))
    assert await recorded(app) == []
    assert await subscriptions_of(app, uid) == []
    assert await deliver(client, payload) == "applied"


@pytest.mark.parametrize("settings_overrides", [{}], indirect=True)
async def test_unconfigured_webhook_refuses_everything(client, app):
    uid = "7262149437321216"
    _refused(await post(client, event("INITIAL_PURCHASE", uid)))
    _refused(await post(client, event("TEST", uid), auth=""))
    assert await recorded(app) == []


@pytest.mark.parametrize(
    "settings_overrides",
    [rc_settings(revenuecat_webhook_secret=SECRET, revenuecat_signature_tolerance_seconds=300)],
    indirect=True,
)
async def test_signature(client, app):
    uid, _ = await device_user(client)
    payload = event("INITIAL_PURCHASE", uid)
    body = json.dumps(payload).encode()
    now = int(time.time())
    _refused(await post(client, body))  # no signature header
    _refused(await post(client, body, secret="another-secret"))
    _refused(await post(client, body, secret=SECRET, stamp=now - 305))  # stale
    _refused(await post(client, body, secret=SECRET, stamp=now + 305))  # from the future
    signed_other = sign(SECRET, body + b" ", now)  # signs different bytes
    _refused(await post(client, body, signature=signed_other))
    for broken in ("t=abc,v1=00", f"v1={sign(SECRET, body, now).split('v1=')[1]}", "garbage"):
        _refused(await post(client, body, signature=broken))
    _refused(await post(client, body, secret=SECRET, auth="wrong"))  # signature alone is not enough
    assert await recorded(app) == []

    assert await deliver(client, payload, secret=SECRET, stamp=now - 290) == "applied"
    # A rotated secret's header may carry several v1 values: any one matching is enough.
    again = event("TEST", uid)
    raw = json.dumps(again).encode()
    header = sign(SECRET, raw, now).replace("v1=", "v1=00ff,v1=")
    assert (await post(client, raw, signature=header)).status_code == 200
    assert [row.event_id for row in await recorded(app)] == [
        payload["event"]["id"],
        again["event"]["id"],
    ]


async def test_malformed_bodies_are_400_and_record_nothing(client, app):
    for raw in (b"{not json", b'{"event": {"id": "n", "type": "TEST", "price": NaN}}', b"\xff"):
        response = await post(client, raw)
        assert response.status_code == 400
        assert response.json()["error"] == "MALFORMED_JSON"
    for body, field in (
        ([1, 2], "event"),
        ({"api_version": "1.0"}, "event"),
        ({"event": {"type": "TEST"}}, "event.id"),
        ({"event": {"id": "x-1"}}, "event.type"),
        ({"event": {"id": "", "type": "TEST"}}, "event.id"),
        ({"event": {"id": 12, "type": "TEST"}}, "event.id"),
    ):
        response = await post(client, json.dumps(body).encode())
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["error"] == "BAD_REQUEST" and error["data"] is None
        assert field in [item["field"] for item in error["details"]]
    assert await recorded(app) == []


async def test_unknown_users_are_recorded_and_answered_200(client, app):
    uid, _ = await device_user(client)
    strangers = [
        event("INITIAL_PURCHASE", "$RCAnonymousID:nobody"),
        event("INITIAL_PURCHASE", "999999999"),  # a decimal id, but no such user
        event("NON_RENEWING_PURCHASE", "0" + uid),  # not our id's decimal form
        {"event": {**first_of("TRANSFER")["event"], "id": "transfer-x"}},
    ]
    for payload in strangers:
        payload["event"]["aliases"] = ["$RCAnonymousID:other"]
        payload["event"]["original_app_user_id"] = "$RCAnonymousID:other"
        assert await deliver(client, payload) == "unknown_user"
    rows = await recorded(app)
    assert [(row.outcome, row.user_id) for row in rows] == [("unknown_user", None)] * 4
    assert await subscriptions_of(app, uid) == [] and await orders_of(app, uid) == []


async def test_user_found_through_aliases_and_known_subscriber_ids(client, app):
    uid, _ = await device_user(client)
    via_alias = event("INITIAL_PURCHASE", uid, original_transaction_id="o-alias")
    via_alias["event"]["app_user_id"] = "$RCAnonymousID:before-login"
    via_alias["event"]["aliases"] = ["$RCAnonymousID:before-login", uid]
    assert await deliver(client, via_alias) == "applied"
    (sub,) = await subscriptions_of(app, uid)
    assert sub.rc_subscriber_id == "$RCAnonymousID:before-login"
    # A later event naming only that RevenueCat id finds the user through the subscription.
    later = event("RENEWAL", "$RCAnonymousID:before-login", original_transaction_id="o-alias")
    later["event"]["aliases"] = []
    assert await deliver(client, later) == "applied"
    assert [row.user_id for row in await recorded(app)] == [int(uid), int(uid)]


# What each documented sample does when replayed for our user as its own purchase (each gets a
# fresh event id and its own transaction ids; the samples' dates are all in the past, so no
# subscription gives VIP now and no reward is paid).
EXPECTED: dict[str, tuple[str, str | None]] = {  # sample -> (outcome, subscription status)
    "sample-events_1": ("applied", "active"),
    "sample-events_2": ("applied", "active"),
    "sample-events_3": ("applied", "cancelled"),
    "sample-events_4": ("applied", "active"),
    "sample-events_5": ("credited", None),
    "sample-events_6": ("applied", "paused"),
    "sample-events_7": ("applied", "active"),
    "sample-events_9": ("refunded", "expired"),
    "sample-events_10": ("applied", "active"),
    "sample-events_11": ("applied", "active"),
    "sample-events_12": ("applied", "cancelled"),
    "sample-events_13": ("applied", "expired"),
    "sample-events_14": ("applied", "active"),
    "sample-events_15": ("ignored", None),
    "sample-event-refund-reversed": ("ignored", None),
    "sample-event-invoice-issuance": ("ignored", None),
    "sample-event-experiment-enrollment": ("ignored", None),
    "sample-events-md_transfer": ("transferred", None),
    "legacy-v3.1-webhooks_transfer": ("transferred", None),
    # No documented sample: purchase-like payloads of these types, and a type from the future.
    "TEST": ("test", None),
    "TEMPORARY_ENTITLEMENT_GRANT": ("ignored", None),
    "SOMETHING_NEW": ("ignored", None),
}


def _replay_payloads(uid: str) -> dict[str, dict[str, Any]]:
    payloads = {}
    for entry in SAMPLES:
        payloads[entry["name"]] = for_user(sample(entry["name"]), uid)
    for kind in ("TEST", "TEMPORARY_ENTITLEMENT_GRANT", "SOMETHING_NEW"):
        payloads[kind] = for_user(first_of(kind), uid)
    for name, payload in payloads.items():
        data = payload["event"]
        # The samples reuse one event id and one transaction id: distinct events here.
        data["id"] = f"replay-{name}"
        for field in ("transaction_id", "original_transaction_id"):
            if data.get(field):
                data[field] = f"{name}-{field}"
    return payloads


async def test_documented_samples_replayed_shuffled_and_duplicated(client, app):
    uid, headers = await device_user(client)
    payloads = _replay_payloads(uid)
    assert set(payloads) == set(EXPECTED)
    deliveries = [name for name in payloads for _ in range(2)] + ["sample-events_5"] * 2
    random.Random(20260523).shuffle(deliveries)
    seen: set[str] = set()
    for name in deliveries:
        response = await post(client, payloads[name])
        assert response.status_code == 200, (name, response.text)
        data = response.json()["data"]
        assert data["event_id"] == f"replay-{name}"
        assert data["outcome"] == EXPECTED[name][0], (name, data)
        assert data["duplicate"] is (name in seen), name
        seen.add(name)

    rows = {row.event_id: row for row in await recorded(app)}
    assert len(rows) == len(EXPECTED)  # each event recorded once
    for name, (outcome, _) in EXPECTED.items():
        row = rows[f"replay-{name}"]
        assert row.outcome == outcome and row.user_id == int(uid), name
        assert row.payload == payloads[name]
    assert rows["replay-sample-events_1"].environment == "PRODUCTION"

    subs = {sub.rc_key: sub for sub in await subscriptions_of(app, uid)}
    expected_subs = {
        f"{name}-original_transaction_id": status
        for name, (_, status) in EXPECTED.items()
        if status is not None
    }
    assert {key: sub.status for key, sub in subs.items()} == expected_subs
    weekly = subs["sample-events_1-original_transaction_id"]
    assert (weekly.plan_type, weekly.will_renew, weekly.store) == ("weekly", True, "APP_STORE")
    assert weekly.entitlement_ids == ["pro"] and weekly.environment == "PRODUCTION"
    assert int(weekly.current_period_end.timestamp() * 1000) == 1659331174000
    assert subs["sample-events_11-original_transaction_id"].plan_type == "yearly"
    assert subs["sample-events_6-original_transaction_id"].plan_type == "other"
    assert subs["sample-events_3-original_transaction_id"].will_renew is False
    assert subs["sample-events_7-original_transaction_id"].billing_issue_at is not None
    changed = subs["sample-events_10-original_transaction_id"]
    assert changed.product_id == "com.revenuecat.myapp.monthly"  # the change is pending
    assert await vip_row(app, uid) == (False, None, None)  # every period ended long ago

    (order,) = await orders_of(app, uid)
    assert (order.status, order.product_id, order.credit_amount) == ("paid", "2100_tokens", 2100)
    assert order.transaction_id == "sample-events_5-transaction_id"
    assert (order.payment_channel, order.environment) == ("APP_STORE", "PRODUCTION")
    balance = (await client.get(f"{API}/points/balance", headers=headers)).json()["data"]
    assert balance == {"balance": 2100, "held": 0, "total": 2100}  # credited once

    status = (await client.get(f"{API}/subscription/status", headers=headers)).json()["data"]
    assert status["is_vip"] is False
    assert len(status["subscriptions"]) == len(expected_subs)
    assert not any(item["is_active"] for item in status["subscriptions"])


async def test_concurrent_duplicates_apply_once(client, app):
    uid, headers = await device_user(client)
    payload = event("NON_RENEWING_PURCHASE", uid, product_id="points_1000", transaction_id="t-1")
    responses = await asyncio.gather(*(post(client, payload) for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    flags = sorted(r.json()["data"]["duplicate"] for r in responses)
    assert flags == [False] + [True] * 5
    assert {r.json()["data"]["outcome"] for r in responses} == {"credited"}
    balance = (await client.get(f"{API}/points/balance", headers=headers)).json()["data"]
    assert balance["balance"] == 1000
    assert len(await recorded(app)) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [rc_settings(points_products=PACKS, revenuecat_accept_sandbox=False)],
    indirect=True,
)
async def test_sandbox_events_are_recorded_but_not_acted_on_when_refused(client, app):
    uid, _ = await device_user(client)
    sandbox = purchase("INITIAL_PURCHASE", uid)
    sandbox["event"]["environment"] = "SANDBOX"
    assert await deliver(client, sandbox) == "sandbox_ignored"
    pack = event("NON_RENEWING_PURCHASE", uid, product_id="points_1000", environment="SANDBOX")
    assert await deliver(client, pack) == "sandbox_ignored"
    assert await subscriptions_of(app, uid) == [] and await orders_of(app, uid) == []
    assert await deliver(client, purchase("INITIAL_PURCHASE", uid)) == "applied"
