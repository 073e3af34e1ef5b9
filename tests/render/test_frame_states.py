"""Frame moves over the real database: conditional on the old state, counters and task status in
the same transaction, refusals outside the state table."""

from __future__ import annotations

import pytest

from yuntu.kit.errors import AppError
from yuntu.models.render import FrameTask, RenderTask
from yuntu.render.frame_states import move_frames
from yuntu.render.states import FrameStatus as F
from yuntu.render.states import TaskStatus as T

from .conftest import frame_ids, load, make_task, make_user

pytestmark = pytest.mark.anyio


async def test_frames_are_created_waiting_and_counted(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-5", chunk_size=2)
    task = await load(render_db, RenderTask, task_id)
    assert (task.frames_waiting, task.frame_count) == (3, 5)
    first = await load(render_db, FrameTask, (await frame_ids(render_db, task_id))[2])
    assert (first.seq, first.frames, first.frame_start, first.frame_end) == (2, [5], 5, 5)


async def test_a_move_changes_counters_and_settles_the_task(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-4", chunk_size=2)
    ids = await frame_ids(render_db, task_id)
    async with render_db.transaction() as session:
        moved = await move_frames(session, task_id, ids[:1], F.WAITING, F.RUNNING)
    assert moved.frame_ids == ids[:1]
    assert (moved.previous_status, moved.status) == (T.QUEUED, T.RENDERING)
    assert (moved.counts.waiting, moved.counts.running) == (1, 1)
    task = await load(render_db, RenderTask, task_id)
    assert task.status == T.RENDERING and task.started_at is not None
    frame = await load(render_db, FrameTask, ids[0])
    assert (frame.status, frame.attempts) == (F.RUNNING, 1)

    async with render_db.transaction() as session:
        await move_frames(session, task_id, ids[:1], F.RUNNING, F.SUCCEEDED)
        await move_frames(session, task_id, None, F.WAITING, F.RUNNING)
        done = await move_frames(session, task_id, None, F.RUNNING, F.SUCCEEDED)
    assert done.status == T.COMPLETED and done.counts.succeeded == 2
    assert (await load(render_db, RenderTask, task_id)).finished_at is not None


async def test_a_frame_not_in_the_source_state_is_not_moved(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-2", chunk_size=1)
    ids = await frame_ids(render_db, task_id)
    async with render_db.transaction() as session:
        await move_frames(session, task_id, ids[:1], F.WAITING, F.RUNNING)
    async with render_db.transaction() as session:
        # the first is running already: only the second moves, the counters by one
        moved = await move_frames(session, task_id, ids, F.WAITING, F.RUNNING)
        assert moved.frame_ids == ids[1:]
        again = await move_frames(session, task_id, ids, F.WAITING, F.RUNNING)
        assert again.frame_ids == [] and again.counts.running == 2


async def test_moves_outside_the_table_are_refused(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1", chunk_size=1)
    ids = await frame_ids(render_db, task_id)
    for source, target in (
        (F.WAITING, F.SUCCEEDED),
        (F.SUCCEEDED, F.WAITING),
        (F.WAITING, F.FAILED),
    ):
        with pytest.raises(AppError) as caught:
            async with render_db.transaction() as session:
                await move_frames(session, task_id, ids, source, target)
        assert caught.value.spec.name == "INVALID_STATE"
    assert (await load(render_db, FrameTask, ids[0])).status == F.WAITING


async def test_failed_frames_fail_the_task_and_a_retry_requeues_it(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1-2", chunk_size=1)
    ids = await frame_ids(render_db, task_id)
    async with render_db.transaction() as session:
        await move_frames(session, task_id, None, F.WAITING, F.RUNNING)
        await move_frames(session, task_id, ids[:1], F.RUNNING, F.SUCCEEDED)
        failed = await move_frames(
            session, task_id, ids[1:], F.RUNNING, F.FAILED, values={"last_error": "exit 1"}
        )
    assert failed.status == T.FAILED
    async with render_db.transaction() as session:
        retried = await move_frames(session, task_id, ids[1:], F.FAILED, F.WAITING)
    assert (retried.previous_status, retried.status) == (T.FAILED, T.QUEUED)
    task = await load(render_db, RenderTask, task_id)
    assert task.finished_at is None and task.frames_waiting == 1
    frame = await load(render_db, FrameTask, ids[1])
    assert frame.failed_agent_ids == [] and frame.attempts == 1  # attempts never go back


async def test_a_paused_task_finishes_with_its_last_running_frame(render_db):
    user = await make_user(render_db, "ada")
    task_id = await make_task(render_db, user, spec="1", chunk_size=1)
    async with render_db.transaction() as session:
        await move_frames(session, task_id, None, F.WAITING, F.RUNNING)
        task = await session.get(RenderTask, task_id)
        task.status, task.paused_reason = T.PAUSED, "user"
        await session.flush()
        done = await move_frames(session, task_id, None, F.RUNNING, F.SUCCEEDED)
    assert (done.previous_status, done.status) == (T.PAUSED, T.COMPLETED)
    assert (await load(render_db, RenderTask, task_id)).paused_reason is None
