"""GET /users/transactions: signs and balance-after of every kind of movement, pagination,
type and time filters; the same statement service over points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import API
from tests.ledger.test_recharge import balance, fails, fund, login, ok
from yuntu.kit.db import utcnow
from yuntu.kit.schemas import PageParams
from yuntu.ledger import bills, holds, rewards, statements
from yuntu.ledger.transfers import Reference
from yuntu.models.ledger import Asset

pytestmark = pytest.mark.anyio


async def _spend(app: Any, user_id: int) -> None:
    """A hold of 30.00 of which 10.00 is captured and 20.00 released, then a direct 12.34."""
    async with app.state.db.transaction() as session:
        hold = await holds.place(
            session,
            key="statement-hold",
            user_id=user_id,
            asset=Asset.CNY,
            amount=3000,
            expires_in=timedelta(hours=1),
            reference=Reference("render_task", 7),
            description="render estimate",
        )
    async with app.state.db.transaction() as session:
        await holds.capture(session, hold.id, 1000, key="statement-capture")
        await holds.release(session, hold.id)
    async with app.state.db.transaction() as session:
        bill = await bills.open_bill(
            session,
            user_id=user_id,
            asset=Asset.CNY,
            title="thumbnail",
            reference=Reference("render_task", 8),
        )
        await bills.charge(session, bill, 1234, key="thumb", description="thumbnail frames")


async def test_statement_signs_pages_and_filters(client: httpx.AsyncClient, app: Any) -> None:
    alice, alice_id = await login(client, "alice")
    bob, _ = await login(client, "bob")
    await fund(client, alice, "100.00")
    await fund(client, alice, "50.00")
    middle = utcnow()
    await _spend(app, alice_id)
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "127.66",
        "held": "0.00",
        "total": "127.66",
    }

    url = f"{API}/users/transactions"
    everything = ok(await client.get(url, headers=alice, params={"page_size": 100}))
    assert everything["total"] == 5 and everything["pages"] == 1
    rows = [(i["type"], i["amount"], i["balance_after"]) for i in everything["items"]]
    assert rows == [  # newest first; the capture moved money between system accounts only
        ("consume", "-12.34", "127.66"),
        ("release", "20.00", "140.00"),
        ("hold", "-30.00", "120.00"),
        ("recharge", "50.00", "150.00"),
        ("recharge", "100.00", "100.00"),
    ]
    hold_row = everything["items"][2]
    assert hold_row["reference_type"] == "render_task" and hold_row["reference_id"] == "7"
    assert hold_row["description"] == "render estimate"
    assert hold_row["created_at"].endswith("Z") and isinstance(hold_row["id"], str)
    # The amounts add up to the balance.
    assert sum(int(row[1].replace(".", "")) for row in rows) == 12766

    pages = [
        ok(await client.get(url, headers=alice, params={"page": n, "page_size": 2}))
        for n in (1, 2, 3)
    ]
    assert [p["pages"] for p in pages] == [3, 3, 3] and [p["total"] for p in pages] == [5, 5, 5]
    paged = [item for page in pages for item in page["items"]]
    assert [i["id"] for i in paged] == [i["id"] for i in everything["items"]]
    beyond = ok(await client.get(url, headers=alice, params={"page": 4, "page_size": 2}))
    assert beyond["items"] == [] and beyond["total"] == 5

    async def listing(params: Any) -> dict[str, Any]:
        return ok(await client.get(url, headers=alice, params=params))  # type: ignore[no-any-return]

    async def kinds(params: Any) -> list[str]:
        return [item["type"] for item in (await listing(params))["items"]]

    today = datetime.now(UTC).date()
    assert await kinds({"type": "recharge"}) == ["recharge", "recharge"]
    both = [("type", "recharge"), ("type", "consume")]
    assert await kinds(both) == ["consume", "recharge", "recharge"]
    assert await kinds({"from": middle.isoformat()}) == ["consume", "release", "hold"]
    until_middle = {"to": middle.isoformat().replace("+00:00", "Z")}
    assert await kinds(until_middle) == ["recharge", "recharge"]
    assert await kinds({"type": "hold", "from": middle.isoformat()}) == ["hold"]
    whole_day = {"from": today.isoformat(), "to": today.isoformat()}  # `to` includes the day
    assert (await listing(whole_day))["total"] == 5
    assert (await listing({"to": (today - timedelta(days=1)).isoformat()}))["total"] == 0
    assert (await listing({"from": (today + timedelta(days=1)).isoformat()}))["total"] == 0

    for bad in (
        {"from": "2026-13-01"},
        {"from": "2026-11-01T10:00:00"},  # no offset
        {"to": "yesterday"},
    ):
        refused = fails(await client.get(url, headers=alice, params=bad), 422, "VALIDATION_ERROR")
        assert refused["details"][0]["field"] == f"query.{next(iter(bad))}"
    fails(await client.get(url, headers=alice, params={"type": "gift"}), 422, "VALIDATION_ERROR")
    # Bob never moved money: an empty statement, and none of Alice's rows.
    assert ok(await client.get(url, headers=bob)) == {
        "items": [],
        "total": 0,
        "page": 1,
        "page_size": 20,
        "pages": 0,
    }


async def test_statement_is_generic_over_assets(client: httpx.AsyncClient, app: Any) -> None:
    alice, alice_id = await login(client, "alice")
    await fund(client, alice, "1.00")
    async with app.state.db.transaction() as session:
        await rewards.grant(
            session, user_id=alice_id, week="2026-W48", points=2000, subscription_id=None
        )
        await rewards.grant(
            session, user_id=alice_id, week="2026-W49", points=2000, subscription_id=None
        )
    async with app.state.db.read_sessionmaker() as session:
        points, total = await statements.list_movements(
            session, alice_id, Asset.POINTS, PageParams(page=1, page_size=10)
        )
        cash, cash_total = await statements.list_movements(
            session, alice_id, Asset.CNY, PageParams(page=1, page_size=10), types=["reward"]
        )
    assert total == 2 and [(m.type, m.amount, m.balance_after) for m in points] == [
        ("reward", 2000, 4000),
        ("reward", 2000, 2000),
    ]
    assert points[0].description == "weekly subscriber reward 2026-W49"
    assert (cash, cash_total) == ([], 0)
    statement = ok(await client.get(f"{API}/users/transactions", headers=alice))
    assert [i["type"] for i in statement["items"]] == ["recharge"]
