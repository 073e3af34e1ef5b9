"""Points and points-pack orders over HTTP: balance and statement, POST /order/create with its
Idempotency-Key replay, order lookup and listing scoped to the caller, and the pack lifecycle
through RevenueCat's NON_RENEWING_PURCHASE and refund events."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.conftest import API
from tests.ledger.rc_helpers import (
    deliver,
    device_user,
    event,
    orders_of,
    rc_settings,
)
from yuntu.kit.db import utcnow
from yuntu.ledger import accounts, transfers
from yuntu.models.ledger import Asset, Order, SystemAccount, TransferType

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return rc_settings(order_expiry_minutes=15)  # the default catalogue: points_1000, ...


async def _create(client: Any, headers: dict[str, str], product: str, **extra: str) -> Any:
    return await client.post(
        f"{API}/order/create", json={"product_id": product}, headers={**headers, **extra}
    )


async def _balance(client: Any, headers: dict[str, str]) -> dict[str, int]:
    response = await client.get(f"{API}/points/balance", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def _bought(uid: str, transaction: str, product: str = "points_1000") -> dict[str, Any]:
    return event(
        "NON_RENEWING_PURCHASE",
        uid,
        product_id=product,
        transaction_id=transaction,
        original_transaction_id=transaction,
        environment="SANDBOX",
        store="PLAY_STORE",
    )


async def test_create_order_and_look_it_up(client, app):
    uid, headers = await device_user(client, "alice")
    _, bob = await device_user(client, "bob")
    assert await _balance(client, headers) == {"balance": 0, "held": 0, "total": 0}
    empty = (await client.get(f"{API}/points/transactions", headers=headers)).json()["data"]
    assert (empty["items"], empty["total"], empty["pages"]) == ([], 0, 0)

    missing = await _create(client, headers, "points_999")
    assert missing.status_code == 404
    assert missing.json()["message"] == "unknown points pack: points_999"
    invalid = await client.post(f"{API}/order/create", json={"product_id": ""}, headers=headers)
    assert invalid.status_code == 422
    assert (await client.post(f"{API}/order/create", json={"product_id": "x"})).status_code == 401

    created = await _create(client, headers, "points_1000", **{"Idempotency-Key": "buy-1"})
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    order = data["order"]
    assert data["purchase"] == {
        "provider": "revenuecat",
        "store_product_id": "points_1000",
        "app_user_id": uid,
        "title": None,
    }
    assert order["order_no"] == f"PK{order['id']}" and isinstance(order["id"], str)
    assert (order["status"], order["amount"], order["currency"], order["points"]) == (
        "pending",
        "0.99",
        "USD",
        1000,
    )
    assert (order["provider"], order["transaction_id"], order["paid_at"]) == (
        "revenuecat",
        None,
        None,
    )
    assert order["expires_at"] is not None and order["refund_shortfall"] == 0

    # The same key again: the first response, nothing new; another body with it: 409.
    replay = await _create(client, headers, "points_1000", **{"Idempotency-Key": "buy-1"})
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == created.json()
    reused = await _create(client, headers, "points_6000", **{"Idempotency-Key": "buy-1"})
    assert reused.status_code == 409 and reused.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert len(await orders_of(app, uid)) == 1

    fetched = await client.get(f"{API}/order/{order['id']}", headers=headers)
    assert fetched.status_code == 200 and fetched.json()["data"] == order
    for path in (f"/order/{order['id']}", "/order/12345"):
        other = await client.get(f"{API}{path}", headers=bob)
        assert other.status_code == 404 and other.json()["error"] == "NOT_FOUND"
    assert (await client.get(f"{API}/order/abc", headers=headers)).status_code == 422

    second = (await _create(client, headers, "points_6000")).json()["data"]["order"]
    listing = (await client.get(f"{API}/order/list", headers=headers)).json()["data"]
    assert [item["id"] for item in listing["items"]] == [second["id"], order["id"]]
    assert listing["total"] == 2
    paid = await client.get(f"{API}/order/list?status=paid", headers=headers)
    assert paid.json()["data"]["items"] == []
    assert (await client.get(f"{API}/order/list?status=nope", headers=headers)).status_code == 422
    assert (await client.get(f"{API}/order/list", headers=bob)).json()["data"]["total"] == 0


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
            description="emoji generation",
        )


async def test_pack_lifecycle_paid_credited_once_then_refunded_after_spending(client, app):
    uid, headers = await device_user(client)
    order = (await _create(client, headers, "points_1000")).json()["data"]["order"]
    assert await deliver(client, _bought(uid, "GPA.1")) == "credited"
    paid = (await client.get(f"{API}/order/{order['id']}", headers=headers)).json()["data"]
    assert (paid["status"], paid["transaction_id"]) == ("paid", "GPA.1")
    assert (paid["payment_channel"], paid["environment"]) == ("PLAY_STORE", "SANDBOX")
    assert paid["paid_at"] is not None
    assert await _balance(client, headers) == {"balance": 1000, "held": 0, "total": 1000}

    # The same store transaction reported by another event does not credit again.
    assert await deliver(client, _bought(uid, "GPA.1")) == "duplicate_transaction"
    assert (await _balance(client, headers))["balance"] == 1000

    await _spend(app, uid, 600)
    refund = event(
        "CANCELLATION",
        uid,
        product_id="points_1000",
        transaction_id="GPA.1",
        cancel_reason="CUSTOMER_SUPPORT",
        price=-0.99,
    )
    assert await deliver(client, refund) == "refunded"
    refunded = (await client.get(f"{API}/order/{order['id']}", headers=headers)).json()["data"]
    assert (refunded["status"], refunded["refund_shortfall"]) == ("refunded", 600)
    assert refunded["refunded_at"] is not None
    assert await _balance(client, headers) == {"balance": 0, "held": 0, "total": 0}
    again = {**refund, "event": {**refund["event"], "id": "refund-again"}}
    assert await deliver(client, again) == "duplicate_transaction"
    assert (await _balance(client, headers))["balance"] == 0

    statement = (await client.get(f"{API}/points/transactions", headers=headers)).json()["data"]
    assert [(i["type"], i["amount"], i["balance_after"]) for i in statement["items"]] == [
        ("refund", -400, 0),
        ("consume", -600, 400),
        ("purchase", 1000, 1000),
    ]
    purchase_row = statement["items"][2]
    assert (purchase_row["reference_type"], purchase_row["reference_id"]) == ("order", order["id"])
    page = await client.get(
        f"{API}/points/transactions?type=consume&page=1&page_size=1", headers=headers
    )
    assert page.json()["data"]["total"] == 1
    assert page.json()["data"]["items"][0]["description"] == "emoji generation"
    # A refund of a transaction we never credited changes nothing.
    stray = {**refund, "event": {**refund["event"], "id": "r-2", "transaction_id": "GPA.9"}}
    assert await deliver(client, stray) == "refund_unmatched"
    # A plain cancellation of a pack (not a refund) is only recorded.
    plain = event("CANCELLATION", uid, product_id="points_1000", cancel_reason="UNSUBSCRIBE")
    plain["event"]["price"] = 0
    assert await deliver(client, plain) == "ignored"


async def test_purchases_pay_the_oldest_open_order_or_a_new_one(client, app):
    uid, headers = await device_user(client)
    first = (await _create(client, headers, "points_1000")).json()["data"]["order"]
    second = (await _create(client, headers, "points_1000")).json()["data"]["order"]
    other = (await _create(client, headers, "points_6000")).json()["data"]["order"]
    # The first has expired meanwhile (the expiry job ran): a pending one is paid before it.
    async with app.state.db.transaction() as session:
        await session.execute(
            update(Order)
            .where(Order.id == int(first["id"]))
            .values(status="expired", expires_at=utcnow() - timedelta(minutes=1))
        )

    assert await deliver(client, _bought(uid, "T-1")) == "credited"
    assert await deliver(client, _bought(uid, "T-2")) == "credited"  # the expired one, late
    assert await deliver(client, _bought(uid, "T-3")) == "credited"  # no order left: a new one
    by_id = {order.id: order for order in await orders_of(app, uid)}
    assert (by_id[int(second["id"])].status, by_id[int(second["id"])].transaction_id) == (
        "paid",
        "T-1",
    )
    assert (by_id[int(first["id"])].status, by_id[int(first["id"])].transaction_id) == (
        "paid",
        "T-2",
    )
    assert by_id[int(other["id"])].status == "pending"
    created = [o for o in by_id.values() if o.transaction_id == "T-3"]
    assert len(created) == 1 and created[0].product_id == "points_1000"
    assert (created[0].amount, created[0].currency, created[0].credit_amount) == (99, "USD", 1000)
    assert (await _balance(client, headers))["balance"] == 3000
    listing = await client.get(f"{API}/order/list?status=pending", headers=headers)
    assert [item["id"] for item in listing.json()["data"]["items"]] == [other["id"]]
    listing = await client.get(f"{API}/order/list?status=paid&page_size=2", headers=headers)
    assert listing.json()["data"]["total"] == 3 and listing.json()["data"]["pages"] == 2


async def test_one_store_transaction_in_concurrent_events_is_credited_once(client, app):
    uid, headers = await device_user(client)
    await _create(client, headers, "points_1000")
    payloads = [_bought(uid, "GPA.same") for _ in range(5)]  # five event ids, one purchase
    outcomes = await asyncio.gather(*(deliver(client, payload) for payload in payloads))
    assert sorted(outcomes) == ["credited"] + ["duplicate_transaction"] * 4
    assert (await _balance(client, headers))["balance"] == 1000
    assert [o.transaction_id for o in await orders_of(app, uid)] == ["GPA.same"]
