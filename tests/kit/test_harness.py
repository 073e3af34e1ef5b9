"""The request harness owns the transaction, and logs never carry secrets."""

from __future__ import annotations

import json

import pytest
from fastapi import Depends
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import API, register
from yuntu.kit.errors import AppError, E
from yuntu.kit.http import TransactionalRoute, get_db_session
from yuntu.models.audit import AuditEntry

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides() -> dict:
    return {"log_level": "INFO"}


def _add_routes(app) -> None:
    async def write(fail: str = "no", session: AsyncSession = Depends(get_db_session)) -> dict:
        session.add(AuditEntry(action="probe", target_type="test"))
        await session.flush()
        if fail == "app":
            raise AppError(E.CONFLICT)
        if fail == "crash":
            raise RuntimeError("boom")
        if fail == "keep":
            raise AppError(E.CONFLICT, commit=True)
        return {"ok": True}

    app.router.routes.append(TransactionalRoute("/probe-write", write, methods=["POST"]))


async def _count(app) -> int:
    async with app.state.db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(AuditEntry))


async def test_commit_on_success_rollback_on_error(app, client):
    _add_routes(app)
    assert (await client.post("/probe-write")).status_code == 200
    assert await _count(app) == 1
    assert (await client.post("/probe-write?fail=app")).status_code == 409
    assert (await client.post("/probe-write?fail=crash")).status_code == 500
    assert await _count(app) == 1  # neither failed request left its row behind
    assert (await client.post("/probe-write?fail=keep")).status_code == 409
    assert await _count(app) == 2  # an error that asks to keep its writes does


async def test_logs_are_json_and_never_carry_secrets(client, capfd):
    password = "Sup3r-Secret-Pass"
    tokens = await register(client, "logcheck", password=password)
    await client.post(f"{API}/auth/login", json={"username": "logcheck", "password": password})
    await client.post(
        f"{API}/auth/login", json={"username": "logcheck", "password": "wrong-" + password}
    )
    await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await client.get(
        f"{API}/auth/me",
        headers={"Authorization": f"Bearer {tokens['access_token']}", "X-Request-ID": "log-req-1"},
    )
    output = capfd.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert requests, output
    me = [line for line in requests if line.get("request_id") == "log-req-1"]
    assert me and me[0]["status"] == 200 and me[0]["path"] == f"{API}/auth/me"
    assert me[0]["user_id"] == tokens["user"]["id"] and me[0]["duration_ms"] >= 0
    for secret in (password, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in output
