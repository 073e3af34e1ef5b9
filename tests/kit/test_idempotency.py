"""The request-level `Idempotency-Key` (kit.idempotency through identity.deps.IdempotentUser and
kit.http.TransactionalRoute), over HTTP on a router that exists only in these tests: its
endpoints move real money in the ledger, so "the work happened once" is a balance and a count
of transfers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import Field
from sqlalchemy import func, select, update

from tests.conftest import API, assert_consistent, bearer, register
from yuntu.app import create_app
from yuntu.identity.deps import DbSession, IdempotentUser
from yuntu.kit import idempotency
from yuntu.kit.db import utcnow
from yuntu.kit.ids import new_id
from yuntu.kit.routing import make_router
from yuntu.kit.schemas import Envelope, Id, Schema
from yuntu.ledger import accounts, transfers
from yuntu.ledger.accounts import system_account, user_account
from yuntu.models.idempotency import IdempotencyRecord
from yuntu.models.ledger import Asset, LedgerTransfer, SystemAccount, TransferType
from yuntu.settings import Settings

pytestmark = pytest.mark.anyio

PATH = f"{API}/_test/idempotency"
HEADER = "Idempotency-Key"


class MoveIn(Schema):
    amount: int = Field(gt=0, le=10**9)
    # True: the ledger key comes from the Idempotency-Key (how real endpoints do it). False: a
    # fresh ledger key every run, so only the request-level record stops a second movement.
    derive: bool = True
    # Seconds the endpoint waits after moving the money, inside its transaction: keeps copies of
    # a request in flight together.
    linger: float = Field(default=0, ge=0, le=1)


class MoveOut(Schema):
    transfer_id: Id
    balance: int


router = make_router(prefix=PATH, tags=["test"])


def ledger_key(auth: Any, kind: str, derive: bool) -> str:
    suffix = auth.idempotency_key if derive and auth.idempotency_key else str(new_id())
    return f"test:{kind}:{auth.user.id}:{suffix}"


@router.post("/credit", status_code=201)
async def credit(body: MoveIn, auth: IdempotentUser, session: DbSession) -> Envelope[MoveOut]:
    moved = await transfers.transfer(
        session,
        key=ledger_key(auth, "credit", body.derive),
        asset=Asset.CNY,
        debit=await system_account(session, SystemAccount.ADJUSTMENTS, Asset.CNY),
        credit=await user_account(session, auth.user.id, Asset.CNY),
        amount=body.amount,
        type=TransferType.ADJUSTMENT,
        system_last=False,
    )
    await asyncio.sleep(body.linger)
    return Envelope(data=MoveOut(transfer_id=moved.id, balance=moved.credit_balance_after))


@router.post("/spend", status_code=201)
async def spend(body: MoveIn, auth: IdempotentUser, session: DbSession) -> Envelope[MoveOut]:
    moved = await transfers.transfer(
        session,
        key=ledger_key(auth, "spend", body.derive),
        asset=Asset.CNY,
        debit=await user_account(session, auth.user.id, Asset.CNY),
        credit=await system_account(session, SystemAccount.REVENUE, Asset.CNY),
        amount=body.amount,
        type=TransferType.CONSUME,
        system_last=True,
    )
    return Envelope(data=MoveOut(transfer_id=moved.id, balance=moved.debit_balance_after))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    application.include_router(router)
    async with LifespanManager(application):
        yield application
        await assert_consistent(application)


async def user(client: httpx.AsyncClient, name: str) -> tuple[dict[str, str], int]:
    tokens = await register(client, name)
    return bearer(tokens), int(tokens["user"]["id"])


async def balance(app: FastAPI, user_id: int) -> int:
    async with app.state.db.read_sessionmaker() as session:
        return (await accounts.balance_of(session, user_id, Asset.CNY))[0]


async def transfer_count(app: FastAPI, user_id: int) -> int:
    async with app.state.db.read_sessionmaker() as session:
        account = await accounts.find_user_account(session, user_id, Asset.CNY)
        count = await session.scalar(
            select(func.count())
            .select_from(LedgerTransfer)
            .where(
                (LedgerTransfer.debit_account_id == account)
                | (LedgerTransfer.credit_account_id == account)
            )
        )
    return int(count or 0)


async def test_without_a_key_every_request_runs(client: httpx.AsyncClient, app: FastAPI) -> None:
    auth, alice = await user(client, "alice")
    for _ in range(2):
        response = await client.post(f"{PATH}/credit", json={"amount": 100}, headers=auth)
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
    assert await balance(app, alice) == 200
    assert await transfer_count(app, alice) == 2


async def test_same_key_same_body_replays_the_first_response(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    auth, alice = await user(client, "alice")
    for n, derive in enumerate((True, False), start=1):
        headers = {**auth, HEADER: f"order-7f3a-{n}"}
        body = {"amount": 250, "derive": derive}
        first = await client.post(f"{PATH}/credit", json=body, headers=headers)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        for _ in range(2):
            again = await client.post(f"{PATH}/credit", json=body, headers=headers)
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
        assert first.json()["data"]["balance"] == 250 * n
        assert await balance(app, alice) == 250 * n
        assert await transfer_count(app, alice) == n


async def test_same_key_with_another_body_or_path_is_refused(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    auth, alice = await user(client, "alice")
    headers = {**auth, HEADER: "k-1"}
    assert (await client.post(f"{PATH}/credit", json={"amount": 100}, headers=headers)).is_success
    for path, body in ((f"{PATH}/credit", {"amount": 101}), (f"{PATH}/spend", {"amount": 100})):
        refused = await client.post(path, json=body, headers=headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
        assert refused.json()["data"] is None
    assert await balance(app, alice) == 100
    assert await transfer_count(app, alice) == 1


async def test_keys_are_scoped_to_the_caller(client: httpx.AsyncClient, app: FastAPI) -> None:
    alice_auth, alice = await user(client, "alice")
    bob_auth, bob = await user(client, "bob")
    mine = await client.post(
        f"{PATH}/credit", json={"amount": 100}, headers={**alice_auth, HEADER: "shared"}
    )
    theirs = await client.post(
        f"{PATH}/credit", json={"amount": 300}, headers={**bob_auth, HEADER: "shared"}
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["data"]["transfer_id"] != theirs.json()["data"]["transfer_id"]
    assert (await balance(app, alice), await balance(app, bob)) == (100, 300)


async def test_an_error_is_not_stored_so_a_retry_can_succeed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    auth, alice = await user(client, "alice")
    headers = {**auth, HEADER: "pay-render-1"}
    short = await client.post(f"{PATH}/spend", json={"amount": 500}, headers=headers)
    assert short.status_code == 402
    assert short.json()["error"] == "INSUFFICIENT_BALANCE"
    async with app.state.db.read_sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
    # The same request again is still refused the same way, not replayed...
    again = await client.post(f"{PATH}/spend", json={"amount": 500}, headers=headers)
    assert again.status_code == 402 and "idempotent-replayed" not in again.headers
    # ...and once the money is there, the same key succeeds and is then remembered.
    assert (await client.post(f"{PATH}/credit", json={"amount": 800}, headers=auth)).is_success
    paid = await client.post(f"{PATH}/spend", json={"amount": 500}, headers=headers)
    assert paid.status_code == 201 and paid.json()["data"]["balance"] == 300
    replay = await client.post(f"{PATH}/spend", json={"amount": 500}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == paid.content
    assert await balance(app, alice) == 300


async def test_a_validation_error_is_not_stored(client: httpx.AsyncClient, app: FastAPI) -> None:
    auth, alice = await user(client, "alice")
    headers = {**auth, HEADER: "v-1"}
    bad = await client.post(f"{PATH}/credit", json={"amount": -5}, headers=headers)
    assert bad.status_code == 422
    good = await client.post(f"{PATH}/credit", json={"amount": 5}, headers=headers)
    assert good.status_code == 201 and "idempotent-replayed" not in good.headers
    assert await balance(app, alice) == 5


async def test_a_malformed_key_is_refused_and_the_longest_is_accepted(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    auth, alice = await user(client, "alice")
    for key in ("has space", "x" * 256, "", "tab\there"):
        response = await client.post(
            f"{PATH}/credit", json={"amount": 100}, headers={**auth, HEADER: key}
        )
        assert response.status_code == 422, (key, response.text)
        assert response.json()["error"] == "VALIDATION_ERROR"
    assert await balance(app, alice) == 0
    # 255 characters, and the ledger key derived from it with a prefix is longer still.
    headers = {**auth, HEADER: "~" * 255}
    first = await client.post(f"{PATH}/credit", json={"amount": 100}, headers=headers)
    again = await client.post(f"{PATH}/credit", json={"amount": 100}, headers=headers)
    assert (first.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
    assert await balance(app, alice) == 100


@pytest.mark.parametrize("derive", [True, False])
async def test_concurrent_requests_with_one_key_do_the_work_once(
    client: httpx.AsyncClient, app: FastAPI, derive: bool
) -> None:
    """Five copies at once. With the derived ledger key the copies collide on the transfer's
    key first (409 IDEMPOTENCY_IN_FLIGHT or the replay); with fresh ledger keys each copy moves
    money in its own transaction and the request record decides: the losers roll back and
    replay the winner's response."""
    auth, alice = await user(client, "alice")
    # The account exists already: the copies meet on its row, not on its creation.
    assert (await client.post(f"{PATH}/credit", json={"amount": 1}, headers=auth)).is_success
    headers = {**auth, HEADER: "double-click"}
    body = {"amount": 700, "derive": derive, "linger": 0.05}
    answers = await asyncio.gather(
        *(client.post(f"{PATH}/credit", json=body, headers=headers) for _ in range(5))
    )
    done = [answer for answer in answers if answer.status_code == 201]
    assert done, [answer.text for answer in answers]
    assert len({answer.content for answer in done}) == 1
    for answer in answers:
        if answer.status_code != 201:
            assert answer.status_code == 409, answer.text
            assert answer.json()["error"] == "IDEMPOTENCY_IN_FLIGHT"
    assert [answer.headers.get("idempotent-replayed") for answer in done].count(None) == 1
    if not derive:  # nothing but the request record can stop them: every copy replays
        assert len(done) == 5
    assert await balance(app, alice) == 701
    assert await transfer_count(app, alice) == 2
    # A client told "in flight" retries and gets the first response.
    retry = await client.post(f"{PATH}/credit", json=body, headers=headers)
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == done[0].content


async def test_prune_forgets_old_keys(client: httpx.AsyncClient, app: FastAPI) -> None:
    auth, alice = await user(client, "alice")
    for key in ("old", "recent"):
        sent = await client.post(
            f"{PATH}/credit", json={"amount": 10}, headers={**auth, HEADER: key}
        )
        assert sent.status_code == 201
    db = app.state.db
    async with db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "old")
            .values(created_at=utcnow() - timedelta(hours=25))
        )
    async with db.transaction() as session:
        hours = app.state.settings.idempotency_retention_hours
        assert await idempotency.prune(session, hours=hours) == 1
    async with db.read_sessionmaker() as session:
        kept = (await session.scalars(select(IdempotencyRecord.key))).all()
    assert kept == ["recent"]
    # A forgotten key is new again: another body with it runs instead of answering 409.
    reused = await client.post(
        f"{PATH}/credit", json={"amount": 20, "derive": False}, headers={**auth, HEADER: "old"}
    )
    assert reused.status_code == 201 and "idempotent-replayed" not in reused.headers
    still = await client.post(
        f"{PATH}/credit", json={"amount": 20}, headers={**auth, HEADER: "recent"}
    )
    assert still.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert await balance(app, alice) == 40
