"""The Agent in-process against the app served by uvicorn on a free port, over real HTTP: the
no-op renderer through a whole task (claim, scene download and cache, log lines, outputs in
the drive, finish), a renderer failure, renderer-missing agent faults up to the blocklist, a
graceful stop finishing a running frame as agent_fault, a cancelled task killing its renderer
through the heartbeat, a revoked token stopping the agent, and the embedded local agent (its
last finish goes through the app in-process once uvicorn has stopped listening)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from tests.conftest import API, bearer, free_port, make_admin, register
from tests.render.conftest import load
from tests.render.test_agent_runners import alive, wait_for_file, write_fake_renderer
from yuntu.models.render import FrameTask, RenderAgent, RenderLog, RenderOutput, RenderTask
from yuntu.render.agent.client import AgentClient, ApiError
from yuntu.render.agent.local import start_local_agent, stop_local_agent
from yuntu.render.agent.runners import Renderers
from yuntu.render.agent.runtime import Agent

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FAKE_TEMPLATE = {
    "progress_pattern": r"frame (?P<frame>\d+): (?P<percent>\d+)% done",
    "output_pattern": r"writing file '(?P<path>[^']+)'",
    "error_pattern": r"^ERROR: (?P<message>.+)",
}


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return write_fake_renderer(tmp_path)


@pytest.fixture
def settings_overrides(fake: Path) -> dict[str, Any]:
    command = f"{shlex.quote(str(fake))} -s {{start}} -e {{end}} -o {{out_dir}} [-cam {{camera}}]"
    return {
        "render_price_fen_per_core_hour": 0,
        "render_minimum_fen_per_frame": 0,
        "render_heartbeat_seconds": 1,
        "render_poll_seconds": 0.05,
        "render_templates": {"fake": {"template": f"{command} {{scene}}", **FAKE_TEMPLATE}},
    }


class Farm:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, base_url: str, work: Path):
        self.app, self.client, self.base_url, self.work = app, client, base_url, work
        self.admin: dict[str, Any] = {}
        self.owner: dict[str, str] = {}
        self.running: list[tuple[Agent, asyncio.Task[None]]] = []
        self.server: uvicorn.Server | None = None
        self.serve: asyncio.Task[None] | None = None

    def client_for_url(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=2)

    async def token(self, name: str) -> tuple[str, str]:
        response = await self.client.post(
            f"{API}/admin/render/agents", json={"name": name}, headers=bearer(self.admin)
        )
        assert response.status_code == 201, response.text
        created = response.json()["data"]
        return created["id"], created["token"]

    async def agent(
        self, offered: list[str], *, slots: int = 1, name: str = "node"
    ) -> tuple[Agent, asyncio.Task[None]]:
        _id, token = await self.token(name)
        client = AgentClient(self.base_url, token, backoff_base=0.05, backoff_cap=0.2)
        agent = Agent(
            client,
            Renderers.from_settings(self.app.state.settings),
            offered=offered,
            slots=slots,
            work_dir=self.work / name,
            hostname=name,
            log_interval=0.1,
        )
        task = asyncio.create_task(agent.run())
        self.running.append((agent, task))
        return agent, task

    async def task(self, frames: str, software: str, **fields: Any) -> int:
        """A task of the owner's over a scene in their drive, created and submitted over the
        API (free at these settings), so its outputs land in that drive."""
        scene = await self.client.post(
            f"{API}/files/upload",
            files={"file": ("shot.blend", secrets.token_bytes(48), "application/x-blender")},
            headers=self.owner,
        )
        assert scene.status_code in (200, 201), scene.text
        body = {
            "name": "shot-010",
            "scene_file_id": scene.json()["data"]["file_id"],
            "software": software,
            "renderer": "cycles",
            "frames": frames,
            "width": 64,
            "height": 36,
            **fields,
        }
        created = await self.client.post(f"{API}/tasks", json=body, headers=self.owner)
        assert created.status_code == 201, created.text
        return int(created.json()["data"]["id"])

    async def frames(self, task_id: int) -> list[FrameTask]:
        async with self.app.state.db.read_sessionmaker() as session:
            query = select(FrameTask).where(FrameTask.task_id == task_id).order_by(FrameTask.seq)
            return list((await session.scalars(query)).all())

    async def rows(self, model: Any, task_id: int) -> list[Any]:
        async with self.app.state.db.read_sessionmaker() as session:
            query = select(model).where(model.task_id == task_id).order_by(model.id)
            return list((await session.scalars(query)).all())


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[tuple[str, uvicorn.Server, asyncio.Task[None]]]:
    """The app (its lifespan already running) behind uvicorn on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    serve = asyncio.create_task(server.serve())
    while not server.started:
        assert not serve.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server, serve
    finally:
        server.should_exit = True
        await serve


