"""The render agent protocol under /api/v1/agents (docs/render-agents.md): register, heartbeat,
claim, log lines and finish. Every call authenticates with the agent's token (`CurrentAgent`);
output uploads live in their own module."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request

from yuntu.identity.deps import DbSession
from yuntu.kit.errors import AppError, E
from yuntu.kit.http import own_transactions, release_session
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id
from yuntu.ledger.money import fen_to_str
from yuntu.render import agents, dispatch
from yuntu.render.agent_auth import CurrentAgent
from yuntu.render.agent_schemas import (
    Assignment,
    ClaimIn,
    ClaimOut,
    FinishedItem,
    FinishIn,
    FinishManyIn,
    FinishManyOut,
    FinishOut,
    HeartbeatIn,
    HeartbeatOut,
    LogIn,
    LogOut,
    RegisterIn,
    RegisterOut,
)
from yuntu.render.scheduling import Report

router = make_router(prefix="/agents", tags=["render agents"], responses=error_responses(401))
FrameId = Annotated[Id, Path(description="Frame task id (from the assignment)")]
ATTEMPT_ERRORS = error_responses(404, 409)


@router.post("/register", summary="Register: hostname, renderers, slots, version")
async def register(
    request: Request, body: RegisterIn, agent: CurrentAgent, session: DbSession
) -> Envelope[RegisterOut]:
    """Call it at start and whenever what the agent runs changes; its status (active or
    disabled) stays. The answer carries the timings the agent must follow."""
    agent = await agents.register(
        session,
        agent,
        hostname=body.hostname,
        renderers=body.renderers,
        slots=body.slots,
        version=body.version,
    )
    settings = request.app.state.settings
    return Envelope(
        data=RegisterOut(
            agent_id=agent.id,
            name=agent.name,
            lease_seconds=settings.render_lease_seconds,
            heartbeat_seconds=settings.render_heartbeat_seconds,
            poll_seconds=settings.render_poll_seconds,
            claim_wait_seconds=settings.render_claim_wait_seconds,
        )
    )


@router.post("/heartbeat", summary="Keep the leases of the running attempts")
async def heartbeat(
    body: HeartbeatIn, agent: CurrentAgent, session: DbSession
) -> Envelope[HeartbeatOut]:
    """Every lease still held is extended by `lease_seconds`; the frames in `stop` are no longer
    this attempt's (lease lost, task cancelled): kill their renderers and do not finish them."""
    beat = await dispatch.heartbeat(
        session, agent, {item.frame_id: item.attempt for item in body.running}
    )
    return Envelope(data=HeartbeatOut(extended=beat.extended, stop=beat.stop))


@router.post("/claim", summary="Claim waiting frames")
@own_transactions
async def claim(request: Request, body: ClaimIn, agent: CurrentAgent) -> Envelope[ClaimOut]:
    """Up to `limit` frames, never more than the agent's slots, by task priority, then age,
    then place in the task; empty when nothing waits, or when the agent is disabled. Each comes
    with a signed scene link and its lease. With `wait`, an empty answer waits up to that long
    for work to arrive (a task submitted, resumed or retried, a frame back in waiting)."""
    await release_session(request)
    assigned = await dispatch.claim_for_agent(
        request.app.state.db,
        agent.id,
        limit=body.limit,
        renderers=body.renderers,
        base_url=str(request.base_url).rstrip("/"),
        wait=body.wait,
    )
    return Envelope(data=ClaimOut(frames=[Assignment.model_validate(a) for a in assigned]))


@router.post(
    "/frames/{frame_id}/log", summary="Send log lines of an attempt", responses=ATTEMPT_ERRORS
)
async def log_lines(
    frame_id: FrameId, body: LogIn, agent: CurrentAgent, session: DbSession
) -> Envelope[LogOut]:
    """Up to 500 lines a call (batch about once a second); each is cut to 4000 characters.
    409 INVALID_STATE when the attempt no longer holds the frame: stop it."""
    stop = await dispatch.record_log(
        session, agent, frame_id, body.attempt, [(item.level, item.line) for item in body.lines]
    )
    return Envelope(data=LogOut(stop=stop))


def _report(body: FinishIn) -> Report:
    return Report(
        outcome=body.outcome,
        exit_code=body.exit_code,
        duration_ms=body.duration_ms,
        core_seconds=body.core_seconds,
        peak_memory_bytes=body.peak_memory_bytes,
        error=body.error,
    )


@router.post("/finish", summary="Finish several attempts at once")
async def finish_many(
    body: FinishManyIn, agent: CurrentAgent, session: DbSession
) -> Envelope[FinishManyOut]:
    """The same as one `frames/{id}/finish` per item, in one transaction, for agents whose
    frames end together (short frames, many slots). An item whose attempt no longer holds its
    frame gets its own error (`INVALID_STATE`, or `NOT_FOUND`) and the others go on; any other
    error fails the whole batch, which then changed nothing and may be sent again."""
    answers: list[FinishedItem] = []
    for item in body.items:
        try:
            finished, cost = await dispatch.finish_frame(
                session, agent, item.frame_id, item.attempt, _report(item)
            )
        except AppError as exc:
            # both are raised before the item wrote anything
            if exc.spec not in (E.INVALID_STATE, E.NOT_FOUND):
                raise
            answers.append(
                FinishedItem(frame_id=item.frame_id, error=exc.spec.name, message=str(exc))
            )
            continue
        answers.append(
            FinishedItem(
                frame_id=item.frame_id,
                frame_status=str(finished.frame_status),
                agent_blocked=finished.agent_blocked,
                cost=fen_to_str(cost),
            )
        )
    return Envelope(data=FinishManyOut(items=answers))


@router.post("/frames/{frame_id}/finish", summary="Finish an attempt", responses=ATTEMPT_ERRORS)
async def finish(
    frame_id: FrameId, body: FinishIn, agent: CurrentAgent, session: DbSession
) -> Envelope[FinishOut]:
    """`succeeded` (exit code 0, every output uploaded: charged at the rate card), `failed`
    (counts against the frame's retries and the agent's record on the task) or `agent_fault`
    (the frame waits again, not counted against it). 409 INVALID_STATE when the attempt no
    longer holds the frame: its result is discarded."""
    finished, cost = await dispatch.finish_frame(
        session, agent, frame_id, body.attempt, _report(body)
    )
    return Envelope(
        data=FinishOut(
            frame_status=str(finished.frame_status),
            agent_blocked=finished.agent_blocked,
            cost=fen_to_str(cost),
        )
    )
