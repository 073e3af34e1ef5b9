"""Jobs over HTTP: the admin API and an owner's read access."""

from __future__ import annotations

import pytest

from tests.conftest import API, bearer, make_admin, register
from yuntu.jobs import service

pytestmark = pytest.mark.anyio


@pytest.fixture
async def people(app, client):
    admin = await make_admin(client, app, "jobadmin")
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    return admin, alice, bob


async def test_admin_lists_steers_and_reads_logs(app, client, people):
    admin, alice, _bob = people
    async with app.state.db.transaction() as session:
        job = await service.enqueue(
            session, "test.noop", {"n": 1}, owner_user_id=int(alice["user"]["id"])
        )
        await service.enqueue(session, "other.kind")
    listed = await client.get(f"{API}/admin/jobs?kind=test.noop", headers=bearer(admin))
    assert listed.status_code == 200
    page = listed.json()["data"]
    assert page["total"] == 1 and page["items"][0]["id"] == str(job.id)
    assert page["items"][0]["owner_user_id"] == alice["user"]["id"]
    by_status = await client.get(f"{API}/admin/jobs?status=queued", headers=bearer(admin))
    assert by_status.json()["data"]["total"] == 2
    detail = await client.get(f"{API}/admin/jobs/{job.id}", headers=bearer(admin))
    assert detail.json()["data"]["status"] == "queued"

    paused = await client.post(f"{API}/admin/jobs/{job.id}/pause", headers=bearer(admin))
    assert paused.json()["data"]["status"] == "paused"
    again = await client.post(f"{API}/admin/jobs/{job.id}/pause", headers=bearer(admin))
    assert again.status_code == 409 and again.json()["error"] == "CONFLICT"
    resumed = await client.post(f"{API}/admin/jobs/{job.id}/resume", headers=bearer(admin))
    assert resumed.json()["data"]["status"] == "queued"
    retry_queued = await client.post(f"{API}/admin/jobs/{job.id}/retry", headers=bearer(admin))
    assert retry_queued.status_code == 409
    cancelled = await client.post(f"{API}/admin/jobs/{job.id}/cancel", headers=bearer(admin))
    assert cancelled.json()["data"]["status"] == "cancelled"
    retried = await client.post(f"{API}/admin/jobs/{job.id}/retry", headers=bearer(admin))
    assert retried.json()["data"]["status"] == "queued" and retried.json()["data"]["attempts"] == 0
    logs = await client.get(f"{API}/admin/jobs/{job.id}/logs", headers=bearer(admin))
    assert logs.status_code == 200 and logs.json()["data"]["items"] == []


async def test_non_admins_and_strangers(app, client, people):
    _admin, alice, bob = people
    async with app.state.db.transaction() as session:
        job = await service.enqueue(session, "test.noop", owner_user_id=int(alice["user"]["id"]))
    assert (await client.get(f"{API}/admin/jobs", headers=bearer(alice))).status_code == 403
    assert (await client.get(f"{API}/admin/jobs")).status_code == 401
    mine = await client.get(f"{API}/jobs/{job.id}", headers=bearer(alice))
    assert mine.status_code == 200 and mine.json()["data"]["kind"] == "test.noop"
    assert (await client.get(f"{API}/jobs/{job.id}/logs", headers=bearer(alice))).status_code == 200
    for path in (f"/jobs/{job.id}", f"/jobs/{job.id}/logs"):
        foreign = await client.get(f"{API}{path}", headers=bearer(bob))
        assert foreign.status_code == 404 and foreign.json()["error"] == "NOT_FOUND"
    missing = await client.get(f"{API}/jobs/123456789", headers=bearer(alice))
    assert missing.status_code == 404
    bad = await client.get(f"{API}/jobs/not-a-number", headers=bearer(alice))
    assert bad.status_code == 422
