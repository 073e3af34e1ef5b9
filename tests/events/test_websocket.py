"""The WebSocket endpoint over a real socket: authentication, isolation, messages, expiry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
import uvicorn
import websockets

from tests.conftest import API, TEST_SECRET, free_port
from yuntu.app import create_app
from yuntu.identity.tokens import TokenCodec
from yuntu.jobs import service as jobs

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides(request):
    return getattr(request, "param", {})


@pytest.fixture
async def live(settings) -> AsyncIterator[tuple[str, object]]:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws_ping_interval=None
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"127.0.0.1:{port}", app
    server.should_exit = True
    await task


async def _register(host: str, name: str) -> dict:
    async with httpx.AsyncClient(base_url=f"http://{host}") as client:
        response = await client.post(
            f"{API}/auth/register", json={"username": name, "password": "correct-horse-42"}
        )
        assert response.status_code == 201, response.text
        return response.json()["data"]


async def _recv(ws, timeout=3.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _refused(url: str, first_message: str | None = None) -> tuple[int, dict]:
    async with websockets.connect(url) as ws:
        if first_message is not None:
            await ws.send(first_message)
        error = await _recv(ws, 8)
        with pytest.raises(websockets.ConnectionClosed):
            await _recv(ws)
        return ws.close_code, error


async def test_refuses_missing_forged_and_expired_tokens(live):
    host, _app = live
    tokens = await _register(host, "wsuser")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    expired = TokenCodec(TEST_SECRET, 1800, 3600).issue_access(
        int(claims["sub"]), int(claims["sid"]), now=datetime.now(UTC) - timedelta(hours=2)
    )
    forged = jwt.encode(claims, "not-our-key-0123456789abcdef0123456789", algorithm="HS256")
    code, error = await _refused(f"ws://{host}/ws", '{"type": "ping"}')
    assert code == 4001 and error["data"]["error"] == "UNAUTHENTICATED"
    code, error = await _refused(f"ws://{host}/ws?token={forged}")
    assert code == 4001 and error["data"]["error"] == "TOKEN_INVALID"
    code, error = await _refused(f"ws://{host}/ws?token={expired}")
    assert code == 4001 and error["data"]["error"] == "TOKEN_EXPIRED"
    code, _ = await _refused(f"ws://{host}/ws?user_id={claims['sub']}", "not json")
    assert code == 4001  # a user id parameter authenticates nothing


async def test_events_reach_only_their_owner_and_messages_are_handled(live):
    host, app = live
    alice = await _register(host, "alice")
    bob = await _register(host, "bob")
    alice_id, bob_id = int(alice["user"]["id"]), int(bob["user"]["id"])
    async with (
        websockets.connect(f"ws://{host}/ws?token={alice['access_token']}") as a,
        websockets.connect(f"ws://{host}/api/v1/ws/tasks") as b,
    ):
        await b.send(json.dumps({"type": "auth", "token": bob["access_token"]}))
        assert (await _recv(a))["type"] == "connected"
        connected = await _recv(b)
        assert connected["type"] == "connected" and connected["data"]["user_id"] == str(bob_id)

        await a.send("this is not json")
        assert (await _recv(a))["data"]["error"] == "MALFORMED_JSON"
        await a.send(json.dumps({"type": "launch-missiles"}))
        assert (await _recv(a))["data"]["error"] == "UNKNOWN_MESSAGE"
        await a.send(json.dumps({"type": "ping"}))
        assert (await _recv(a))["type"] == "pong"

        await app.state.bus.publish(
            f"user:{alice_id}", {"type": "notification", "data": {"title": "hi alice"}}
        )
        assert (await _recv(a))["data"]["title"] == "hi alice"
        await b.send(json.dumps({"type": "ping"}))
        assert (await _recv(b))["type"] == "pong"  # bob got nothing of alice's

        async with app.state.db.transaction() as session:
            mine = await jobs.enqueue(session, "test.noop", owner_user_id=alice_id)
            other = await jobs.enqueue(session, "test.noop", owner_user_id=alice_id)
            bobs = await jobs.enqueue(session, "test.noop", owner_user_id=bob_id)
        await a.send(json.dumps({"type": "subscribe", "job_id": str(bobs.id)}))
        assert (await _recv(a))["data"]["error"] == "NOT_FOUND"
        await a.send(json.dumps({"type": "subscribe", "job_id": str(mine.id)}))
        assert (await _recv(a))["type"] == "subscribed"
        for job in (other, mine):
            await app.state.bus.publish(
                f"user:{alice_id}",
                {"type": "task.progress", "data": {"job_id": str(job.id), "progress": 50}},
            )
        event = await _recv(a)
        assert event["type"] == "task.progress" and event["data"]["job_id"] == str(mine.id)


async def test_connection_closes_when_the_token_expires(live):
    host, _app = live
    tokens = await _register(host, "shortlived")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    soon = TokenCodec(TEST_SECRET, 1800, 3600).issue_access(
        int(claims["sub"]), int(claims["sid"]), now=datetime.now(UTC) - timedelta(seconds=1798)
    )
    async with websockets.connect(f"ws://{host}/ws?token={soon}") as ws:
        assert (await _recv(ws))["type"] == "connected"
        error = await _recv(ws, 6)
        assert error["data"]["error"] == "TOKEN_EXPIRED"
        with pytest.raises(websockets.ConnectionClosed):
            await _recv(ws)
        assert ws.close_code == 4001


@pytest.mark.parametrize("settings_overrides", [{"ws_recheck_seconds": 0.5}], indirect=True)
async def test_open_socket_closes_when_the_user_is_suspended(live):
    from sqlalchemy import update

    from yuntu.models.identity import User

    host, app = live
    tokens = await _register(host, "tobesuspended")
    async with websockets.connect(f"ws://{host}/ws?token={tokens['access_token']}") as ws:
        assert (await _recv(ws))["type"] == "connected"
        async with app.state.db.transaction() as session:
            await session.execute(update(User).values(status="suspended"))
        error = await _recv(ws, 5)
        assert error["data"]["error"] == "ACCOUNT_DISABLED"
        with pytest.raises(websockets.ConnectionClosed):
            await _recv(ws)
        assert ws.close_code == 4001
