"""Claims, leases, fencing, retries and the blocklist over the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from yuntu.kit.errors import AppError
from yuntu.models.render import FrameTask, RenderTask
from yuntu.render import scheduling
from yuntu.render.scheduling import Outcome, Report
from yuntu.render.states import FrameStatus as F
from yuntu.render.states import TaskStatus as T

from .conftest import frame_ids, load, make_agent, make_task, make_user

pytestmark = pytest.mark.anyio

OK = Report(Outcome.SUCCEEDED, exit_code=0, duration_ms=1200, core_seconds=4.5)
BAD = Report(Outcome.FAILED, exit_code=1, error="Error: out of memory")


async def claim(db, agent, limit=1, **kwargs):
    async with db.transaction() as session:
        return await scheduling.claim(session, agent, limit=limit, **kwargs)


async def finish(db, frame, agent, report, attempt=None):
    async with db.transaction() as session:
        return await scheduling.finish(
            session, frame.id, agent.id, attempt or frame.attempts, report
        )


async def test_claims_follow_priority_then_age_then_sequence(render_db):
    user = await make_user(render_db, "ada")
    old = await make_task(render_db, user, spec="1-2", chunk_size=1)
    urgent = await make_task(render_db, user, spec="1-2", chunk_size=1, priority=90)
    await make_task(render_db, user, spec="1-2", chunk_size=1, status="paused")
    await make_task(render_db, user, spec="1-2", chunk_size=1, software="maya")
    agent = await make_agent(render_db)
    got = await claim(render_db, agent, limit=10)
    assert [(f.task_id, f.seq) for f in got] == [(urgent, 0), (urgent, 1), (old, 0), (old, 1)]
    assert all(f.status == F.RUNNING and f.attempts == 1 and f.agent_id == agent.id for f in got)
    assert all(f.lease_expires_at is not None for f in got)
    assert (await load(render_db, RenderTask, old)).status == T.RENDERING
    assert await claim(render_db, agent) == []


async def test_renderers_match_software_or_software_and_renderer(render_db):
    user = await make_user(render_db, "ada")
    await make_task(render_db, user, spec="1", chunk_size=1, software="maya")
    assert await claim(render_db, await make_agent(render_db, "a", ("blender",))) == []
    assert len(await claim(render_db, await make_agent(render_db, "b", ("maya/cycles",)))) == 1


async def test_a_success_completes_the_task(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-2", chunk_size=2)
    agent = await make_agent(render_db)
    (frame,) = await claim(render_db, agent)
    done = await finish(render_db, frame, agent, OK)
    assert done.frame_status == F.SUCCEEDED and done.moved.status == T.COMPLETED
    stored = await load(render_db, FrameTask, frame.id)
    assert (stored.exit_code, stored.duration_ms, stored.core_seconds) == (0, 1200, 4.5)
    assert stored.agent_id == agent.id and stored.finished_at is not None
    assert (await load(render_db, RenderTask, task_id)).finished_at is not None


async def test_an_expired_lease_requeues_and_fences_the_late_agent(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1", chunk_size=1)
    slow, other = await make_agent(render_db, "slow"), await make_agent(render_db, "other")
    (frame,) = await claim(render_db, slow, lease_seconds=30)
    later = datetime.now(UTC) + timedelta(seconds=31)
    async with render_db.transaction() as session:
        assert await scheduling.requeue_expired(session, datetime.now(UTC)) == 0
        assert await scheduling.requeue_expired(session, later) == 1
    waiting = await load(render_db, FrameTask, frame.id)
    assert waiting.status == F.WAITING and waiting.failed_agent_ids == []  # not its fault
    assert (await load(render_db, RenderTask, task_id)).frames_waiting == 1

    (again,) = await claim(render_db, other)
    assert again.id == frame.id and again.attempts == 2
    for agent, attempt in ((slow, 1), (other, 1), (slow, 2)):  # stale or someone else's
        with pytest.raises(AppError) as caught:
            await finish(render_db, frame, agent, OK, attempt=attempt)
        assert caught.value.spec.name == "INVALID_STATE"
    async with render_db.transaction() as session:
        beat = await scheduling.heartbeat(session, slow.id, {frame.id: 1})
    assert (beat.extended, beat.stop) == ([], [frame.id])
    async with render_db.transaction() as session:
        beat = await scheduling.heartbeat(session, other.id, {frame.id: 2}, 600)
    assert (beat.extended, beat.stop) == ([frame.id], [])
    async with render_db.transaction() as session:  # the extended lease outlives the old one
        assert await scheduling.requeue_expired(session, later) == 0
    done = await finish(render_db, again, other, OK)
    assert done.moved.status == T.COMPLETED


async def test_a_frame_fails_after_three_different_agents(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-2", chunk_size=1, max_retries=5)
    first_frame = (await frame_ids(render_db, task_id))[0]
    for n, name in enumerate(("a", "b", "c"), start=1):
        agent = await make_agent(render_db, name)
        (frame,) = await claim(render_db, agent)
        assert frame.id == first_frame and frame.attempts == n
        done = await finish(render_db, frame, agent, BAD)
    assert done.frame_status == F.FAILED
    stored = await load(render_db, FrameTask, first_frame)
    assert stored.status == F.FAILED and len(set(stored.failed_agent_ids)) == 3
    assert stored.last_error == "Error: out of memory"
    # the other frame still renders; then the task fails
    agent = await make_agent(render_db, "d")
    (frame,) = await claim(render_db, agent)
    done = await finish(render_db, frame, agent, OK)
    assert done.moved.status == T.FAILED


async def test_max_retries_fail_a_frame_on_one_agent(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1", chunk_size=1, max_retries=1)
    agent = await make_agent(render_db)
    (frame,) = await claim(render_db, agent)
    assert (await finish(render_db, frame, agent, BAD)).frame_status == F.WAITING
    (frame,) = await claim(render_db, agent)
    done = await finish(render_db, frame, agent, BAD)
    assert done.frame_status == F.FAILED and done.moved.status == T.FAILED
    assert (await load(render_db, RenderTask, task_id)).frames_failed == 1


async def test_an_agent_fault_is_not_the_frames_failure_but_blocklists_the_agent(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-4", chunk_size=1, max_retries=0)
    other_task = await make_task(render_db, user, spec="1", chunk_size=1)
    broken = await make_agent(render_db, "broken")
    fault = Report(Outcome.AGENT_FAULT, error="blender not found")
    for n in range(scheduling.BLOCK_AFTER):
        (frame,) = await claim(render_db, broken)
        assert frame.task_id == task_id
        done = await finish(render_db, frame, broken, fault)
        assert done.frame_status == F.WAITING  # max_retries 0, yet not failed
        assert done.agent_blocked == (n == scheduling.BLOCK_AFTER - 1)
    async with render_db.transaction() as session:
        assert await scheduling.is_blocked(session, task_id, broken.id)
    # blocklisted for that task only
    (frame,) = await claim(render_db, broken)
    assert frame.task_id == other_task
    healthy = await make_agent(render_db, "healthy")
    got = await claim(render_db, healthy, limit=10)
    assert sorted(f.task_id for f in got) == [task_id] * 4
    stored = await load(render_db, FrameTask, got[0].id)
    assert stored.failed_agent_ids == []


async def test_a_disabled_agent_and_a_cancelled_frame(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1", chunk_size=1)
    agent = await make_agent(render_db)
    agent.status = "disabled"
    assert await claim(render_db, agent) == []
    agent.status = "active"
    (frame,) = await claim(render_db, agent)
    from yuntu.render.frame_states import move_frames

    async with render_db.transaction() as session:
        await move_frames(session, task_id, [frame.id], F.RUNNING, F.CANCELLED)
    async with render_db.transaction() as session:
        beat = await scheduling.heartbeat(session, agent.id, {frame.id: 1})
    assert beat.stop == [frame.id]
    with pytest.raises(AppError):
        await finish(render_db, frame, agent, OK)


async def test_concurrent_claims_never_share_a_frame(render_db):
    import anyio

    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-12", chunk_size=1)
    agents = [await make_agent(render_db, f"a{i}") for i in range(4)]
    claimed: list[int] = []

    async def worker(agent):
        while True:
            try:
                got = await claim(render_db, agent, limit=2)
            except AppError:  # pragma: no cover - a lost race is retried
                continue
            if not got:
                return
            claimed.extend(f.id for f in got)

    async with anyio.create_task_group() as group:
        for agent in agents:
            group.start_soon(worker, agent)
    assert sorted(claimed) == sorted(await frame_ids(render_db, task_id))
    task = await load(render_db, RenderTask, task_id)
    assert (task.frames_running, task.frames_waiting) == (12, 0)
