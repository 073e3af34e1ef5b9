"""The job state machine: one table of allowed transitions."""

from __future__ import annotations

from yuntu.kit.errors import AppError, E
from yuntu.models.jobs import JobStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    # claimed by a worker; paused or cancelled before it started
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.CANCELLED}),
    # finished; retried (error, lease expiry, hand-back at shutdown); paused or cancelled
    # cooperatively at a checkpoint
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED, S.PAUSED, S.CANCELLED}),
    S.PAUSED: frozenset({S.QUEUED, S.CANCELLED}),
    # an operator's retry
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
    S.SUCCEEDED: frozenset(),
}

TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})


def can_move(current: str, target: str) -> bool:
    return S(target) in TRANSITIONS[S(current)]


def sources_of(target: S) -> tuple[str, ...]:
    """States from which `target` is allowed: the WHERE clause of a conditional update."""
    return tuple(str(state) for state, targets in TRANSITIONS.items() if target in targets)


def ensure_can_move(current: str, target: str) -> None:
    if not can_move(current, target):
        raise AppError(
            E.CONFLICT,
            message=f"a {current} job cannot become {target}",
            details={"status": current, "target": target},
        )
