"""The agent protocol over HTTP (docs/render-agents.md): authentication, register, claim order
and limits, assignments with a signed scene link, heartbeats, fenced log lines, finishing with
the retry and blocklist rules, the lease sweep, the lease job, and hostile input."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from tests.conftest import API, bearer, make_admin
from yuntu.jobs import cron, service
from yuntu.jobs.worker import Worker
from yuntu.models.drive import Blob
from yuntu.models.jobs import Job
from yuntu.models.render import FrameTask, RenderAgent, RenderLog, RenderTask
from yuntu.render import jobs as render_jobs
from yuntu.storage import blobs

from .conftest import load, make_task, make_user

pytestmark = pytest.mark.anyio

FREE = {"render_price_fen_per_core_hour": 0, "render_minimum_fen_per_frame": 0}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FREE)


# -- helpers -----------------------------------------------------------------------------------
def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == 0
    return body["data"]


def refused(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["data"] is None and body["code"] // 1000 == status
    return body  # type: ignore[no-any-return]


@dataclass
class Agent:
    client: httpx.AsyncClient
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def post(self, path: str, body: Any) -> httpx.Response:
        # ASCII JSON: a lone surrogate travels as its escape, as a hostile client may send it
        return await self.client.post(
            f"{API}/agents{path}",
            content=json.dumps(body).encode(),
            headers={**self.headers, "Content-Type": "application/json"},
        )

    async def register(self, renderers: list[str] | None = None, slots: int = 4) -> Any:
        body = {"hostname": "node", "renderers": renderers or ["blender"], "slots": slots}
        return ok(await self.post("/register", {**body, "version": "1.0"}))

    async def claim(self, limit: int = 16, **extra: Any) -> list[dict[str, Any]]:
        return ok(await self.post("/claim", {"limit": limit, **extra}))["frames"]  # type: ignore[no-any-return]

    async def finish(self, frame: dict[str, Any], outcome: str = "succeeded", **extra: Any) -> Any:
        body = {"attempt": frame["attempt"], "outcome": outcome, "exit_code": 0, **extra}
        return await self.post(f"/frames/{frame['frame_id']}/finish", body)

    async def heartbeat(self, *running: tuple[str, int]) -> Any:
        body = {"running": [{"frame_id": f, "attempt": a} for f, a in running]}
        return ok(await self.post("/heartbeat", body))

    async def log(self, frame: dict[str, Any], lines: list[Any], attempt: int | None = None) -> Any:
        body = {"attempt": attempt or frame["attempt"], "lines": lines}
        return await self.post(f"/frames/{frame['frame_id']}/log", body)


@dataclass
class Farm:
    app: FastAPI
    client: httpx.AsyncClient
    admin: dict[str, Any]
    owner: int

    async def agent(self, name: str = "node", renderers: list[str] | None = None, slots: int = 4):
        created = ok(
            await self.client.post(
                f"{API}/admin/render/agents", json={"name": name}, headers=bearer(self.admin)
            ),
            201,
        )
        agent = Agent(self.client, created["id"], created["token"])
        await agent.register(renderers, slots)
        return agent

    async def task(self, content: bytes | None = None, name: str = "shot", **fields: Any) -> int:
        """A task (conftest.make_task) whose scene blob holds real bytes in the store."""
        db = self.app.state.db
        task_id = await make_task(db, self.owner, **fields)
        store = self.app.state.storage
        data = content or secrets.token_bytes(48)

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        staged = await blobs.ingest(store, chunks())
        key = await store.adopt(staged.key, staged.sha256)
        async with db.transaction() as session:
            task = await session.get_one(RenderTask, task_id)
            task.name = name
            blob = await session.get_one(Blob, task.scene_blob_id)
            blob.storage_key, blob.sha256, blob.md5, blob.size = (
                key,
                staged.sha256,
                staged.md5,
                staged.size,
            )
        return task_id

    async def frame(self, frame_id: str | int) -> FrameTask:
        return await load(self.app.state.db, FrameTask, int(frame_id))  # type: ignore[no-any-return]

    async def task_row(self, task_id: int) -> RenderTask:
        return await load(self.app.state.db, RenderTask, task_id)  # type: ignore[no-any-return]

    async def expire(self, frame_id: str) -> None:
        async with self.app.state.db.transaction() as session:
            await session.execute(
                update(FrameTask)
                .where(FrameTask.id == int(frame_id))
                .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )


async def open_farm(app: FastAPI, client: httpx.AsyncClient) -> Farm:
    admin = await make_admin(client, app)
    return Farm(app, client, admin, await make_user(app.state.db, "owner"))


@pytest.fixture
async def farm(app: FastAPI, client: httpx.AsyncClient) -> Farm:
    return await open_farm(app, client)


# -- authentication ----------------------------------------------------------------------------
async def test_agent_calls_need_a_live_agent_token(farm: Farm) -> None:
    client = farm.client
    body = {"limit": 1}
    refused(await client.post(f"{API}/agents/claim", json=body), 401, "UNAUTHENTICATED")
    for header in (
        "Bearer nonsense",
        "Bearer yta_00000000_" + "x" * 43,  # well formed, unknown
        "Bearer yta_" + "x" * 500,
        "Basic dXNlcjpwYXNz",
        f"Bearer {farm.admin['access_token']}",  # a user's token is not an agent's
    ):
        response = await client.post(
            f"{API}/agents/heartbeat", json={"running": []}, headers={"Authorization": header}
        )
        assert response.status_code == 401, (header, response.text)
        assert response.json()["error"] in ("TOKEN_INVALID", "UNAUTHENTICATED")
    agent = await farm.agent()
    assert await agent.heartbeat() == {"extended": [], "stop": []}


async def test_register_normalizes_and_answers_the_timings(farm: Farm) -> None:
    agent = await farm.agent("n1")
    answer = await agent.register([" Blender ", "MAYA/Arnold", "blender", "kick"], slots=3)
    assert answer == {
        "agent_id": agent.id,
        "name": "n1",
        "lease_seconds": 60,
        "heartbeat_seconds": 10,
        "poll_seconds": 2.0,
        "claim_wait_seconds": 10.0,
    }
    row = await load(farm.app.state.db, RenderAgent, int(agent.id))
    assert row.renderers == ["blender", "maya/arnold", "kick"]
    assert (row.slots, row.hostname, row.status) == (3, "node", "active")
    assert row.last_heartbeat_at is not None
    for renderers in (
        ["blender;rm -rf"],
        ["a/b/c"],
        [""],
        ["x" * 33],
        ["Блендер"],
        [f"r{i}" for i in range(33)],
        "blender",
    ):
        response = await agent.post("/register", {"renderers": renderers, "slots": 1})
        refused(response, 422, "VALIDATION_ERROR")
    for slots in (0, -1, 65, "many", 10**30):
        response = await agent.post("/register", {"renderers": ["blender"], "slots": slots})
        refused(response, 422, "VALIDATION_ERROR")
    response = await agent.post(
        "/register", {"renderers": ["blender"], "slots": 1, "hostname": "a\x00b"}
    )
    refused(response, 422, "VALIDATION_ERROR")
    # an unknown field from a newer agent is ignored
    ok(await agent.post("/register", {"renderers": ["blender"], "slots": 1, "gpu": "rtx"}))


# -- claims ------------------------------------------------------------------------------------
async def test_claim_order_limit_and_the_assignment(farm: Farm) -> None:
    scene = b"BLENDER-v300 " + secrets.token_bytes(64)
    old = await farm.task(spec="1-4", chunk_size=2, name="old")
    urgent = await farm.task(content=scene, spec="7-9", chunk_size=2, priority=90, name="urgent")
    await farm.task(spec="1-2", chunk_size=1, status="paused")
    await farm.task(spec="1-2", chunk_size=1, software="maya")
    agent = await farm.agent(slots=3)

    got = await agent.claim(limit=16)  # never more than its slots
    assert [(int(a["task_id"]), a["frames"]) for a in got] == [
        (urgent, [7, 8]),
        (urgent, [9]),
        (old, [1, 2]),
    ]
    first = got[0]
    assert set(first) == {
        "frame_id",
        "attempt",
        "task_id",
        "task_name",
        "software",
        "software_version",
        "renderer",
        "frames",
        "width",
        "height",
        "camera",
        "output_format",
        "scene",
        "lease_expires_at",
    }
    assert first["attempt"] == 1 and first["task_id"] == str(urgent)
    assert (first["software"], first["renderer"], first["output_format"]) == (
        "blender",
        "cycles",
        "PNG",
    )
    assert (first["width"], first["height"], first["camera"]) == (64, 36, None)
    lease = datetime.fromisoformat(first["lease_expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=50) < lease - datetime.now(UTC) <= timedelta(seconds=61)
    assert first["scene"]["name"] == "scene.blend" and first["scene"]["size"] == len(scene)
    # the signed link needs no credential and serves the scene's bytes
    download = await farm.client.get(first["scene"]["url"])
    assert download.status_code == 200 and download.content == scene
    assert first["scene"]["sha256"] == download.headers["etag"].strip('"')
    url = first["scene"]["url"]
    tampered = url[:-1] + ("1" if url.endswith("0") else "0")  # the signature comes last
    assert (await farm.client.get(tampered)).status_code == 403

    assert (await farm.task_row(urgent)).status == "rendering"
    assert len(await agent.claim(limit=1)) == 1  # the last frame of the old task
    assert await agent.claim() == []  # nothing left that it runs


async def test_claim_narrowed_by_renderers_and_refused_limits(farm: Farm) -> None:
    await farm.task(spec="1", chunk_size=1, software="maya")
    agent = await farm.agent(renderers=["blender", "maya/cycles"])
    assert await agent.claim(renderers=["blender"]) == []
    assert await agent.claim(renderers=["houdini"]) == []  # not registered: offers nothing
    for limit in (0, -1, 17, 10**12, "all", None):
        refused(await agent.post("/claim", {"limit": limit}), 422, "VALIDATION_ERROR")
    refused(await agent.post("/claim", {"renderers": ["../x"]}), 422, "VALIDATION_ERROR")
    (frame,) = await agent.claim(renderers=["MAYA/cycles"])
    assert frame["software"] == "maya"


async def test_a_disabled_agent_claims_nothing_but_heartbeats_and_finishes(farm: Farm) -> None:
    task_id = await farm.task(spec="1-2", chunk_size=1)
    agent = await farm.agent()
    (frame,) = await agent.claim(limit=1)
    ok(
        await farm.client.post(
            f"{API}/admin/render/agents/{agent.id}/disable", headers=bearer(farm.admin)
        )
    )
    assert await agent.claim() == []
    assert (await agent.heartbeat((frame["frame_id"], 1)))["extended"] == [frame["frame_id"]]
    assert ok(await agent.finish(frame))["frame_status"] == "succeeded"
    assert (await agent.register())["agent_id"] == agent.id  # registering keeps it disabled
    assert await agent.claim() == []
    assert (await farm.task_row(task_id)).frames_waiting == 1


# -- heartbeats and logs -----------------------------------------------------------------------
async def test_heartbeat_extends_held_leases_and_stops_the_rest(farm: Farm) -> None:
    await farm.task(spec="1-2", chunk_size=1)
    agent, other = await farm.agent("a"), await farm.agent("b")
    (mine,) = await agent.claim(limit=1)
    (theirs,) = await other.claim(limit=1)
    await farm.expire(mine["frame_id"])  # expired, but not yet swept: a heartbeat keeps it
    before = (await farm.frame(mine["frame_id"])).lease_expires_at
    beat = await agent.heartbeat(
        (mine["frame_id"], 1), (theirs["frame_id"], 1), ("12345", 1), (mine["frame_id"], 1)
    )
    assert beat == {"extended": [mine["frame_id"]], "stop": sorted([theirs["frame_id"], "12345"])}
    assert (await farm.frame(mine["frame_id"])).lease_expires_at > before + timedelta(seconds=30)
    stale = await agent.heartbeat((mine["frame_id"], 2))  # not this frame's attempt
    assert stale == {"extended": [], "stop": [mine["frame_id"]]}
    refused(
        await agent.post("/heartbeat", {"running": [{"frame_id": "1", "attempt": 1}] * 1025}),
        422,
        "VALIDATION_ERROR",
    )


async def test_log_lines_are_fenced_cleaned_stored_and_published(farm: Farm) -> None:
    task_id = await farm.task(spec="1-2", chunk_size=1)
    agent, other = await farm.agent("a"), await farm.agent("b")
    (frame,) = await agent.claim(limit=1)
    (theirs,) = await other.claim(limit=1)
    subscription = farm.app.state.bus.subscribe(f"user:{farm.owner}")
    try:
        lines = [
            {"level": "INFO", "line": "Fra:1 Mem:12.00M | Rendering 1 / 64 samples"},
            {"level": "warn", "line": "x" * 5000},
            {"level": "shout", "line": "bell\x07 nul\x00 esc\x1b[31m tab\tend"},
            {"line": "no level"},
        ]
        assert ok(await agent.log(frame, lines)) == {"stop": False}
        event = await asyncio.wait_for(subscription.get(), 2)
    finally:
        subscription.close()
    assert event["type"] == "task.log" and event["data"]["frame_id"] == frame["frame_id"]
    assert event["data"]["task_id"] == str(task_id) and len(event["data"]["lines"]) == 4
    async with farm.app.state.db.read_sessionmaker() as session:
        stored = (await session.scalars(select(RenderLog).order_by(RenderLog.id))).all()
    assert [row.level for row in stored] == ["info", "warning", "info", "info"]
    assert len(stored[1].line) == 4000
    assert stored[2].line == "bell  nul  esc [31m tab\tend"
    assert stored[3].line == "no level"
    assert {(row.task_id, row.frame_id, row.attempt) for row in stored} == {
        (task_id, int(frame["frame_id"]), 1)
    }
    assert all(row.agent_id == int(agent.id) for row in stored)

    refused(await agent.log(frame, [], attempt=2), 409, "INVALID_STATE")  # not its attempt
    refused(await agent.log(theirs, []), 409, "INVALID_STATE")  # another agent's frame
    missing = {"frame_id": "99999999", "attempt": 1}
    refused(await agent.log(missing, []), 404, "NOT_FOUND")
    too_many = [{"line": "x"}] * 501
    refused(await agent.log(frame, too_many), 422, "VALIDATION_ERROR")
    surrogate = [{"line": "lone \ud800"}]  # not text: refused, never stored
    refused(await agent.log(frame, surrogate), 422, "VALIDATION_ERROR")
    progress = {"attempt": 1, "lines": [], "progress": {"frame": 1, "percent": 50.5}}
    assert ok(await agent.post(f"/frames/{frame['frame_id']}/log", progress)) == {"stop": False}
    bad = {"attempt": 1, "lines": [], "progress": {"frame": 1, "percent": 101}}
    refused(await agent.post(f"/frames/{frame['frame_id']}/log", bad), 422, "VALIDATION_ERROR")


# -- finishing ---------------------------------------------------------------------------------
async def test_a_success_completes_the_task_and_a_repeat_is_refused(farm: Farm) -> None:
    task_id = await farm.task(spec="1", chunk_size=1)
    agent = await farm.agent()
    (frame,) = await agent.claim()
    report = {"duration_ms": 1200, "core_seconds": 4.5, "peak_memory_bytes": 2**31}
    answer = ok(await agent.finish(frame, **report))
    assert answer == {"frame_status": "succeeded", "agent_blocked": False, "cost": "0.00"}
    stored = await farm.frame(frame["frame_id"])
    assert (stored.exit_code, stored.duration_ms, stored.core_seconds) == (0, 1200, 4.5)
    assert stored.peak_memory_bytes == 2**31
    task = await farm.task_row(task_id)
    assert (task.status, task.frames_succeeded, task.cost) == ("completed", 1, 0)
    refused(await agent.finish(frame), 409, "INVALID_STATE")
    refused(await agent.log(frame, [{"line": "late"}]), 409, "INVALID_STATE")


async def test_failures_retry_blocklist_the_agent_and_fail_after_three_agents(farm: Farm) -> None:
    task_id = await farm.task(spec="1-2", chunk_size=1, max_retries=5)
    a, b, c = await farm.agent("a"), await farm.agent("b"), await farm.agent("c")
    answers = []
    for _ in range(3):  # the first frame fails three times on agent a
        (frame,) = await a.claim(limit=1)
        answers.append(ok(await a.finish(frame, "failed", exit_code=1, error="Error: OOM\nat x")))
    assert [x["frame_status"] for x in answers] == ["waiting"] * 3
    assert [x["agent_blocked"] for x in answers] == [False, False, True]
    assert {x["cost"] for x in answers} == {"0.00"}
    assert await a.claim() == []  # blocklisted for the task
    first = frame["frame_id"]
    stored = await farm.frame(first)
    assert stored.last_error == "Error: OOM\nat x" and stored.attempts == 3
    (frame,) = await b.claim(limit=1)
    assert frame["frame_id"] == first and frame["attempt"] == 4
    assert ok(await b.finish(frame, "failed", exit_code=1))["frame_status"] == "waiting"
    (frame,) = await c.claim(limit=1)
    assert ok(await c.finish(frame, "failed", exit_code=1))["frame_status"] == "failed"
    # agent faults wait again without counting against the frame, but count for the agent
    (frame,) = await c.claim(limit=1)
    fault = ok(await c.finish(frame, "agent_fault", exit_code=None, error="scene download"))
    assert fault == {"frame_status": "waiting", "agent_blocked": False, "cost": "0.00"}
    assert (await farm.frame(frame["frame_id"])).failed_agent_ids == []
    (frame,) = await b.claim(limit=1)
    assert ok(await b.finish(frame))["frame_status"] == "succeeded"
    task = await farm.task_row(task_id)
    assert (task.status, task.frames_failed, task.frames_succeeded) == ("failed", 1, 1)


async def test_a_frame_fails_after_its_retries(farm: Farm) -> None:
    await farm.task(spec="1", chunk_size=1, max_retries=1)
    a, b = await farm.agent("a"), await farm.agent("b")
    (frame,) = await a.claim()
    assert ok(await a.finish(frame, "failed", exit_code=1))["frame_status"] == "waiting"
    (frame,) = await b.claim()
    assert ok(await b.finish(frame, "failed", exit_code=1))["frame_status"] == "failed"


async def test_an_expired_lease_is_swept_by_the_next_claim_and_fences_the_old_attempt(
    farm: Farm,
) -> None:
    task_id = await farm.task(spec="1", chunk_size=1)
    slow, fast = await farm.agent("slow"), await farm.agent("fast")
    (old,) = await slow.claim()
    assert await fast.claim() == []
    await farm.expire(old["frame_id"])
    (new,) = await fast.claim()
    assert (new["frame_id"], new["attempt"]) == (old["frame_id"], 2)
    assert await slow.heartbeat((old["frame_id"], 1)) == {"extended": [], "stop": [old["frame_id"]]}
    refused(await slow.finish(old), 409, "INVALID_STATE")
    refused(await slow.log(old, [{"line": "late"}]), 409, "INVALID_STATE")
    stored = await farm.frame(old["frame_id"])
    assert stored.failed_agent_ids == [] and stored.agent_id == int(fast.id)
    assert ok(await fast.finish(new))["frame_status"] == "succeeded"
    assert (await farm.task_row(task_id)).status == "completed"


async def test_the_lease_job_requeues_silent_agents_frames(farm: Farm) -> None:
    assert cron.schedules()[render_jobs.REQUEUE_EXPIRED].cron == "* * * * *"
    task_id = await farm.task(spec="1-3", chunk_size=1)
    agent = await farm.agent()
    frames = await agent.claim(limit=2)
    await farm.expire(frames[0]["frame_id"])
    db = farm.app.state.db
    worker = Worker(db, bus=db.bus, poll_interval=0.05, lease_seconds=5, run_cron=False)
    await worker.start()
    try:
        async with db.transaction() as session:
            job_id = (await service.enqueue(session, render_jobs.REQUEUE_EXPIRED, {})).id
        deadline = time.monotonic() + 10
        while True:
            async with db.read_sessionmaker() as session:
                job = await session.get_one(Job, job_id)
            if job.status in ("succeeded", "failed"):
                break
            assert time.monotonic() < deadline, job.status
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert (job.status, job.result) == ("succeeded", {"requeued": 1})
    task = await farm.task_row(task_id)
    assert (task.frames_waiting, task.frames_running, task.status) == (2, 1, "rendering")
    assert (await farm.frame(frames[0]["frame_id"])).last_error == "the agent's lease expired"


# -- hostile input -----------------------------------------------------------------------------
async def test_hostile_input_answers_the_error_envelope(farm: Farm) -> None:
    task_id = await farm.task(spec="1", chunk_size=1)
    agent = await farm.agent()
    (frame,) = await agent.claim()
    path = f"/frames/{frame['frame_id']}/finish"
    for frame_id in ("abc", "0", "-1", "99999999999999999999", "1.5"):
        response = await agent.post(
            f"/frames/{frame_id}/finish", {"attempt": 1, "outcome": "failed"}
        )
        refused(response, 422, "VALIDATION_ERROR")
    refused(
        await agent.post("/frames/123456789/finish", {"attempt": 1, "outcome": "failed"}),
        404,
        "NOT_FOUND",
    )
    for body in (
        {"attempt": 0, "outcome": "succeeded"},
        {"attempt": -3, "outcome": "succeeded"},
        {"attempt": 2**40, "outcome": "succeeded"},
        {"attempt": 1, "outcome": "exploded"},
        {"attempt": 1, "outcome": "succeeded", "exit_code": 2**40},
        {"attempt": 1, "outcome": "succeeded", "duration_ms": -1},
        {"attempt": 1, "outcome": "succeeded", "core_seconds": -0.5},
        {"attempt": 1, "outcome": "succeeded", "core_seconds": 1e300},
        {"attempt": 1, "outcome": "succeeded", "peak_memory_bytes": 2**64},
        {"attempt": 1, "outcome": "failed", "error": "e" * 70000},
        [],
        "finish",
    ):
        refused(await agent.post(path, body), 422, "VALIDATION_ERROR")
    response = await farm.client.post(
        f"{API}/agents{path}",
        content=b"{not json",
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    refused(response, 400, "MALFORMED_JSON")
    refused(
        await agent.post("/heartbeat", {"running": [{"frame_id": "x", "attempt": 1}]}),
        422,
        "VALIDATION_ERROR",
    )
    # a failure with a hostile error text is stored cleaned
    answer = ok(await agent.finish(frame, "failed", exit_code=-9, error="nul\x00 esc\x1b\nnext"))
    assert answer["frame_status"] == "waiting"
    assert (await farm.frame(frame["frame_id"])).last_error == "nul  esc \nnext"
    assert (await farm.task_row(task_id)).frames_waiting == 1


async def test_a_heartbeat_crossing_a_finish_does_not_deadlock(farm: Farm) -> None:
    """A finish locks its frame, then the agent's row; a heartbeat of the same agent must take
    the frame first too (PostgreSQL would otherwise detect a deadlock and fail one of them)."""
    db = farm.app.state.db
    if db.dialect != "postgresql":
        pytest.skip("row locks: PostgreSQL only")
    await farm.task(spec="1", chunk_size=1)
    agent = await farm.agent()
    (frame,) = await agent.claim()
    finishing = db.sessionmaker()
    try:  # what scheduling.finish does, held open between its two steps
        await finishing.execute(
            update(FrameTask).where(FrameTask.id == int(frame["frame_id"])).values(exit_code=0)
        )
        beat = asyncio.create_task(agent.heartbeat((frame["frame_id"], 1)))
        await asyncio.sleep(0.3)
        assert not beat.done()  # waits for the frame, holding nothing the finish needs
        await finishing.execute(
            update(RenderAgent)
            .where(RenderAgent.id == int(agent.id))
            .values(last_heartbeat_at=datetime.now(UTC))
        )
        await finishing.commit()
    finally:
        await finishing.close()
    assert (await asyncio.wait_for(beat, 5))["extended"] == [frame["frame_id"]]


async def test_a_waiting_claim_wakes_when_a_frame_comes_back(farm: Farm) -> None:
    await farm.task(spec="1", chunk_size=1)
    first, second = await farm.agent("first"), await farm.agent("second")
    (held,) = await first.claim()
    started = time.monotonic()
    assert await second.claim(wait=0.3) == []  # nothing came: answered after the wait
    assert time.monotonic() - started >= 0.3
    waiting = asyncio.create_task(second.claim(wait=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await first.finish(held, "agent_fault", error="scene download failed")
    (again,) = await asyncio.wait_for(waiting, 5)  # woken by the frame going back to waiting
    assert again["frame_id"] == held["frame_id"] and again["attempt"] == held["attempt"] + 1
    assert time.monotonic() - started < 5


async def test_a_batch_finish_answers_each_item(farm: Farm) -> None:
    task_id = await farm.task(spec="1-4", chunk_size=1)
    node, other = await farm.agent("node"), await farm.agent("other")
    mine = await node.claim(limit=3)
    (theirs,) = await other.claim(limit=1)
    item = {"outcome": "succeeded", "exit_code": 0, "core_seconds": 1.5}
    body = {
        "items": [
            {"frame_id": mine[0]["frame_id"], "attempt": mine[0]["attempt"], **item},
            {"frame_id": mine[1]["frame_id"], "attempt": mine[1]["attempt"] + 1, **item},
            {"frame_id": theirs["frame_id"], "attempt": theirs["attempt"], **item},
            {"frame_id": "99999999999", "attempt": 1, **item},
            {"frame_id": mine[2]["frame_id"], "attempt": mine[2]["attempt"], "outcome": "failed"},
        ]
    }
    answers = ok(await node.post("/finish", body))["items"]
    assert [(a["frame_id"], a["frame_status"], a["error"]) for a in answers] == [
        (mine[0]["frame_id"], "succeeded", None),
        (mine[1]["frame_id"], None, "INVALID_STATE"),  # a stale attempt
        (theirs["frame_id"], None, "INVALID_STATE"),  # another agent's frame
        ("99999999999", None, "NOT_FOUND"),
        (mine[2]["frame_id"], "waiting", None),  # failed once, retries left
    ]
    assert answers[0]["cost"] == "0.00"
    task = await farm.task_row(task_id)
    assert (task.frames_succeeded, task.frames_running, task.frames_waiting) == (1, 2, 1)
    for bad in ({"items": []}, {"items": [{"frame_id": "1"}]}, {"items": [dict(item)] * 65}):
        refused = await node.post("/finish", bad)
        assert refused.status_code == 422 and refused.json()["error"] == "VALIDATION_ERROR"
