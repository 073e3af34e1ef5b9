"""Render events on /ws over a real socket: a task's owner subscribes to it and sees
task.status (pause, resume, rendering, completed), task.log and task.progress as an agent plays
the real agent API; another user can neither subscribe to the task nor receive its events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from tests.conftest import API, assert_consistent, bearer, free_port, make_admin, register
from yuntu.app import create_app
from yuntu.settings import Settings

from .task_helpers import PRICING, funded, ok, scene, task_body

pytestmark = pytest.mark.anyio

WAIT_SECONDS = 5.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(PRICING)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[tuple[str, FastAPI]]:
    """The app served by uvicorn on a free loopback port (WebSockets need a real socket)."""
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
    try:
        yield f"127.0.0.1:{port}", app
        await assert_consistent(app)
    finally:
        server.should_exit = True
        await task


class Socket:
    """One client's /ws connection; remembers messages it has not been asked for yet, so an
    expected event is found whatever order unrelated ones came in."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.unread: list[dict[str, Any]] = []
        self.everything: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def expect(
        self, kind: str, match: Callable[[dict[str, Any]], bool] = lambda _data: True
    ) -> dict[str, Any]:
        """The first message of type `kind` whose data satisfies `match`."""
        for message in self.unread:
            if message["type"] == kind and match(message.get("data") or {}):
                self.unread.remove(message)
                return message
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                message = json.loads(await self.ws.recv())
                self.everything.append(message)
                if message["type"] == kind and match(message.get("data") or {}):
                    return message
                self.unread.append(message)


async def connect(host: str, tokens: dict[str, Any]) -> Any:
    ws = await websockets.connect(f"ws://{host}/ws?token={tokens['access_token']}")
    socket = Socket(ws)
    assert (await socket.expect("connected"))["data"]["user_id"] == tokens["user"]["id"]
    return socket


def of_task(task_id: str, **expected: Any) -> Callable[[dict[str, Any]], bool]:
    def match(data: dict[str, Any]) -> bool:
        return data.get("task_id") == task_id and all(
            data.get(key) == value for key, value in expected.items()
        )

    return match


async def test_owner_sees_status_log_and_progress_and_nobody_else_does(
    live: tuple[str, FastAPI],
) -> None:
    host, app = live
    async with httpx.AsyncClient(base_url=f"http://{host}") as client:
        alice, bob = await register(client, "alice"), await register(client, "bob")
        admin = await make_admin(client, app)
        owner = bearer(alice)
        await funded(client, owner, "1.00")
        body = task_body(await scene(client, owner), frames="1-2", chunk_size=1)
        task = ok(await client.post(f"{API}/tasks", json=body, headers=owner), 201)
        task_id = task["id"]
        assert task["status"] == "queued"

        a, b = await connect(host, alice), await connect(host, bob)
        try:
            await b.send({"type": "subscribe", "task_id": task_id})
            refused = await b.expect("error")
            assert refused["data"]["error"] == "NOT_FOUND"
            await a.send({"type": "subscribe", "task_id": task_id})
            assert (await a.expect("subscribed"))["data"] == {"task_id": task_id}

            # the user's own moves
            ok(await client.put(f"{API}/tasks/{task_id}/pause", headers=owner))
            paused = await a.expect("task.status", of_task(task_id, status="paused"))
            assert paused["data"]["kind"] == "render"
            assert paused["data"]["previous"] == "queued"
            assert paused["data"]["paused_reason"] == "user"
            ok(await client.put(f"{API}/tasks/{task_id}/resume", headers=owner))
            await a.expect("task.status", of_task(task_id, status="queued", previous="paused"))

            # an agent through the real agent API
            created = ok(
                await client.post(
                    f"{API}/admin/render/agents", json={"name": "node-01"}, headers=bearer(admin)
                ),
                201,
            )
            node = {"Authorization": f"Bearer {created['token']}"}
            registration = {"hostname": "node-01", "renderers": ["blender"], "slots": 2}
            ok(await client.post(f"{API}/agents/register", json=registration, headers=node))
            claimed = ok(await client.post(f"{API}/agents/claim", json={"limit": 2}, headers=node))
            frames = claimed["frames"]
            assert sorted(f["frames"] for f in frames) == [[1], [2]]
            await a.expect("task.status", of_task(task_id, status="rendering"))
            running = await a.expect("task.progress", of_task(task_id))
            assert running["data"]["frames"]["running"] == 2

            for done, frame in enumerate(frames, start=1):
                number = frame["frames"][0]
                lines = [
                    {"level": "info", "line": f"Fra:{number} Mem:12.00M | Rendering 1 / 8 samples"},
                    {"level": "warning", "line": f"frame {number}: low memory"},
                ]
                logged = await client.post(
                    f"{API}/agents/frames/{frame['frame_id']}/log",
                    json={"attempt": frame["attempt"], "lines": lines},
                    headers=node,
                )
                assert ok(logged) == {"stop": False}
                log = await a.expect("task.log", of_task(task_id, frame_id=frame["frame_id"]))
                assert log["data"]["lines"] == lines

                report = {
                    "attempt": frame["attempt"],
                    "outcome": "succeeded",
                    "exit_code": 0,
                    "duration_ms": 1200,
                    "core_seconds": 3.0,
                }
                finish = await client.post(
                    f"{API}/agents/frames/{frame['frame_id']}/finish", json=report, headers=node
                )
                # PRICING: 1 fen per core-second at priority 50
                assert ok(finish) == {
                    "frame_status": "succeeded",
                    "agent_blocked": False,
                    "cost": "0.03",
                }
                progress = await a.expect(
                    "task.progress",
                    lambda data, done=done: (
                        data.get("task_id") == task_id and data["frames"]["succeeded"] == done
                    ),
                )
                assert progress["data"]["kind"] == "render"
                assert progress["data"]["frames"] == {
                    "waiting": 0,
                    "running": 2 - done,
                    "succeeded": done,
                    "failed": 0,
                    "cancelled": 0,
                }
                assert progress["data"]["cost"] == f"0.0{3 * done}"
                assert progress["data"]["progress"] == done / 2

            completed = await a.expect("task.status", of_task(task_id, status="completed"))
            assert completed["data"]["previous"] == "rendering"
            detail = ok(await client.get(f"{API}/tasks/{task_id}", headers=owner))
            assert (detail["status"], detail["cost"]) == ("completed", "0.06")

            # bob heard nothing of alice's task: everything before his pong is his own
            await b.send({"type": "ping"})
            await b.expect("pong")
            leaked = [m for m in b.everything if (m.get("data") or {}).get("task_id") == task_id]
            assert leaked == []
        finally:
            await a.ws.close()
            await b.ws.close()
