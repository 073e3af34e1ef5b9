"""Render task and frame task states, checked pair by pair against the documented rules."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yuntu.render import states
from yuntu.render.states import (
    FRAME_TRANSITIONS,
    TASK_TRANSITIONS,
    FrameCounts,
    FrameStatus,
    TaskStatus,
    can_move_frame,
    can_move_task,
    resumed,
    settle,
)

T = TaskStatus
F = FrameStatus

# The rules of the module docstring, written out once more as (source, target) pairs.
TASK_RULES = {
    (T.DRAFT, T.QUEUED),  # submit
    (T.DRAFT, T.CANCELLED),  # discard
    (T.QUEUED, T.RENDERING),  # first frame starts
    (T.QUEUED, T.PAUSED),
    (T.RENDERING, T.PAUSED),
    (T.PAUSED, T.QUEUED),  # resume, nothing running
    (T.PAUSED, T.RENDERING),  # resume, a frame still running
    (T.PAUSED, T.COMPLETED),  # the frames running at pause time were the last ones
    (T.PAUSED, T.FAILED),
    (T.RENDERING, T.COMPLETED),
    (T.RENDERING, T.FAILED),
    (T.FAILED, T.QUEUED),  # retry failed frames
    (T.QUEUED, T.CANCELLED),
    (T.RENDERING, T.CANCELLED),
    (T.PAUSED, T.CANCELLED),
}
FRAME_RULES = {
    (F.WAITING, F.RUNNING),
    (F.WAITING, F.CANCELLED),
    (F.RUNNING, F.SUCCEEDED),
    (F.RUNNING, F.WAITING),  # lease lost, agent fault, retries left
    (F.RUNNING, F.FAILED),
    (F.RUNNING, F.CANCELLED),
    (F.FAILED, F.WAITING),  # manual retry
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(T, T)))
def test_task_transition(source: TaskStatus, target: TaskStatus) -> None:
    assert can_move_task(source, target) is ((source, target) in TASK_RULES)
    assert can_move_task(str(source), str(target)) is ((source, target) in TASK_RULES)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(F, F)))
def test_frame_transition(source: FrameStatus, target: FrameStatus) -> None:
    assert can_move_frame(source, target) is ((source, target) in FRAME_RULES)


def test_tables_cover_every_state_and_are_read_only() -> None:
    assert set(TASK_TRANSITIONS) == set(T)
    assert set(FRAME_TRANSITIONS) == set(F)
    with pytest.raises(TypeError):
        TASK_TRANSITIONS[T.DRAFT] = frozenset()  # type: ignore[index]
    with pytest.raises(TypeError):
        FRAME_TRANSITIONS[F.WAITING] = frozenset()  # type: ignore[index]


def test_terminal_states_and_sources() -> None:
    assert {T.COMPLETED, T.CANCELLED} == states.TERMINAL_TASK
    assert {F.SUCCEEDED, F.CANCELLED} == states.TERMINAL_FRAME
    assert set(states.task_sources(T.CANCELLED)) == {T.DRAFT, T.QUEUED, T.RENDERING, T.PAUSED}
    assert set(states.frame_sources(F.WAITING)) == {F.RUNNING, F.FAILED}
    assert {T.QUEUED, T.RENDERING} == states.DISPATCHABLE


def test_unknown_states_are_refused() -> None:
    with pytest.raises(ValueError):
        can_move_task("draft", "exploded")
    with pytest.raises(ValueError):
        can_move_frame("dead", "waiting")


def _reachable(table: Mapping[Any, frozenset[Any]], start: object) -> set[object]:
    seen = {start}
    todo = [start]
    while todo:
        for target in table[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_state_is_reachable_from_the_start() -> None:
    assert _reachable(TASK_TRANSITIONS, T.DRAFT) == set(T)
    assert _reachable(FRAME_TRANSITIONS, F.WAITING) == set(F)


@pytest.mark.parametrize(
    ("status", "counts", "expected"),
    [
        (T.QUEUED, FrameCounts(waiting=2, running=1), T.RENDERING),
        (T.QUEUED, FrameCounts(waiting=3), T.QUEUED),
        (T.RENDERING, FrameCounts(waiting=1, succeeded=2), T.RENDERING),
        (T.RENDERING, FrameCounts(succeeded=3), T.COMPLETED),
        (T.RENDERING, FrameCounts(succeeded=2, failed=1), T.FAILED),
        (T.RENDERING, FrameCounts(running=1, failed=1), T.RENDERING),  # not before it is done
        (T.PAUSED, FrameCounts(waiting=1, succeeded=1), T.PAUSED),
        (T.PAUSED, FrameCounts(succeeded=2), T.COMPLETED),
        (T.PAUSED, FrameCounts(failed=1, succeeded=1), T.FAILED),
        (T.FAILED, FrameCounts(waiting=1, succeeded=1), T.QUEUED),  # a retry
        (T.FAILED, FrameCounts(failed=1, succeeded=1), T.FAILED),
        (T.DRAFT, FrameCounts(waiting=2), T.DRAFT),
        (T.CANCELLED, FrameCounts(cancelled=2), T.CANCELLED),
        (T.COMPLETED, FrameCounts(succeeded=2), T.COMPLETED),
        (T.RENDERING, FrameCounts(), T.RENDERING),
    ],
)
def test_settle(status: TaskStatus, counts: FrameCounts, expected: TaskStatus) -> None:
    assert settle(status, counts) == expected
    assert settle(str(status), counts) == expected


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        (T.FAILED, FrameCounts(running=1, failed=1)),
        (T.QUEUED, FrameCounts(succeeded=2)),
    ],
)
def test_settle_refuses_contradictions(status: TaskStatus, counts: FrameCounts) -> None:
    with pytest.raises(AssertionError):
        settle(status, counts)


counts_strategy = st.builds(
    FrameCounts,
    waiting=st.integers(0, 3),
    running=st.integers(0, 3),
    succeeded=st.integers(0, 3),
    failed=st.integers(0, 3),
)


@given(st.sampled_from([T.RENDERING, T.PAUSED]), counts_strategy)
def test_settle_moves_only_along_the_table(status: TaskStatus, counts: FrameCounts) -> None:
    target = settle(status, counts)
    assert target == status or can_move_task(status, target)
    if counts.total and counts.unfinished == 0:
        assert target == (T.FAILED if counts.failed else T.COMPLETED)
    else:
        assert target == status


def test_resume_target() -> None:
    assert resumed(FrameCounts(waiting=2)) == T.QUEUED
    assert resumed(FrameCounts(waiting=2, running=1)) == T.RENDERING
    assert can_move_task(T.PAUSED, resumed(FrameCounts(running=1)))


def test_frame_counts() -> None:
    counts = FrameCounts(waiting=1, running=1, succeeded=2, failed=0, cancelled=0)
    assert counts.total == 4
    assert counts.unfinished == 2
    assert counts.progress == 0.5
    assert FrameCounts().progress == 0.0
    with pytest.raises(ValueError):
        FrameCounts(waiting=-1)