@pytest.fixture
async def farm(app: FastAPI, client: httpx.AsyncClient, tmp_path: Path) -> AsyncIterator[Farm]:
    async with serving(app) as (base_url, server, serve):
        farm = Farm(app, client, base_url, tmp_path / "agents")
        farm.server, farm.serve = server, serve
        farm.admin = await make_admin(client, app)
        farm.owner = bearer(await register(client, "owner"))
        try:
            yield farm
        finally:
            for agent, task in farm.running:
                agent.stop()
                await asyncio.gather(task, return_exceptions=True)
                await agent.client.aclose()


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def task_status(farm: Farm, task_id: int) -> str:
    return (await load(farm.app.state.db, RenderTask, task_id)).status  # type: ignore[no-any-return]


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# -- the whole path ------------------------------------------------------------------------------


async def test_noop_agent_renders_a_task_end_to_end(farm: Farm) -> None:
    task_id = await farm.task("1-6", "noop", chunk_size=2)
    agent, runner = await farm.agent(["noop"], slots=2)
    await until("completed", lambda: _is(task_status(farm, task_id), "completed"))
    agent.stop()
    await runner

    assert agent.stats["succeeded"] == 3 and agent.registration is not None
    frames = await farm.frames(task_id)
    assert [(f.status, f.attempts, f.exit_code, f.core_seconds) for f in frames] == [
        ("succeeded", 1, 0, 0.0)
    ] * 3
    outputs = await farm.rows(RenderOutput, task_id)
    assert sorted((o.frame, o.filename) for o in outputs) == [
        (n, f"frame_{n:04d}.png") for n in range(1, 7)
    ]
    lines = [log.line for log in await farm.rows(RenderLog, task_id)]
    assert "noop: frame 1" in lines and "noop: saved frame_0006.png" in lines
    # the scene was fetched into the cache once; each attempt's directory is gone
    work = farm.work / "node"
    assert len(entries(work / "scenes")) == 1
    assert entries(work / "attempts") == []


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_renderer_failure_fails_the_frame(farm: Farm, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    task_id = await farm.task("1-2", "fake", chunk_size=2, max_retries=0)
    agent, _runner = await farm.agent(["fake"])
    await until("failed", lambda: _is(task_status(farm, task_id), "failed"))
    [frame] = await farm.frames(task_id)
    assert frame.status == "failed" and frame.exit_code == 3
    assert frame.last_error == "the renderer exited with code 3: out of licenses"
    assert frame.core_seconds is not None and frame.core_seconds > 0
    assert frame.peak_memory_bytes and frame.duration_ms is not None
    logs = await farm.rows(RenderLog, task_id)
    assert ("error", "ERROR: out of licenses") in [(log.level, log.line) for log in logs]
    assert agent.stats["failed"] == 1


async def test_a_missing_renderer_is_an_agent_fault_until_the_blocklist(farm, fake) -> None:
    agent, _runner = await farm.agent(["fake"])
    await until("registered", lambda: _true(agent.registration))
    fake.unlink()  # offered at start, gone when the frame comes
    task_id = await farm.task("1", "fake")
    await until("blocklisted", lambda: _true(agent.stats["agent_fault"] >= 3))
    await asyncio.sleep(0.3)  # polls go on: the blocklisted agent gets no more of this task
    assert agent.stats["agent_fault"] == 3
    [frame] = await farm.frames(task_id)
    assert frame.status == "waiting" and frame.last_error.startswith("cannot start")
    assert await task_status(farm, task_id) != "failed"


async def _true(value: Any) -> bool:
    return bool(value)


# -- stopping --------------------------------------------------------------------------------------


async def test_stop_finishes_a_running_frame_as_agent_fault(farm, monkeypatch, tmp_path) -> None:
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    task_id = await farm.task("1-2", "fake", chunk_size=2)
    agent, runner = await farm.agent(["fake"])
    leader, child = map(int, (await wait_for_file(pids)).split())

    started = time.monotonic()
    agent.stop()
    await runner
    assert time.monotonic() - started < 10
    [frame] = await farm.frames(task_id)
    assert (frame.status, frame.attempts) == ("waiting", 1)
    assert frame.last_error == "the agent is shutting down"
    assert agent.stats["agent_fault"] == 1
    lines = [log.line for log in await farm.rows(RenderLog, task_id)]
    assert any(line.startswith("fake renderer: scene") for line in lines)
    await until("killed", lambda: _true(not alive(leader) and not alive(child)), timeout=5)


async def test_a_cancelled_task_kills_its_renderer(farm, monkeypatch, tmp_path) -> None:
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    task_id = await farm.task("1", "fake")
    agent, runner = await farm.agent(["fake"])
    leader, child = map(int, (await wait_for_file(pids)).split())
    cancelled = await farm.client.put(f"{API}/tasks/{task_id}/cancel", headers=farm.owner)
    assert cancelled.status_code == 200, cancelled.text

    # the next heartbeat (or log call) names the attempt: killed, not finished
    await until("killed", lambda: _true(not alive(leader) and not alive(child)), timeout=10)
    await until("lost", lambda: _true(agent.stats["lost"] == 1))
    assert not runner.done() and agent.running == []
    [frame] = await farm.frames(task_id)
    assert frame.status == "cancelled" and frame.exit_code is None


async def test_a_revoked_token_stops_the_agent(farm) -> None:
    agent, runner = await farm.agent(["noop"], name="gone")
    await until("registered", lambda: _true(agent.registration))
    response = await farm.client.post(
        f"{API}/admin/render/agents/{agent.registration.agent_id}/revoke",
        headers=bearer(farm.admin),
    )
    assert response.status_code == 200, response.text
    with pytest.raises(ApiError) as refused:
        await asyncio.wait_for(runner, 10)
    assert refused.value.status_code == 401


# -- the embedded local agent ------------------------------------------------------------------


async def test_local_agent_runs_and_stops_through_the_app(farm, monkeypatch, tmp_path) -> None:
    settings = farm.app.state.settings
    monkeypatch.setattr(settings, "workers", 1)
    monkeypatch.setattr(settings, "render_local_agent_renderers", ["fake"])
    assert await start_local_agent(farm.app) is None  # no URL: not under `yuntu serve`
    farm.app.state.local_agent_url = farm.base_url
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setenv("FAKE_PIDS", str(pids))

    local = await start_local_agent(farm.app)
    assert local is not None
    try:
        task_id = await farm.task("3", "fake")
        leader, child = map(int, (await wait_for_file(pids)).split())
        async with farm.app.state.db.read_sessionmaker() as session:
            row = await session.get_one(RenderAgent, int(local.agent.registration.agent_id))
        assert (row.name, row.renderers, row.created_by) == ("local", ["fake"], None)
        # as at `yuntu serve` shutdown: uvicorn no longer listens when the lifespan ends
        farm.server.should_exit = True
        await farm.serve
        with pytest.raises(httpx.ConnectError):
            await farm.client_for_url().get("/health")
    finally:
        await stop_local_agent(local)
    assert local.task.done() and local.agent.stats["agent_fault"] == 1
    [frame] = await farm.frames(task_id)
    assert frame.status == "waiting" and frame.last_error == "the agent is shutting down"
    await until("killed", lambda: _true(not alive(leader) and not alive(child)), timeout=5)
