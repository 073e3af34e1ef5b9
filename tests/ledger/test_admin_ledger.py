"""Administrator credits, debits and reversals: audited, idempotent, never overdrawing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.conftest import API, bearer, make_admin, register
from yuntu.models.audit import AuditEntry

pytestmark = pytest.mark.anyio


async def _adjust(
    client: httpx.AsyncClient, admin: dict[str, Any], key: str | None = None, **body: Any
) -> httpx.Response:
    headers = bearer(admin) | ({"Idempotency-Key": key} if key else {})
    return await client.post(f"{API}/admin/ledger/adjustments", json=body, headers=headers)


async def test_credit_debit_reverse_are_audited(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await make_admin(client, app)
    alice = await register(client, "alice")
    alice_id = alice["user"]["id"]
    common = {"user_id": alice_id, "reason": "ticket 1841 compensation"}

    credited = await _adjust(
        client, admin, "k-1", asset="CNY", direction="credit", amount="20.50", **common
    )
    assert credited.status_code == 201, credited.text
    moved = credited.json()["data"]
    assert moved["amount"] == "20.50" and moved["type"] == "adjustment"
    assert moved["credit"]["user_id"] == alice_id and moved["debit"]["system"] == "adjustments"
    replay = await _adjust(
        client, admin, "k-1", asset="CNY", direction="credit", amount="20.50", **common
    )
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["data"]["id"] == moved["id"]

    overdraw = await _adjust(
        client, admin, asset="CNY", direction="debit", amount="20.51", **common
    )
    assert overdraw.status_code == 402 and overdraw.json()["error"] == "INSUFFICIENT_BALANCE"
    debit = await _adjust(client, admin, asset="CNY", direction="debit", amount="0.50", **common)
    assert debit.status_code == 201

    points = await _adjust(client, admin, asset="POINTS", direction="credit", amount=300, **common)
    assert points.status_code == 201 and points.json()["data"]["amount"] == "300"

    reversal = await client.post(
        f"{API}/admin/ledger/transfers/{moved['id']}/reverse",
        json={"amount": "5.00", "reason": "partly granted in error"},
        headers=bearer(admin),
    )
    assert reversal.status_code == 201, reversal.text
    assert reversal.json()["data"]["reverses_id"] == moved["id"]

    balances = await client.get(
        f"{API}/admin/ledger/users/{alice_id}/balances", headers=bearer(admin)
    )
    assert balances.json()["data"]["cny"]["balance"] == "15.00"
    assert balances.json()["data"]["points"]["balance"] == 300
    mine = await client.get(f"{API}/users/balance", headers=bearer(alice))
    assert mine.json()["data"]["balance"] == "15.00"

    listed = await client.get(
        f"{API}/admin/ledger/transfers",
        params={"user_id": alice_id, "asset": "CNY"},
        headers=bearer(admin),
    )
    assert listed.json()["data"]["total"] == 3
    assert [item["type"] for item in listed.json()["data"]["items"]] == [
        "reversal",
        "adjustment",
        "adjustment",
    ]

    async with app.state.db.read_sessionmaker() as session:
        actions = (
            await session.scalars(select(AuditEntry.action).order_by(AuditEntry.created_at))
        ).all()
    assert [a for a in actions if a.startswith("ledger.")] == [
        "ledger.credit",
        "ledger.debit",
        "ledger.credit",
        "ledger.reverse",
    ]


async def test_refusals(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await make_admin(client, app)
    alice = await register(client, "alice")
    alice_id = alice["user"]["id"]
    ok = {"user_id": alice_id, "asset": "CNY", "direction": "credit", "reason": "a reason"}

    as_user = await _adjust(client, alice, amount="1.00", **ok)
    assert as_user.status_code == 403
    for bad in ("0", "-1", "1.001", "abc", "1e3"):
        refused = await _adjust(client, admin, amount=bad, **ok)
        assert refused.status_code == 422, (bad, refused.text)
    fractional_points = await _adjust(client, admin, **(ok | {"asset": "POINTS", "amount": "1.5"}))
    assert fractional_points.status_code == 422
    unknown = await _adjust(client, admin, **(ok | {"user_id": "12345", "amount": "1.00"}))
    assert unknown.status_code == 404
    no_reason = await _adjust(client, admin, **(ok | {"reason": "", "amount": "1.00"}))
    assert no_reason.status_code == 422
    missing = await client.post(
        f"{API}/admin/ledger/transfers/12345/reverse",
        json={"reason": "nothing"},
        headers=bearer(admin),
    )
    assert missing.status_code == 404
    forbidden = await client.get(f"{API}/admin/ledger/transfers", headers=bearer(alice))
    assert forbidden.status_code == 403
