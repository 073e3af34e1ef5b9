"""Two `yuntu serve` processes sharing Redis both deliver, to their WebSocket clients, an event
published by a separate `yuntu worker` process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import API, free_port
from tests.kit.test_redis_leg import REDIS_URL, _reachable
from tests.support.procs import start_server, start_worker
from yuntu.jobs import service as jobs
from yuntu.kit.db import Database

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def _until_status(ws, job_id: str, status: str) -> list[dict]:
    seen = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        seen.append(event)
        if event.get("data", {}).get("job_id") == job_id and event["data"].get("status") == status:
            return seen


async def test_worker_event_reaches_clients_of_both_servers(db_url, tmp_path):
    if not _reachable(REDIS_URL):
        pytest.skip("Redis unreachable")
    redis = REDIS_URL.rsplit("/", 1)[0] + "/14"
    ports = [free_port(), free_port()]
    servers = [
        start_server(tmp_path, db_url, port, f"serve-{i}", YUNTU_REDIS_URL=redis, YUNTU_WORKERS="0")
        for i, port in enumerate(ports)
    ]
    worker = start_worker(tmp_path, db_url, "worker", YUNTU_REDIS_URL=redis)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as client:
            response = await client.post(
                f"{API}/auth/register", json={"username": "fanout", "password": "correct-horse-42"}
            )
            tokens = response.json()["data"]
        user_id = int(tokens["user"]["id"])
        token = tokens["access_token"]
        async with (
            websockets.connect(f"ws://127.0.0.1:{ports[0]}/ws?token={token}") as first,
            websockets.connect(
                f"ws://127.0.0.1:{ports[1]}/api/v1/ws/tasks?token={token}"
            ) as second,
        ):
            for ws in (first, second):
                assert json.loads(await ws.recv())["type"] == "connected"
            db = Database(db_url)
            try:
                async with db.transaction() as session:
                    job = await jobs.enqueue(
                        session,
                        "test.steps",
                        {"steps": 2, "step_seconds": 0.05},
                        owner_user_id=user_id,
                    )
            finally:
                await db.dispose()
            for ws in (first, second):
                events = await _until_status(ws, str(job.id), "succeeded")
                types = {event["type"] for event in events}
                assert {"task.status", "task.progress", "task.log"} <= types
    finally:
        worker.stop()
        for server in servers:
            server.stop()
