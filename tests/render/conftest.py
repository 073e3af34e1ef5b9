"""Render fixtures: a Database on the test database, and users, drives, scene blobs, tasks and
agents created directly (no endpoints exist yet)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from yuntu.kit.db import Database
from yuntu.models.drive import Blob, Drive
from yuntu.models.identity import User
from yuntu.models.render import FrameTask, RenderAgent, RenderTask
from yuntu.render import frame_states, frames


@pytest.fixture
async def render_db(db_url: str) -> AsyncIterator[Database]:
    """Every test ends with each task's counters equal to a recount of its frames."""
    db = Database(db_url)
    try:
        yield db
        async with db.read_sessionmaker() as session:
            recount: dict[tuple[int, str], int] = {
                (task_id, status): count
                for task_id, status, count in (
                    await session.execute(
                        select(FrameTask.task_id, FrameTask.status, func.count()).group_by(
                            FrameTask.task_id, FrameTask.status
                        )
                    )
                ).all()
            }
            for task in (await session.scalars(select(RenderTask))).all():
                for status, column in frame_states.COUNTER.items():
                    assert getattr(task, column) == recount.get((task.id, str(status)), 0), (
                        f"task {task.id}: {column} drifted"
                    )
    finally:
        await db.dispose()


async def make_user(db: Database, name: str) -> int:
    async with db.transaction() as session:
        user = User(username=name, username_key=name.casefold())
        session.add(user)
        await session.flush()
        return user.id


async def make_task(
    db: Database,
    user_id: int,
    *,
    spec: str = "1-6",
    chunk_size: int = 2,
    status: str = "queued",
    priority: int = 50,
    software: str = "blender",
    max_retries: int = 3,
    **extra: Any,
) -> int:
    """A submitted task over a fresh scene blob (one reference: the task's) with its frames."""
    async with db.transaction() as session:
        drive = Drive(name=f"d-{secrets.token_hex(3)}", owner_user_id=user_id)
        content = secrets.token_bytes(16)
        blob = Blob(
            sha256=hashlib.sha256(content).hexdigest(),
            md5=hashlib.md5(content).hexdigest(),
            size=len(content),
            storage_key=f"test/{secrets.token_hex(8)}",
            ref_count=1,
        )
        session.add_all([drive, blob])
        await session.flush()
        listed = frames.parse(spec)
        task = RenderTask(
            user_id=user_id,
            name="shot",
            scene_blob_id=blob.id,
            scene_name="scene.blend",
            software=software,
            renderer="cycles",
            frame_spec=frames.normalize(spec),
            frame_count=len(listed),
            resolution_x=64,
            resolution_y=36,
            priority=priority,
            chunk_size=chunk_size,
            max_retries=max_retries,
            drive_id=drive.id,
            status=status,
            **extra,
        )
        session.add(task)
        await session.flush()
        await frame_states.add_frames(session, task, frames.chunk(listed, chunk_size))
        return task.id


async def make_agent(
    db: Database, name: str = "agent", renderers: tuple[str, ...] = ("blender",)
) -> RenderAgent:
    async with db.transaction() as session:
        agent = RenderAgent(
            name=name,
            token_hash=hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
            token_prefix="ra_test",
            renderers=list(renderers),
            slots=1,
        )
        session.add(agent)
        await session.flush()
        session.expunge(agent)
        return agent


async def load(db: Database, model: Any, row_id: int) -> Any:
    async with db.read_sessionmaker() as session:
        return await session.get(model, row_id)


async def frame_ids(db: Database, task_id: int) -> list[int]:
    async with db.read_sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(FrameTask.id).where(FrameTask.task_id == task_id).order_by(FrameTask.seq)
                )
            ).all()
        )
