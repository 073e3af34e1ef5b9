"""Render task and frame task states: the tables of allowed moves, and the one rule that derives
a task's state from its frames' counts.

Same-state moves are not in the tables: callers treat them as no-ops, never as transitions.

Render task (`TASK_TRANSITIONS`):
- draft -> queued: submitted (the estimate is held on the balance); draft -> cancelled:
  discarded before submission.
- queued -> rendering: the first frame task starts running.
- queued | rendering -> paused: the user pauses, or the budget cap is reached. A pause stops new
  dispatch only; running frames finish, as in OpenCue and Flamenco.
- paused -> queued | rendering: resume. It goes back to queued when no frame is running and to
  rendering when a frame still is (`resumed`).
- paused -> completed | failed: the frames still running when the task was paused were its
  last ones, so the task finishes while paused.
- rendering -> completed: every frame succeeded.
- rendering -> failed: nothing is left to run (no frame waiting or running) and at least one
  frame failed after its retries. As in OpenCue (a job with dead frames) and Flamenco (a failed
  job), a task with failed frames is `failed`, not "completed with failures": its outputs are
  incomplete, and retrying the failed frames is how the user gets a complete one.
- failed -> queued: the user retries failed frames (they go back to waiting).
- draft | queued | rendering | paused -> cancelled: the user cancels; waiting and running frames
  are cancelled.
- completed and cancelled are final. A completed task's frames are re-rendered by a new task,
  never by retrying succeeded frames (that would bill and overwrite them twice).

Frame task (`FRAME_TRANSITIONS`):
- waiting -> running: an agent claims it; waiting -> cancelled: the task is cancelled.
- running -> succeeded: the renderer exited 0 and its outputs are stored.
- running -> waiting: the attempt ended without a verdict on the frame: the agent's lease
  expired, the agent reported a fault of its own, or the frame failed with retries left.
- running -> failed: the frame failed with no retries left (max retries, or three different
  agents, the later session's rules).
- running -> cancelled: the task is cancelled; the agent is told to stop.
- failed -> waiting: the user retries it.
- succeeded and cancelled are final. Pausing never touches frame states (waiting frames simply
  are not dispatched), so no frame needs to come back from cancelled: only a cancel cancels
  frames, and a cancelled task never runs again. A failed frame stays failed when its task is
  cancelled, so the record shows why it did not render.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class TaskStatus(StrEnum):
    DRAFT = "draft"
    QUEUED = "queued"
    RENDERING = "rendering"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FrameStatus(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


T = TaskStatus
F = FrameStatus

TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = MappingProxyType(
    {
        T.DRAFT: frozenset({T.QUEUED, T.CANCELLED}),
        T.QUEUED: frozenset({T.RENDERING, T.PAUSED, T.CANCELLED}),
        T.RENDERING: frozenset({T.PAUSED, T.COMPLETED, T.FAILED, T.CANCELLED}),
        T.PAUSED: frozenset({T.QUEUED, T.RENDERING, T.COMPLETED, T.FAILED, T.CANCELLED}),
        T.FAILED: frozenset({T.QUEUED}),
        T.COMPLETED: frozenset(),
        T.CANCELLED: frozenset(),
    }
)

FRAME_TRANSITIONS: Mapping[FrameStatus, frozenset[FrameStatus]] = MappingProxyType(
    {
        F.WAITING: frozenset({F.RUNNING, F.CANCELLED}),
        F.RUNNING: frozenset({F.SUCCEEDED, F.WAITING, F.FAILED, F.CANCELLED}),
        F.FAILED: frozenset({F.WAITING}),
        F.SUCCEEDED: frozenset(),
        F.CANCELLED: frozenset(),
    }
)

TERMINAL_TASK = frozenset(s for s, targets in TASK_TRANSITIONS.items() if not targets)
TERMINAL_FRAME = frozenset(s for s, targets in FRAME_TRANSITIONS.items() if not targets)
# States in which a task's frames may be dispatched to agents.
DISPATCHABLE = frozenset({T.QUEUED, T.RENDERING})


def can_move_task(source: str, target: str) -> bool:
    """Whether a task may move from `source` to `target` (ValueError for unknown states)."""
    return TaskStatus(target) in TASK_TRANSITIONS[TaskStatus(source)]


def can_move_frame(source: str, target: str) -> bool:
    """Whether a frame task may move from `source` to `target` (ValueError for unknown states)."""
    return FrameStatus(target) in FRAME_TRANSITIONS[FrameStatus(source)]


def task_sources(target: TaskStatus) -> tuple[TaskStatus, ...]:
    """The states a task may reach `target` from (for conditional updates)."""
    return tuple(s for s, targets in TASK_TRANSITIONS.items() if target in targets)


def frame_sources(target: FrameStatus) -> tuple[FrameStatus, ...]:
    """The states a frame task may reach `target` from (for conditional updates)."""
    return tuple(s for s, targets in FRAME_TRANSITIONS.items() if target in targets)


@dataclass(frozen=True, slots=True)
class FrameCounts:
    """How many frame tasks of one render task are in each state."""

    waiting: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    def __post_init__(self) -> None:
        if min(self.waiting, self.running, self.succeeded, self.failed, self.cancelled) < 0:
            raise ValueError("frame counts cannot be negative")

    @property
    def total(self) -> int:
        return self.waiting + self.running + self.succeeded + self.failed + self.cancelled

    @property
    def unfinished(self) -> int:
        """Frames that may still run: waiting or running."""
        return self.waiting + self.running

    @property
    def progress(self) -> float:
        """Succeeded frames over all frames, 0.0 to 1.0 (0.0 for a task without frames)."""
        return self.succeeded / self.total if self.total else 0.0


def settle(status: TaskStatus | str, counts: FrameCounts) -> TaskStatus:
    """The state a task in `status` moves to after its frames reached `counts` (`status`
    itself when nothing changes). Drafts, cancelled and completed tasks never move here: only
    the user submits or cancels.

    - nothing left to run: `failed` when any frame failed, else `completed` (also from paused);
    - queued with a frame running: `rendering`;
    - failed with frames back in waiting (a retry): `queued`.

    AssertionError when the counts contradict the state (a frame running in a failed task, a
    queued task with nothing left to run): a bug upstream, not a user error."""
    current = TaskStatus(status)
    if current in (T.DRAFT, T.CANCELLED, T.COMPLETED) or counts.total == 0:
        return current
    if counts.unfinished == 0:
        target = T.FAILED if counts.failed else T.COMPLETED
    elif current == T.QUEUED and counts.running:
        target = T.RENDERING
    elif current == T.FAILED and not counts.running:
        target = T.QUEUED
    elif current == T.FAILED:
        raise AssertionError(f"render task {current} has running frames: {counts}")
    else:
        return current
    if target != current and target not in TASK_TRANSITIONS[current]:
        raise AssertionError(f"render task {current} cannot settle to {target} with {counts}")
    return target


def resumed(counts: FrameCounts) -> TaskStatus:
    """Where a paused task goes when the user resumes it."""
    return T.RENDERING if counts.running else T.QUEUED
