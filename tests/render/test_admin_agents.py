"""Render agent administration: creation with a token shown once, listing with what each agent
runs, disable and enable, token rotation, revocation (frames back to waiting), audit entries,
authorization, unknown ids; and the local agent of `yuntu serve`."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.admin.test_admin_users import audit_rows
from tests.conftest import API, bearer, register
from yuntu.kit.errors import AppError
from yuntu.models.render import RenderAgent
from yuntu.render import agents

from .test_agent_api import FREE, Farm, ok, open_farm, refused

pytestmark = pytest.mark.anyio
BASE = f"{API}/admin/render/agents"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(FREE)


@pytest.fixture
async def farm(app: FastAPI, client: httpx.AsyncClient) -> Farm:
    return await open_farm(app, client)


async def admin_post(farm: Farm, path: str, body: Any = None) -> httpx.Response:
    return await farm.client.post(f"{BASE}{path}", json=body, headers=bearer(farm.admin))


async def admin_get(farm: Farm, path: str = "", **params: Any) -> httpx.Response:
    return await farm.client.get(f"{BASE}{path}", params=params, headers=bearer(farm.admin))


async def test_create_shows_the_token_once_and_stores_its_hash(farm: Farm) -> None:
    created = ok(await admin_post(farm, "", {"name": "node-01"}), 201)
    token = created["token"]
    assert token.startswith(created["token_prefix"] + "_") and len(token) > 40
    assert created["name"] == "node-01" and created["status"] == "active"
    assert created["created_by"] == farm.admin["user"]["id"]
    assert (created["online"], created["running"], created["renderers"]) == (False, [], [])
    async with farm.app.state.db.read_sessionmaker() as session:
        row = await session.get_one(RenderAgent, int(created["id"]))
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    one = ok(await admin_get(farm, f"/{created['id']}"))
    assert "token" not in one and one["id"] == created["id"]
    (entry,) = await audit_rows(farm.app, "render_agent.create")
    assert entry.target_id == created["id"] and token not in str(entry.after)

    refused(await admin_post(farm, "", {"name": "LOCAL"}), 409, "NAME_CONFLICT")
    for body in ({"name": ""}, {"name": "a\nb"}, {"name": "x" * 129}, {"name": "n", "x": 1}, {}):
        refused(await admin_post(farm, "", body), 422, "VALIDATION_ERROR")


async def test_list_shows_status_what_runs_and_filters(farm: Farm) -> None:
    task_id = await farm.task(spec="1-2", chunk_size=1)
    busy = await farm.agent("busy")
    idle = await farm.agent("idle")
    (frame,) = await busy.claim(limit=1)
    ok(await admin_post(farm, f"/{idle.id}/disable"))
    listing = ok(await admin_get(farm))
    assert (listing["total"], listing["page"], listing["pages"]) == (2, 1, 1)
    first, second = listing["items"]
    assert (first["name"], first["status"], first["online"]) == ("busy", "active", True)
    assert first["renderers"] == ["blender"] and first["slots"] == 4
    assert first["hostname"] == "node" and first["last_heartbeat_at"].endswith("Z")
    (running,) = first["running"]
    assert running["frame_id"] == frame["frame_id"] and running["task_id"] == str(task_id)
    assert running["attempt"] == 1 and running["frames"] == [1]
    assert (second["name"], second["status"], second["running"]) == ("idle", "disabled", [])
    only = ok(await admin_get(farm, status="disabled"))
    assert [item["name"] for item in only["items"]] == ["idle"]
    paged = ok(await admin_get(farm, page=2, page_size=1))
    assert [item["name"] for item in paged["items"]] == ["idle"] and paged["pages"] == 2
    refused(await admin_get(farm, status="sleeping"), 422, "VALIDATION_ERROR")
    refused(await admin_get(farm, page_size=10**6), 422, "VALIDATION_ERROR")


async def test_disable_and_enable_are_idempotent_and_audited(farm: Farm) -> None:
    await farm.task(spec="1", chunk_size=1)
    agent = await farm.agent()
    assert ok(await admin_post(farm, f"/{agent.id}/disable"))["status"] == "disabled"
    assert ok(await admin_post(farm, f"/{agent.id}/disable"))["status"] == "disabled"
    assert await agent.claim() == []
    assert ok(await admin_post(farm, f"/{agent.id}/enable"))["status"] == "active"
    assert ok(await admin_post(farm, f"/{agent.id}/enable"))["status"] == "active"
    assert len(await agent.claim()) == 1
    assert len(await audit_rows(farm.app, "render_agent.disable")) == 1
    (entry,) = await audit_rows(farm.app, "render_agent.enable")
    assert (entry.before, entry.after) == ({"status": "disabled"}, {"status": "active"})


async def test_a_new_token_replaces_the_old_one(farm: Farm) -> None:
    agent = await farm.agent()
    rotated = ok(await admin_post(farm, f"/{agent.id}/token"))
    refused(await agent.post("/heartbeat", {"running": []}), 401, "TOKEN_INVALID")
    agent.token = rotated["token"]
    assert await agent.heartbeat() == {"extended": [], "stop": []}
    (entry,) = await audit_rows(farm.app, "render_agent.token")
    assert entry.after["prefix"] == rotated["token_prefix"] != entry.before["prefix"]


async def test_revoke_requeues_running_frames_and_a_new_token_restores(farm: Farm) -> None:
    task_id = await farm.task(spec="1-3", chunk_size=1)
    agent = await farm.agent()
    frames = await agent.claim(limit=2)
    revoked = ok(await admin_post(farm, f"/{agent.id}/revoke"))
    assert (revoked["status"], revoked["running"], revoked["online"]) == ("revoked", [], False)
    refused(await agent.post("/heartbeat", {"running": []}), 401, "TOKEN_INVALID")
    refused(await agent.post("/claim", {"limit": 1}), 401, "TOKEN_INVALID")
    task = await farm.task_row(task_id)
    assert (task.frames_waiting, task.frames_running) == (3, 0)
    for frame in frames:
        stored = await farm.frame(frame["frame_id"])
        assert (stored.status, stored.agent_id, stored.failed_agent_ids) == ("waiting", None, [])
        assert stored.last_error == "the agent was revoked"
    assert ok(await admin_post(farm, f"/{agent.id}/revoke"))["status"] == "revoked"
    (entry,) = await audit_rows(farm.app, "render_agent.revoke")
    assert entry.after == {"status": "revoked", "frames_requeued": 2}
    refused(await admin_post(farm, f"/{agent.id}/enable"), 409, "INVALID_STATE")
    refused(await admin_post(farm, f"/{agent.id}/disable"), 409, "INVALID_STATE")

    other = await farm.agent("other")
    (again,) = await other.claim(limit=1)
    assert again["frame_id"] == frames[0]["frame_id"] and again["attempt"] == 2

    restored = ok(await admin_post(farm, f"/{agent.id}/token"))
    assert restored["status"] == "active"
    agent.token = restored["token"]
    assert len(await agent.claim(limit=1)) == 1


async def test_only_administrators_and_unknown_ids(farm: Farm) -> None:
    agent = await farm.agent()
    user = bearer(await register(farm.client, "mallory"))
    calls = [
        ("POST", "", {"name": "x"}),
        ("GET", "", None),
        ("GET", f"/{agent.id}", None),
        *[("POST", f"/{agent.id}/{action}", None) for action in ("disable", "enable", "token")],
        ("POST", f"/{agent.id}/revoke", None),
    ]
    for method, path, body in calls:
        response = await farm.client.request(method, f"{BASE}{path}", json=body, headers=user)
        refused(response, 403, "FORBIDDEN")
        response = await farm.client.request(method, f"{BASE}{path}", json=body)
        refused(response, 401, "UNAUTHENTICATED")
        response = await farm.client.request(
            method, f"{BASE}{path}", json=body, headers=agent.headers
        )
        assert response.status_code == 401  # an agent token is not a user's
    refused(await admin_get(farm, "/123456789"), 404, "NOT_FOUND")
    for action in ("disable", "enable", "token", "revoke"):
        refused(await admin_post(farm, f"/123456789/{action}"), 404, "NOT_FOUND")
    for bad in ("abc", "0", "-5", "99999999999999999999"):
        refused(await admin_get(farm, f"/{bad}"), 422, "VALIDATION_ERROR")
    async with farm.app.state.db.read_sessionmaker() as session:
        statuses = (await session.scalars(select(RenderAgent.status))).all()
    assert statuses == ["active"]


async def test_the_local_agent_is_created_once_and_rekeyed_on_every_start(farm: Farm) -> None:
    db = farm.app.state.db
    async with db.transaction() as session:
        first, token = await agents.ensure_local_agent(session, ["Blender"], 2)
    async with db.transaction() as session:
        again, fresh = await agents.ensure_local_agent(session, ["blender", "kick"], 100)
    assert again.id == first.id and fresh != token
    assert (again.name, again.renderers, again.slots, again.created_by) == (
        "local",
        ["blender", "kick"],
        64,
        None,
    )
    stale = {"Authorization": f"Bearer {token}"}
    response = await farm.client.post(f"{API}/agents/heartbeat", json={}, headers=stale)
    refused(response, 401, "TOKEN_INVALID")
    headers = {"Authorization": f"Bearer {fresh}"}
    response = await farm.client.post(f"{API}/agents/heartbeat", json={}, headers=headers)
    assert ok(response) == {"extended": [], "stop": []}
    # revoked by an administrator, it comes back at the next start
    ok(await admin_post(farm, f"/{first.id}/revoke"))
    async with db.transaction() as session:
        back, _token = await agents.ensure_local_agent(session, [], 1)
    assert back.id == first.id and back.status == "active"
    async with db.transaction() as session:
        with pytest.raises(AppError, match="invalid renderer"):
            await agents.ensure_local_agent(session, ["no spaces"], 1)
