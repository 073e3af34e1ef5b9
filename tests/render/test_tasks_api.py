"""Render tasks over HTTP: estimate, submission with a hold (and 402 keeping a draft), the
lifecycle moves, billing per succeeded frame, the budget cap, retries, and another user's ids.
The agent's side is played through the scheduling service (tests/render/task_helpers.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import API, bearer, register
from tests.render.task_helpers import (
    PRICING,
    agent,
    balance,
    claim,
    error,
    finish,
    funded,
    ok,
    scene,
    task_body,
)
from yuntu.render import billing
from yuntu.render.scheduling import Outcome

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(PRICING)


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await register(client, "alice"))


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], status: int = 201, **fields: Any
) -> Any:
    scene_id = fields.pop("scene_file_id", None) or await scene(client, headers)
    response = await client.post(
        f"{API}/tasks", json=task_body(scene_id, **fields), headers=headers
    )
    if status != 201:
        return error(response, status)
    return ok(response, 201)


async def test_estimate_prices_each_chunk(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    data = ok(await client.post(f"{API}/tasks/estimate", json=task_body("1"), headers=alice))
    # 3 chunks of 2 frames: 4 + 2 x 6 core-seconds = 16 fen each
    assert data["frames"] == 6 and data["frame_tasks"] == 3
    assert data["estimate"] == "0.48" and data["hold"] == "0.48"
    capped = ok(
        await client.post(
            f"{API}/tasks/estimate", json=task_body("1", budget="0.30"), headers=alice
        )
    )
    assert capped["estimate"] == "0.48" and capped["hold"] == "0.30"


async def test_insufficient_balance_keeps_a_draft_then_submit(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    refused = await create(client, alice, status=402)
    assert refused["error"] == "INSUFFICIENT_BALANCE"
    task_id = refused["details"]["task_id"]
    draft = ok(await client.get(f"{API}/tasks/{task_id}", headers=alice))
    assert draft["status"] == "draft" and draft["frame_tasks"]["waiting"] == 3
    assert (await balance(client, alice))["held"] == "0.00"
    await funded(client, alice, "1.00")
    queued = ok(await client.post(f"{API}/tasks/{task_id}/submit", headers=alice))
    assert queued["status"] == "queued" and queued["submitted_at"]
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "0.52",
        "held": "0.48",
        "total": "1.00",
    }
    again = await client.post(f"{API}/tasks/{task_id}/submit", headers=alice)
    assert error(again, 409)["error"] == "INVALID_STATE"


async def test_draft_without_submission_holds_nothing(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    task = await create(client, alice, submit=False)
    assert task["status"] == "draft" and task["estimate"] == "0.48"
    cancelled = ok(await client.put(f"{API}/tasks/{task['id']}/cancel", headers=alice))
    assert cancelled["status"] == "cancelled" and cancelled["frame_tasks"]["cancelled"] == 3


async def test_frames_are_charged_and_completion_releases_the_rest(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice)
    node = await agent(app)
    costs = []
    for core_seconds in (10.0, 3.2):
        (attempt,) = await claim(app, node)
        costs.append(await finish(app, node, attempt, core_seconds=core_seconds))
    # within the hold the cost is recorded at once and charged to the bill later, in one line
    running = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert running["cost"] == "0.14" and running["status"] == "rendering"
    (bill,) = ok(await client.get(f"{API}/users/bills", headers=alice))["items"]
    assert bill["status"] == "open" and bill["lines"] == []
    async with app.state.db.transaction() as session:  # what the minute job does
        assert await billing.flush(session, int(task["id"])) == 14
        assert await billing.flush(session, int(task["id"])) == 0
    (bill,) = ok(await client.get(f"{API}/users/bills", headers=alice))["items"]
    assert bill["total"] == "0.14" and [line["quantity"] for line in bill["lines"]] == [2]
    assert (await balance(client, alice))["held"] == "0.34"
    (attempt,) = await claim(app, node)
    costs.append(await finish(app, node, attempt, core_seconds=0.0))
    # 10 core-seconds at 1 fen each; 3.2 rounds up to 4; nothing metered pays the minimum (2)
    assert costs == [10, 4, 2]
    done = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert done["status"] == "completed" and done["progress"] == 1.0
    assert done["cost"] == "0.16" and done["finished_at"]
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "0.84",
        "held": "0.00",
        "total": "0.84",
    }
    bills = ok(await client.get(f"{API}/users/bills", headers=alice))["items"]
    (bill,) = bills
    assert bill["id"] == done["bill_id"] and bill["status"] == "closed"
    assert bill["total"] == "0.16" and [line["quantity"] for line in bill["lines"]] == [2, 1]
    frames = ok(await client.get(f"{API}/tasks/{task['id']}/frames", headers=alice))["items"]
    assert [f["cost"] for f in frames] == ["0.10", "0.04", "0.02"]
    assert [f["frames"] for f in frames] == ["1-2", "3-4", "5-6"]


async def test_a_render_costlier_than_its_estimate_takes_the_rest_from_the_balance(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice, frames="1-2")  # one chunk, estimated 16 fen
    node = await agent(app)
    (attempt,) = await claim(app, node)
    assert await finish(app, node, attempt, core_seconds=40) == 40
    done = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert done["status"] == "completed" and done["cost"] == "0.40"
    assert (await balance(client, alice))["balance"] == "0.60"


async def test_the_budget_caps_charges_and_pauses_the_task(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice, budget="0.25")
    assert (await balance(client, alice))["held"] == "0.25"
    node = await agent(app)
    (first,) = await claim(app, node)
    assert await finish(app, node, first, core_seconds=20) == 20
    (second,) = await claim(app, node)
    assert await finish(app, node, second, core_seconds=20) == 5  # what the budget had left
    paused = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert paused["status"] == "paused" and paused["paused_reason"] == "budget"
    assert paused["cost"] == "0.25"
    assert await claim(app, node) == []  # nothing more is dispatched
    refused = await client.put(f"{API}/tasks/{task['id']}/resume", headers=alice)
    assert error(refused, 409)["error"] == "BUDGET_EXHAUSTED"
    low = await client.put(
        f"{API}/tasks/{task['id']}/resume", json={"budget": "0.10"}, headers=alice
    )
    assert error(low, 422)["error"] == "VALIDATION_ERROR"
    resumed = ok(
        await client.put(f"{API}/tasks/{task['id']}/resume", json={"budget": "1.00"}, headers=alice)
    )
    assert resumed["status"] == "queued" and resumed["budget"] == "1.00"
    (third,) = await claim(app, node)
    assert await finish(app, node, third, core_seconds=1) == 2
    done = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert done["status"] == "completed" and done["cost"] == "0.27"
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "0.73",
        "held": "0.00",
        "total": "0.73",
    }


async def test_running_out_of_money_pauses_instead_of_going_negative(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice, frames="1-12")  # holds 6 x 16 = 0.96: 0.04 left
    node = await agent(app)
    charged = []
    for _ in range(3):
        (attempt,) = await claim(app, node)
        charged.append(await finish(app, node, attempt, core_seconds=45))
    assert charged == [45, 45, 10]  # the last one got what the hold and the balance had left
    paused = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert paused["status"] == "paused" and paused["paused_reason"] == "balance"
    assert (await balance(client, alice))["total"] == "0.00"
    await funded(client, alice, "1.00")
    ok(await client.put(f"{API}/tasks/{task['id']}/resume", headers=alice))
    (attempt,) = await claim(app, node)
    assert await finish(app, node, attempt, core_seconds=1) == 2
    assert ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))["cost"] == "1.02"


async def test_failures_and_agent_faults_are_free_and_retry_reopens_a_failed_task(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice, frames="1-2", max_retries=0)
    node = await agent(app)
    (attempt,) = await claim(app, node)
    assert await finish(app, node, attempt, Outcome.AGENT_FAULT) == 0
    (attempt,) = await claim(app, node)
    assert await finish(app, node, attempt, Outcome.FAILED) == 0
    failed = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert failed["status"] == "failed" and failed["cost"] == "0.00"
    assert (await balance(client, alice))["held"] == "0.00"  # the hold went back
    frames = ok(await client.get(f"{API}/tasks/{task['id']}/frames?status=failed", headers=alice))
    (frame,) = frames["items"]
    assert frame["attempts"] == 2 and frame["error"]
    retried = ok(
        await client.post(
            f"{API}/tasks/{task['id']}/frames/retry",
            json={"frame_ids": [frame["id"]]},
            headers=alice,
        )
    )
    assert retried["status"] == "queued" and retried["frame_tasks"]["waiting"] == 1
    nothing = await client.post(f"{API}/tasks/{task['id']}/frames/retry", headers=alice)
    assert error(nothing, 409)["error"] == "INVALID_STATE"
    (attempt,) = await claim(app, node)  # the blocklist was cleared with the retry
    assert await finish(app, node, attempt, core_seconds=7) == 7
    done = ok(await client.get(f"{API}/tasks/{task['id']}", headers=alice))
    assert done["status"] == "completed" and done["cost"] == "0.07"
    assert (await balance(client, alice))["balance"] == "0.93"


async def test_pause_resume_cancel_moves(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice)
    url = f"{API}/tasks/{task['id']}"
    assert ok(await client.put(f"{url}/pause", headers=alice))["paused_reason"] == "user"
    assert ok(await client.put(f"{url}/pause", headers=alice))["status"] == "paused"
    node = await agent(app)
    assert await claim(app, node) == []
    assert ok(await client.put(f"{url}/resume", headers=alice))["status"] == "queued"
    assert error(await client.put(f"{url}/resume", headers=alice), 409)["error"] == "INVALID_STATE"
    (attempt,) = await claim(app, node)
    assert ok(await client.get(url, headers=alice))["status"] == "rendering"
    paused = ok(await client.put(f"{url}/pause", headers=alice))
    assert paused["status"] == "paused" and paused["frame_tasks"]["running"] == 1
    # the running frame finishes while paused, and is charged
    assert await finish(app, node, attempt, core_seconds=5) == 5
    resumed = ok(await client.put(f"{url}/resume", headers=alice))
    assert resumed["status"] == "queued"
    (attempt,) = await claim(app, node)
    assert ok(await client.put(f"{url}/pause", headers=alice))["status"] == "paused"
    assert ok(await client.put(f"{url}/resume", headers=alice))["status"] == "rendering"
    cancelled = ok(await client.put(f"{url}/cancel", headers=alice))
    assert cancelled["status"] == "cancelled"
    assert cancelled["frame_tasks"] == {
        "waiting": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 2,
        "total": 3,
    }
    with pytest.raises(Exception, match="no longer holds"):
        await finish(app, node, attempt)  # the cancelled attempt cannot report
    assert ok(await client.put(f"{url}/cancel", headers=alice))["status"] == "cancelled"
    for move in ("pause", "resume"):
        assert error(await client.put(f"{url}/{move}", headers=alice), 409)["error"] == (
            "INVALID_STATE"
        )
    assert await balance(client, alice) == {
        "currency": "CNY",
        "balance": "0.95",
        "held": "0.00",
        "total": "0.95",
    }
    (bill,) = ok(await client.get(f"{API}/users/bills", headers=alice))["items"]
    assert bill["status"] == "closed" and bill["total"] == "0.05"


async def test_list_detail_logs_and_delete(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    first = await create(client, alice, name="one")
    second = await create(client, alice, name="two", submit=False)
    listed = ok(await client.get(f"{API}/tasks", headers=alice))
    assert [t["name"] for t in listed["items"]] == ["two", "one"] and listed["total"] == 2
    drafts = ok(await client.get(f"{API}/tasks?status=draft", headers=alice))
    assert [t["id"] for t in drafts["items"]] == [second["id"]]
    bad = await client.get(f"{API}/tasks?status=bogus", headers=alice)
    assert error(bad, 422)["error"] == "VALIDATION_ERROR"
    logs = ok(await client.get(f"{API}/tasks/{first['id']}/logs", headers=alice))
    assert logs == {"items": [], "next_cursor": None}
    assert (
        await client.delete(f"{API}/tasks/{first['id']}", headers=alice)
    ).status_code == 204  # cancelled first: the hold goes back
    assert (await balance(client, alice))["held"] == "0.00"
    error(await client.get(f"{API}/tasks/{first['id']}", headers=alice), 404)
    assert (await client.delete(f"{API}/tasks/{second['id']}", headers=alice)).status_code == 204
    assert ok(await client.get(f"{API}/tasks", headers=alice))["total"] == 0


async def test_another_users_tasks_answer_404(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await funded(client, alice, "1.00")
    task = await create(client, alice)
    bob = bearer(await register(client, "bob"))
    url = f"{API}/tasks/{task['id']}"
    calls = [
        client.get(url, headers=bob),
        client.put(f"{url}/pause", headers=bob),
        client.put(f"{url}/resume", headers=bob),
        client.put(f"{url}/cancel", headers=bob),
        client.post(f"{url}/submit", headers=bob),
        client.get(f"{url}/logs", headers=bob),
        client.get(f"{url}/frames", headers=bob),
        client.post(f"{url}/frames/retry", headers=bob),
        client.delete(url, headers=bob),
    ]
    for call in calls:
        assert error(await call, 404)["error"] == "NOT_FOUND"
    assert ok(await client.get(f"{API}/tasks", headers=bob))["total"] == 0
    # nor can bob render alice's scene
    refused = await client.post(f"{API}/tasks", json=task_body(task["scene_file_id"]), headers=bob)
    assert error(refused, 404)["error"] == "NOT_FOUND"
    assert ok(await client.get(url, headers=alice))["status"] == "queued"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"frames": "1-999999999"}, "frames"),
        ({"frames": "5-1"}, "frames"),
        ({"frames": "abc"}, "frames"),
        ({"frames": None}, "body"),
        ({"width": 0}, "width"),
        ({"height": 10**6}, "height"),
        ({"priority": 101}, "priority"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"software": "Bad Name!"}, "software"),
        ({"output_format": "GIF"}, "output_format"),
        ({"camera": "cam\u0000era"}, "camera"),
        ({"budget": "-1"}, "budget"),
        ({"budget": "0.001"}, "budget"),
        ({"scene_file_id": "0"}, "scene_file_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_hostile_task_input(
    client: httpx.AsyncClient, alice: dict[str, str], fields: dict[str, Any], field: str
) -> None:
    body = task_body("1", **fields)
    if body.get("frames") is None:
        body.pop("frames")
    response = await client.post(f"{API}/tasks/estimate", json=body, headers=alice)
    failure = error(response, 422)
    assert failure["error"] == "VALIDATION_ERROR"
    assert any(field in detail["field"] for detail in failure["details"]), failure


async def test_scene_checks(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    await funded(client, alice, "1.00")
    text = await scene(client, alice, "notes.txt")
    refused = await create(client, alice, status=422, scene_file_id=text)
    assert refused["details"][0]["field"] == "body.scene_file_id"
    missing = await create(client, alice, status=404, scene_file_id="123456789")
    assert missing["error"] == "NOT_FOUND"
    assert (await balance(client, alice))["held"] == "0.00"
    assert ok(await client.get(f"{API}/tasks", headers=alice))["total"] == 0


async def test_legacy_field_names(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    scene_id = await scene(client, alice, "legacy.mb")
    body = {
        "task_name": "legacy",
        "scene_file": scene_id,
        "maya_version": "2024",
        "renderer": "arnold",
        "start_frame": 1,
        "end_frame": 9,
        "frame_step": 2,
        "width": 64,
        "height": 36,
        "submit": False,
    }
    task = ok(await client.post(f"{API}/tasks", json=body, headers=alice), 201)
    assert (task["name"], task["software"], task["software_version"]) == ("legacy", "maya", "2024")
    assert task["frames"] == "1-9x2" and task["frame_count"] == 5
