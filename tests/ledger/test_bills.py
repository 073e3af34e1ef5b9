"""Bills: open against a hold, charge lines (one beyond the hold), idempotent keys, close
(the hold's rest released), direct charges without a hold, and GET /users/bills."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import API
from tests.ledger.test_recharge import balance, fails, fund, login, ok
from yuntu.kit.errors import AppError
from yuntu.ledger import bills, holds
from yuntu.ledger.transfers import Reference
from yuntu.models.ledger import Asset, HoldStatus

pytestmark = pytest.mark.anyio


async def _bill_with_hold(app: Any, user_id: int, task: int, held: int) -> tuple[int, int]:
    async with app.state.db.transaction() as session:
        reference = Reference("render_task", task)
        hold = await holds.place(
            session,
            key=f"task:{task}:estimate",
            user_id=user_id,
            asset=Asset.CNY,
            amount=held,
            expires_in=timedelta(hours=1),
            reference=reference,
        )
        bill = await bills.open_bill(
            session,
            user_id=user_id,
            asset=Asset.CNY,
            title=f"Render task {task}",
            reference=reference,
            hold_id=hold.id,
        )
        return bill.id, hold.id


async def _charge(app: Any, bill_id: int, amount: int, key: str, quantity: int) -> list[int]:
    async with app.state.db.transaction() as session:
        bill = await session.get(bills.Bill, bill_id)
        lines = await bills.charge(
            session,
            bill,
            amount,
            key=key,
            description=f"frames ({key})",
            quantity=quantity,
            unit="frame",
            details={"key": key},
        )
        return [line.amount for line in lines]


async def _close(app: Any, bill_id: int) -> str:
    async with app.state.db.transaction() as session:
        bill = await session.get(bills.Bill, bill_id)
        closed = await bills.close_bill(session, bill)
        return closed.status


async def _hold(app: Any, hold_id: int) -> Any:
    async with app.state.db.read_sessionmaker() as session:
        return await holds.get(session, hold_id)


async def test_bill_lifecycle_and_listing(client: httpx.AsyncClient, app: Any) -> None:
    alice, alice_id = await login(client, "alice")
    bob, _ = await login(client, "bob")
    await fund(client, alice, "100.00")

    # Task 1: 30.00 held; 10.00 then 25.00 charged: 5.00 of it beyond the hold.
    first, first_hold = await _bill_with_hold(app, alice_id, 1, 3000)
    assert await _charge(app, first, 1000, "f1-10", 10) == [1000]
    assert await _charge(app, first, 2500, "f11-35", 25) == [2000, 500]
    assert await _charge(app, first, 2500, "f11-35", 25) == [2000, 500]  # same key: nothing new
    assert (await _hold(app, first_hold)).status == HoldStatus.CAPTURED
    assert await _close(app, first) == "closed"
    # Task 2: 40.00 held, 15.00 charged, closed: 25.00 goes back.
    second, second_hold = await _bill_with_hold(app, alice_id, 2, 4000)
    assert await _charge(app, second, 1500, "f1-15", 15) == [1500]
    assert (await balance(client, alice))["held"] == "25.00"
    assert await _close(app, second) == "closed"
    assert await _close(app, second) == "closed"  # again: nothing more
    released = await _hold(app, second_hold)
    assert (released.status, released.captured, released.released) == ("released", 1500, 2500)
    with pytest.raises(AppError) as closed:
        await _charge(app, second, 100, "late", 1)
    assert closed.value.spec.name == "INVALID_STATE"
    # Task 3: no hold, a direct charge; still open. Opening it again finds the same bill.
    async with app.state.db.transaction() as session:
        third = await bills.open_bill(
            session,
            user_id=alice_id,
            asset=Asset.CNY,
            title="Preview",
            reference=Reference("render_task", 3),
        )
        again = await bills.open_bill(
            session,
            user_id=alice_id,
            asset=Asset.CNY,
            title="Other",
            reference=Reference("render_task", 3),
        )
        assert again.id == third.id and again.title == "Preview"
        third_id = third.id
    assert await _charge(app, third_id, 700, "preview", 1) == [700]
    with pytest.raises(AppError) as short:
        await _charge(app, third_id, 100_000, "too-much", 1)
    assert short.value.spec.name == "INSUFFICIENT_BALANCE"
    # 100 - 10 - 25 - 15 - 7 = 43
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "43.00",
        "held": "0.00",
        "total": "43.00",
    }

    url = f"{API}/users/bills"
    listing = ok(await client.get(url, headers=alice))
    assert listing["total"] == 3 and listing["pages"] == 1
    by_title = {bill["title"]: bill for bill in listing["items"]}
    assert [bill["title"] for bill in listing["items"]] == [
        "Preview",
        "Render task 2",
        "Render task 1",
    ]
    task1 = by_title["Render task 1"]
    assert (task1["status"], task1["total"], task1["currency"]) == ("closed", "35.00", "CNY")
    assert task1["closed_at"] is not None
    assert (task1["reference_type"], task1["reference_id"]) == ("render_task", "1")
    assert [
        (line["description"], line["quantity"], line["unit"], line["amount"])
        for line in task1["lines"]
    ] == [
        ("frames (f1-10)", 10, "frame", "10.00"),
        ("frames (f11-35)", 25, "frame", "20.00"),
        ("frames (f11-35) (beyond the hold)", 0, "frame", "5.00"),
    ]
    assert by_title["Render task 2"]["total"] == "15.00"
    preview = by_title["Preview"]
    assert (preview["status"], preview["total"], preview["closed_at"]) == ("open", "7.00", None)
    assert len(preview["lines"]) == 1
    for bill in listing["items"]:
        cents = sum(int(line["amount"].replace(".", "")) for line in bill["lines"])
        assert cents == int(bill["total"].replace(".", ""))

    open_only = ok(await client.get(url, headers=alice, params={"status": "open"}))
    assert [bill["title"] for bill in open_only["items"]] == ["Preview"]
    closed_only = ok(await client.get(url, headers=alice, params={"status": "closed"}))
    assert closed_only["total"] == 2
    second_page = ok(await client.get(url, headers=alice, params={"page": 2, "page_size": 1}))
    assert [bill["title"] for bill in second_page["items"]] == ["Render task 2"]
    assert second_page["pages"] == 3
    fails(await client.get(url, headers=alice, params={"status": "paid"}), 422, "VALIDATION_ERROR")
    assert ok(await client.get(url, headers=bob))["total"] == 0

    # The lines of a page come in one query: a page of 3 bills costs what a page of 1 does.
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = app.state.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        costs = []
        for size in (1, 3):
            statements.clear()
            ok(await client.get(url, headers=alice, params={"page_size": size}))
            costs.append(len([s for s in statements if "bill" in s.lower()]))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert costs[0] == costs[1] == 3, costs  # count, page of bills, their lines
