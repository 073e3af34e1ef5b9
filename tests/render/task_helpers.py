"""Helpers of the render task tests: a scene in the drive, a funded user, tasks created over
HTTP, and an agent's side played through the scheduling service (claim, finish) in a session,
the way the agent API does it."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import API
from tests.ledger.test_recharge import fund
from yuntu.models.render import RenderAgent
from yuntu.render import dispatch, scheduling
from yuntu.render.agent_auth import generate_token
from yuntu.render.scheduling import Outcome, Report

# 1 fen per core-second, 1 fen minimum per frame; cycles at 192x108 predicts 6 core-seconds a
# frame, plus 4 per frame task: a 2-frame chunk is estimated 16 fen.
PRICING: dict[str, Any] = {
    "render_price_fen_per_core_hour": 3600,
    "render_minimum_fen_per_frame": 1,
    "render_chunk_overhead_core_seconds": 4,
}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None and body["code"] != 0
    return body  # type: ignore[no-any-return]


async def scene(client: httpx.AsyncClient, headers: dict[str, str], name: str = "s.blend") -> str:
    response = await client.post(
        f"{API}/files/upload",
        files={"file": (name, b"BLENDER-v300 scene bytes " + name.encode(), "application/x")},
        headers=headers,
    )
    return str(ok(response)["file_id"])


async def funded(client: httpx.AsyncClient, headers: dict[str, str], yuan: str) -> None:
    await fund(client, headers, yuan)


def task_body(scene_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "shot-010",
        "scene_file_id": scene_id,
        "software": "blender",
        "renderer": "cycles",
        "frames": "1-6",
        "width": 192,
        "height": 108,
        "chunk_size": 2,
    }
    body.update(fields)
    return body


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    return ok(await client.get(f"{API}/users/balance", headers=headers))  # type: ignore[no-any-return]


async def agent(app: FastAPI, name: str = "node", renderers: tuple[str, ...] = ("blender",)) -> int:
    _token, digest, prefix = generate_token()
    async with app.state.db.transaction() as session:
        row = RenderAgent(
            name=name, token_hash=digest, token_prefix=prefix, renderers=list(renderers), slots=4
        )
        session.add(row)
        await session.flush()
        return row.id


async def claim(app: FastAPI, agent_id: int, limit: int = 1) -> list[tuple[int, int]]:
    """(frame task id, attempt) of what the agent got."""
    async with app.state.db.transaction() as session:
        row = await session.get(RenderAgent, agent_id)
        assert row is not None
        frames = await scheduling.claim(session, row, limit=limit)
        return [(frame.id, frame.attempts) for frame in frames]


async def finish(
    app: FastAPI,
    agent_id: int,
    frame: tuple[int, int],
    outcome: Outcome = Outcome.SUCCEEDED,
    core_seconds: float = 10.0,
) -> int:
    """Finish an attempt as the agent API does (dispatch.finish_frame); returns the fen it
    cost."""
    frame_id, attempt = frame
    report = Report(
        outcome=outcome,
        exit_code=0 if outcome == Outcome.SUCCEEDED else 1,
        duration_ms=1000,
        core_seconds=core_seconds,
    )
    async with app.state.db.transaction() as session:
        row = await session.get(RenderAgent, agent_id)
        assert row is not None
        _finished, cost = await dispatch.finish_frame(session, row, frame_id, attempt, report)
        return cost
