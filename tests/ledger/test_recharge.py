"""Recharge over HTTP: the order, the simulated gateway, the signed callback (forged, stale,
replayed, mismatched), idempotency, amount validation, ownership, configuration; the order
state table; money parsing and formatting."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import API, TEST_SECRET, bearer, register
from tests.ledger.conftest import make_user
from yuntu.kit.db import Database, utcnow
from yuntu.kit.errors import AppError
from yuntu.ledger import orders
from yuntu.ledger.money import exponent_fields, fen_to_str, parse_yuan
from yuntu.ledger.payments import SIGNATURE_HEADER, DevSimulatedProvider, PaymentNotice
from yuntu.models.ledger import Asset, OrderKind, OrderStatus
from yuntu.settings import ConfigError, Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def provider_env() -> str | None:
    """YUNTU_PAYMENT_PROVIDER for the app (a test parametrizes this to change it)."""
    return None


@pytest.fixture
def settings_overrides(provider_env: str | None, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Through the environment, as an operator would turn recharge off.
    if provider_env is not None:
        monkeypatch.setenv("YUNTU_PAYMENT_PROVIDER", provider_env)
    return {}


# -- helpers shared with the statement and bill tests -------------------------------------------
def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == 0
    return body["data"]


def fails(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["data"] is None, body
    return body  # type: ignore[no-any-return]


async def login(client: httpx.AsyncClient, name: str) -> tuple[dict[str, str], int]:
    tokens = await register(client, name)
    return bearer(tokens), int(tokens["user"]["id"])


async def start_recharge(
    client: httpx.AsyncClient, headers: dict[str, str], amount: Any = "100.00", **extra: Any
) -> dict[str, Any]:
    return ok(  # type: ignore[no-any-return]
        await client.post(
            f"{API}/users/recharge", json={"amount": amount, **extra}, headers=headers
        ),
        201,
    )


async def pay(
    client: httpx.AsyncClient, headers: dict[str, str], order_no: str, outcome: str = "paid"
) -> dict[str, Any]:
    return ok(  # type: ignore[no-any-return]
        await client.post(
            f"{API}/payments/dev_simulated/checkout/{order_no}",
            json={"outcome": outcome},
            headers=headers,
        )
    )


async def fund(client: httpx.AsyncClient, headers: dict[str, str], amount: str) -> None:
    created = await start_recharge(client, headers, amount)
    assert (await pay(client, headers, created["order"]["order_no"]))["status"] == "paid"


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    return ok(await client.get(f"{API}/users/balance", headers=headers))  # type: ignore[no-any-return]


def provider(secret: str = TEST_SECRET) -> DevSimulatedProvider:
    """The provider's own signing code with the app's secret: what its gateway would send."""
    return DevSimulatedProvider(secret)


def notice_for(order: dict[str, Any], **changes: Any) -> PaymentNotice:
    values: dict[str, Any] = {
        "order_no": order["order_no"],
        "transaction_id": f"T{order['id']}",
        "amount_fen": parse_yuan(order["amount"]),
        "currency": order["currency"],
        "outcome": "paid",
    }
    values.update(changes)
    return PaymentNotice(**values)


async def notify(client: httpx.AsyncClient, headers: dict[str, str], body: bytes) -> httpx.Response:
    return await client.post(f"{API}/payments/dev_simulated/notify", content=body, headers=headers)


# -- lifecycle ---------------------------------------------------------------------------------
async def test_recharge_lifecycle_through_simulated_checkout(client: httpx.AsyncClient) -> None:
    alice, _ = await login(client, "alice")
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "0.00",
        "held": "0.00",
        "total": "0.00",
    }
    created = await start_recharge(client, alice, "100.00", description="Top up")
    order, payment = created["order"], created["payment"]
    assert order["status"] == "pending" and order["amount"] == "100.00"
    assert order["currency"] == "CNY" and order["order_no"].startswith("RC")
    assert order["paid_at"] is None and order["expires_at"] > order["created_at"]
    assert payment["provider"] == "dev_simulated" and payment["simulated"] is True
    assert payment["checkout_url"].endswith(
        f"/api/v1/payments/dev_simulated/checkout/{order['order_no']}"
    )
    # Creating the order moves nothing.
    assert (await balance(client, alice))["balance"] == "0.00"
    polled = ok(await client.get(f"{API}/users/recharge/{order['id']}", headers=alice))
    assert polled["status"] == "pending"

    paid = await pay(client, alice, order["order_no"])
    assert paid["status"] == "paid" and paid["paid_at"] is not None and paid["id"] == order["id"]
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "100.00",
        "held": "0.00",
        "total": "100.00",
    }
    polled = ok(await client.get(f"{API}/users/recharge/{order['id']}", headers=alice))
    assert polled["status"] == "paid" and polled["description"] == "Top up"
    # Paying again (the gateway's retry) credits nothing more.
    assert (await pay(client, alice, order["order_no"]))["status"] == "paid"
    assert (await balance(client, alice))["balance"] == "100.00"
    # A failure notice after the payment changes nothing.
    assert (await pay(client, alice, order["order_no"], "failed"))["status"] == "paid"
    statement = ok(await client.get(f"{API}/users/transactions", headers=alice))
    assert statement["total"] == 1
    (item,) = statement["items"]
    assert (item["type"], item["amount"], item["balance_after"]) == ("recharge", "100.00", "100.00")
    assert (item["reference_type"], item["reference_id"]) == ("order", order["id"])

    # A JSON number is fine too, and the checkout body is optional (it defaults to paid).
    small = (await start_recharge(client, alice, 12))["order"]
    assert small["amount"] == "12.00"
    response = await client.post(
        f"{API}/payments/dev_simulated/checkout/{small['order_no']}", headers=alice
    )
    assert ok(response)["status"] == "paid"
    assert (await balance(client, alice))["balance"] == "112.00"


# -- the signed callback -----------------------------------------------------------------------
async def test_bad_signatures_are_refused_and_change_nothing(client: httpx.AsyncClient) -> None:
    alice, _ = await login(client, "alice")
    order = (await start_recharge(client, alice))["order"]
    genuine = provider()
    headers, body = genuine.build_notice(notice_for(order))
    forged_headers, _ = provider("someone-elses-secret-0123456789abcdef").build_notice(
        notice_for(order)
    )
    stale = {SIGNATURE_HEADER: genuine.sign(body, int(time.time()) - 301)}
    future = {SIGNATURE_HEADER: genuine.sign(body, int(time.time()) + 301)}
    tampered = body.replace(b'"amount_fen":10000', b'"amount_fen":99999900')
    assert tampered != body
    attempts: list[tuple[dict[str, str], bytes]] = [
        ({}, body),  # missing
        (forged_headers, body),  # signed with another key
        (stale, body),
        (future, body),
        (headers, tampered),  # the signature covers the bytes
        ({SIGNATURE_HEADER: "v1=" + "0" * 64}, body),  # no timestamp
        ({SIGNATURE_HEADER: headers[SIGNATURE_HEADER].split(",")[0]}, body),  # no v1
        ({SIGNATURE_HEADER: "garbage"}, body),
        ({SIGNATURE_HEADER: headers[SIGNATURE_HEADER].upper()}, body),
    ]
    for attempt_headers, attempt_body in attempts:
        response = await notify(client, attempt_headers, attempt_body)
        fails(response, 401, "SIGNATURE_INVALID")
    # A correctly signed body that is not a notice is refused too.
    junk = b'{"order_no": 1}'
    fails(
        await notify(client, {SIGNATURE_HEADER: genuine.sign(junk)}, junk), 401, "SIGNATURE_INVALID"
    )
    assert (await balance(client, alice))["balance"] == "0.00"
    polled = ok(await client.get(f"{API}/users/recharge/{order['id']}", headers=alice))
    assert polled["status"] == "pending"
    # The genuine notice still works afterwards.
    assert ok(await notify(client, headers, body)) == {
        "order_no": order["order_no"],
        "status": "paid",
    }
    assert (await balance(client, alice))["balance"] == "100.00"


async def test_replayed_notice_credits_once(client: httpx.AsyncClient) -> None:
    alice, _ = await login(client, "alice")
    order = (await start_recharge(client, alice, "25.50"))["order"]
    headers, body = provider().build_notice(notice_for(order))
    first = await notify(client, headers, body)
    assert ok(first) == {"order_no": order["order_no"], "status": "paid"}
    replies = await asyncio.gather(*(notify(client, headers, body) for _ in range(4)))
    for reply in replies:
        assert reply.status_code == 200 and reply.json() == first.json()
    # A second paid notice with another transaction id for the same order: still once.
    again_headers, again_body = provider().build_notice(notice_for(order, transaction_id="OTHER"))
    assert ok(await notify(client, again_headers, again_body))["status"] == "paid"
    assert (await balance(client, alice))["balance"] == "25.50"
    assert ok(await client.get(f"{API}/users/transactions", headers=alice))["total"] == 1


async def test_mismatched_or_unknown_notices_are_refused(client: httpx.AsyncClient) -> None:
    alice, _ = await login(client, "alice")
    order = (await start_recharge(client, alice, "100.00"))["order"]
    for change in ({"amount_fen": 9999}, {"amount_fen": 10001}, {"currency": "USD"}):
        headers, body = provider().build_notice(notice_for(order, **change))
        refused = fails(await notify(client, headers, body), 409, "PAYMENT_MISMATCH")
        assert refused["details"]["order_amount"] == "100.00"
    unknown = PaymentNotice("RC123456789", "T1", 10000, "CNY", "paid")
    headers, body = provider().build_notice(unknown)
    fails(await notify(client, headers, body), 404, "NOT_FOUND")
    polled = ok(await client.get(f"{API}/users/recharge/{order['id']}", headers=alice))
    assert polled["status"] == "pending"
    assert (await balance(client, alice))["balance"] == "0.00"


async def test_failed_then_paid_and_expired_then_paid(client: httpx.AsyncClient, app: Any) -> None:
    alice, _ = await login(client, "alice")
    order = (await start_recharge(client, alice, "10.00"))["order"]
    assert (await pay(client, alice, order["order_no"], "failed"))["status"] == "failed"
    assert (await balance(client, alice))["balance"] == "0.00"
    # The buyer retried at the gateway and the money was taken after all: credit it.
    assert (await pay(client, alice, order["order_no"]))["status"] == "paid"
    assert (await balance(client, alice))["balance"] == "10.00"

    late = (await start_recharge(client, alice, "5.00"))["order"]
    async with app.state.db.transaction() as session:
        assert await orders.expire_stale(session, utcnow() + timedelta(hours=1)) == 1
    polled = ok(await client.get(f"{API}/users/recharge/{late['id']}", headers=alice))
    assert polled["status"] == "expired"
    headers, body = provider().build_notice(notice_for(late))
    assert ok(await notify(client, headers, body))["status"] == "paid"
    assert (await balance(client, alice))["balance"] == "15.00"


# -- the request ----------------------------------------------------------------------------------
async def test_idempotency_key(client: httpx.AsyncClient, app: Any) -> None:
    alice, alice_id = await login(client, "alice")
    keyed = {**alice, "Idempotency-Key": "recharge-0001"}
    first = await client.post(f"{API}/users/recharge", json={"amount": "30.00"}, headers=keyed)
    created = ok(first, 201)
    again = await client.post(f"{API}/users/recharge", json={"amount": "30.00"}, headers=keyed)
    assert ok(again, 201)["order"]["id"] == created["order"]["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = await client.post(f"{API}/users/recharge", json={"amount": "31.00"}, headers=keyed)
    fails(other, 409, "IDEMPOTENCY_KEY_REUSED")
    # Without a key every request is a new order.
    plain = [await start_recharge(client, alice, "30.00") for _ in range(2)]
    assert plain[0]["order"]["id"] != plain[1]["order"]["id"]
    async with app.state.db.read_sessionmaker() as session:
        from sqlalchemy import func, select

        from yuntu.models.ledger import Order

        count = await session.scalar(
            select(func.count()).select_from(Order).where(Order.user_id == alice_id)
        )
    assert count == 3


async def test_bad_amounts_are_422_with_field_details(client: httpx.AsyncClient) -> None:
    alice, _ = await login(client, "alice")
    url = f"{API}/users/recharge"
    bad_json: list[Any] = [
        0,
        "0",
        "0.00",
        -1,
        "-1.00",
        "1.234",
        1.234,
        "1.230",
        "abc",
        "1e3",
        "NaN",
        "Infinity",
        True,
        None,
        "100.",
        ".5",
        " 10",
        "1,000",
        [],
        {},
        "0.99",  # below recharge_min_fen
        "50000.01",  # above recharge_max_fen
        10**20,
        "99999999999999999999.99",
        "9" * 400,
    ]
    raw_bodies = [
        b'{"amount": 1e3}',
        b'{"amount": 1E2}',
        b'{"amount": 2.5e1}',
        b'{"amount": NaN}',
        b'{"amount": -Infinity}',
    ]
    for value in bad_json:
        response = await client.post(url, json={"amount": value}, headers=alice)
        body = fails(response, 422, "VALIDATION_ERROR")
        fields = [detail["field"] for detail in body["details"]]
        assert any(field.startswith("body.amount") for field in fields), (value, body)
    for raw in raw_bodies:
        response = await client.post(
            url, content=raw, headers={**alice, "Content-Type": "application/json"}
        )
        body = fails(response, 422, "VALIDATION_ERROR")
        assert body["details"][0]["field"] == "body.amount", (raw, body)
    fails(
        await client.post(url, json={"amount": "10.00", "extra": 1}, headers=alice),
        422,
        "VALIDATION_ERROR",
    )
    fails(await client.post(url, json={}, headers=alice), 422, "VALIDATION_ERROR")
    # Good ones, for contrast: strings and plain JSON numbers.
    for value, shown in ((1, "1.00"), (100.5, "100.50"), ("1.5", "1.50")):
        assert (await start_recharge(client, alice, value))["order"]["amount"] == shown
    assert (await start_recharge(client, alice, "50000.00"))["order"]["amount"] == "50000.00"
    assert (await balance(client, alice))["balance"] == "0.00"


async def test_other_users_orders_are_404(client: httpx.AsyncClient) -> None:
    alice, _ = await login(client, "alice")
    bob, _ = await login(client, "bob")
    order = (await start_recharge(client, alice))["order"]
    fails(await client.get(f"{API}/users/recharge/{order['id']}", headers=bob), 404, "NOT_FOUND")
    fails(await client.get(f"{API}/users/recharge/123456789", headers=alice), 404, "NOT_FOUND")
    checkout = f"{API}/payments/dev_simulated/checkout/{order['order_no']}"
    fails(await client.post(checkout, json={"outcome": "paid"}, headers=bob), 404, "NOT_FOUND")
    fails(await client.post(checkout, json={"outcome": "paid"}), 401, "UNAUTHENTICATED")
    fails(
        await client.post(f"{API}/payments/dev_simulated/checkout/RC1", headers=alice),
        404,
        "NOT_FOUND",
    )
    assert (
        ok(await client.get(f"{API}/users/recharge/{order['id']}", headers=alice))["status"]
        == "pending"
    )
    assert (await balance(client, bob))["balance"] == "0.00"


@pytest.mark.parametrize("provider_env", ["none"])
async def test_no_provider_means_no_recharge(client: httpx.AsyncClient, app: Any) -> None:
    assert app.state.settings.effective_payment_provider == "none"
    alice, _ = await login(client, "alice")
    response = await client.post(f"{API}/users/recharge", json={"amount": "10.00"}, headers=alice)
    fails(response, 503, "FEATURE_NOT_CONFIGURED")
    fails(
        await client.post(f"{API}/payments/dev_simulated/checkout/RC1", headers=alice),
        404,
        "ROUTE_NOT_FOUND",
    )
    headers, body = provider().build_notice(PaymentNotice("RC1", "T1", 1000, "CNY", "paid"))
    fails(await notify(client, headers, body), 404, "ROUTE_NOT_FOUND")
    assert (await balance(client, alice))["balance"] == "0.00"


def test_production_refuses_the_simulated_provider(env_without_yuntu: None, tmp_path: Any) -> None:
    strong = "Zq8-vR3_kP0wLx7Tn2Ys9Hb4Jd6Fm1Gc5Ve8Ua0Ni3Ok"
    simulated = Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="production",
        payment_provider="dev_simulated",
        secret_key=strong,
        data_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match="dev_simulated"):
        simulated.resolve_secret_key()
    fine = Settings(_env_file=None, env="production", secret_key=strong, data_dir=tmp_path)  # type: ignore[call-arg]
    assert fine.resolve_secret_key() == strong
    assert fine.effective_payment_provider == "none"


# -- the order state table ---------------------------------------------------------------------
EXPECTED = {
    "pending": {"paid", "failed", "cancelled", "expired"},
    "failed": {"paid"},
    "cancelled": {"paid"},
    "expired": {"paid"},
    "paid": {"refunded"},
    "refunded": set(),
}


async def _order_in(session: Any, user_id: int, status: OrderStatus) -> Any:
    order = await orders.create(
        session,
        user_id=user_id,
        kind=OrderKind.RECHARGE,
        amount=500,
        currency=Asset.CNY,
        credit_asset=Asset.CNY,
        credit_amount=500,
        provider="dev_simulated",
    )
    if status in (OrderStatus.PAID, OrderStatus.REFUNDED):
        await orders.mark_paid(session, order, transaction_id=f"T{order.id}")
    if status == OrderStatus.REFUNDED:
        await orders.refund(session, order)
    if status in (OrderStatus.FAILED, OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        assert await orders.fail(session, order, status)
    assert order.status == status
    return order


async def _attempt(session: Any, order: Any, target: OrderStatus) -> None:
    if target == OrderStatus.PAID:
        await orders.mark_paid(session, order, transaction_id=f"T{order.id}")
    elif target == OrderStatus.REFUNDED:
        await orders.refund(session, order)
    elif target != OrderStatus.PENDING:  # nothing ever moves back to pending
        await orders.fail(session, order, target)
    await session.refresh(order)


async def test_order_transition_table(ledger_db: Database) -> None:
    assert {
        source.value: {t.value for t in targets} for source, targets in orders.TRANSITIONS.items()
    } == EXPECTED
    user_id = await make_user(ledger_db, "alice")
    for source in OrderStatus:
        for target in OrderStatus:
            allowed = target.value in EXPECTED[source.value]
            assert orders.can_move(source, target) is allowed
            async with ledger_db.transaction() as session:
                order = await _order_in(session, user_id, source)
                try:
                    await _attempt(session, order, target)
                except AppError as error:
                    assert error.spec.name == "ORDER_NOT_PAYABLE", (source, target)
                moved = order.status == target and source != target
                assert moved is allowed, (source.value, target.value, order.status)


# -- money ---------------------------------------------------------------------------------------
def test_fen_to_str() -> None:
    cases = {0: "0.00", 1: "0.01", 99: "0.99", 100: "1.00", 12345: "123.45", -100: "-1.00"}
    for fen, text in cases.items():
        assert fen_to_str(fen) == text
    assert fen_to_str(-5) == "-0.05" and fen_to_str(10**15) == "10000000000000.00"


def test_parse_yuan() -> None:
    good = {
        "100": 10000,
        "100.5": 10050,
        "100.50": 10050,
        "0.01": 1,
        7: 700,
        0.1: 10,
        19.99: 1999,
        Decimal("2.50"): 250,
    }
    for value, fen in good.items():
        assert parse_yuan(value) == fen, value
    assert parse_yuan("0", allow_zero=True) == 0
    bad: list[Any] = [
        "0",
        0,
        "-0.01",
        -1,
        "1.001",
        0.001,
        "1e2",
        1e22,
        float("nan"),
        float("inf"),
        "nan",
        "Infinity",
        "",
        "abc",
        True,
        None,
        Decimal("NaN"),
        "10000000000000.01",
        "1" * 40,
    ]
    for value in bad:
        with pytest.raises(ValueError):
            parse_yuan(value)
    with pytest.raises(ValueError, match=r"at most 1\.00"):
        parse_yuan("1.01", max_fen=100)
    assert exponent_fields(b'{"amount": 1e3, "other": 2E1, "x": 1.5}', ("amount", "x")) == [
        "amount"
    ]
    assert exponent_fields(b"[1e3]", ("amount",)) == [] and exponent_fields(b"{", ("a",)) == []
    assert json.loads(b'{"amount": 1e3}')["amount"] == 1000.0  # why the raw check exists
