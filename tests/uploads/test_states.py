"""The upload state machines: the tables, the one move function that enforces them, and the
derived task status, which may only make moves its table allows."""

from __future__ import annotations

from itertools import product
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tests.conftest import bearer, register
from tests.uploads.test_transfer import file_ids, make_task
from yuntu.kit.errors import AppError
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.uploads.states import (
    FILE_TRANSITIONS,
    TASK_TRANSITIONS,
    FileStatus,
    TaskStatus,
    can_move_file,
    derive_task_status,
    move_file,
)


def test_tables_cover_every_state_and_terminal_states_have_no_exit() -> None:
    assert set(FILE_TRANSITIONS) == set(FileStatus)
    assert set(TASK_TRANSITIONS) == set(TaskStatus)
    for table in (FILE_TRANSITIONS, TASK_TRANSITIONS):
        for source, targets in table.items():
            assert source not in targets  # no self-loops: a move always changes something
    for terminal in (FileStatus.COMPLETED, FileStatus.INSTANT, FileStatus.CANCELLED):
        assert FILE_TRANSITIONS[terminal] == frozenset()
    assert TASK_TRANSITIONS[TaskStatus.COMPLETED] == frozenset()
    assert TASK_TRANSITIONS[TaskStatus.CANCELLED] == frozenset()
    # a failed file can only come back through a retry (pending) or be cancelled
    assert FILE_TRANSITIONS[FileStatus.FAILED] == {FileStatus.PENDING, FileStatus.CANCELLED}


def _task(
    status: str,
    total: int,
    completed: int,
    instant: int,
    failed: int,
    cancelled: int,
    started: bool,
) -> UploadTask:
    from datetime import UTC, datetime

    return UploadTask(
        status=status,
        total_files=total,
        completed_files=completed,
        instant_files=instant,
        failed_files=failed,
        cancelled_files=cancelled,
        started_at=datetime.now(UTC) if started else None,
    )


@given(
    st.sampled_from([s for s in TaskStatus if s != TaskStatus.CANCELLED]),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(0, 4),
    st.booleans(),
)
def test_derived_status_is_consistent(
    status: TaskStatus,
    pending: int,
    completed: int,
    instant: int,
    failed: int,
    cancelled: int,
    started: bool,
) -> None:
    total = pending + completed + instant + failed + cancelled
    task = _task(
        status, total, completed, instant, failed, cancelled, started or (total - pending) > 0
    )
    derived = derive_task_status(task)
    if pending:
        assert derived in (TaskStatus.PENDING, TaskStatus.UPLOADING)
    elif failed == 0 and cancelled == 0:
        assert derived == TaskStatus.COMPLETED
    elif completed + instant == 0:
        assert derived in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    else:
        assert derived == TaskStatus.PARTIALLY_FAILED


def test_a_cancelled_task_stays_cancelled() -> None:
    task = _task(TaskStatus.CANCELLED, 3, 3, 0, 0, 0, True)
    assert derive_task_status(task) == TaskStatus.CANCELLED


pytestmark = pytest.mark.anyio


async def test_move_file_enforces_the_table(client: httpx.AsyncClient, app: Any) -> None:
    """Every (current, target) pair: allowed ones are the table's; the rest answer 409 and
    change nothing."""
    headers = bearer(await register(client))
    task = await make_task(client, headers, {"a.bin": b"abc"})
    file_id = int(file_ids(task)["a.bin"])
    for current, target in product(FileStatus, FileStatus):
        if current == target or can_move_file(current, target):
            continue
        async with app.state.db.sessionmaker() as session:
            row = await session.get(UploadTaskFile, file_id)
            owner = await session.get(UploadTask, row.task_id)
            row.status = str(current)  # pretend, inside a transaction we roll back
            await session.flush()
            with pytest.raises(AppError) as refused:
                await move_file(session, owner, row, target)
            assert refused.value.spec.name == "INVALID_STATE"
            await session.rollback()
    async with app.state.db.read_sessionmaker() as session:
        assert (
            await session.scalar(select(UploadTaskFile.status).where(UploadTaskFile.id == file_id))
            == "pending"
        )
