"""Render agent administration under /api/v1/admin/render/agents (role admin): create with a
token shown once, list, disable, enable, new token, revoke. Every change is audited."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from yuntu.identity.deps import ClientInfo, CurrentAdmin, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params, paginate
from yuntu.models.render import AgentStatus, FrameTask, RenderAgent
from yuntu.render import agents
from yuntu.render.agent_schemas import AgentCreate, AgentCreated, AgentFrame, AgentOut

router = make_router(
    prefix="/admin/render/agents", tags=["admin"], responses=error_responses(401, 403)
)
AgentId = Annotated[Id, Path(description="Render agent id")]
Pagination = Annotated[PageParams, Depends(page_params)]


def _out(
    request: Request, agent: RenderAgent, running: Sequence[FrameTask], now: datetime
) -> AgentOut:
    lease = request.app.state.settings.render_lease_seconds
    return AgentOut(
        id=agent.id,
        name=agent.name,
        status=agent.status,
        token_prefix=agent.token_prefix,
        renderers=list(agent.renderers),
        slots=agent.slots,
        hostname=agent.hostname,
        last_heartbeat_at=agent.last_heartbeat_at,
        online=agents.is_online(agent, lease, now),
        running=[
            AgentFrame(
                frame_id=frame.id,
                task_id=frame.task_id,
                attempt=frame.attempts,
                frames=list(frame.frames),
                started_at=frame.started_at,
                lease_expires_at=frame.lease_expires_at,
            )
            for frame in running
        ],
        created_by=agent.created_by,
        created_at=agent.created_at,
    )


async def _one(request: Request, session: DbSession, agent: RenderAgent) -> AgentOut:
    running = await agents.running_frames(session, [agent.id])
    return _out(request, agent, running[agent.id], datetime.now(UTC))


@router.post("", status_code=201, summary="Create a render agent (token shown once)")
async def create_agent(
    request: Request, body: AgentCreate, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[AgentCreated]:
    """The answer carries the agent's token in `token`: give it to the agent now
    (`yuntu agent --token`), it is never shown again (the database keeps its SHA-256). The
    name `local` belongs to the agent embedded in `yuntu serve` (409)."""
    agent, token = await agents.create(
        session, name=body.name, actor_id=admin.user.id, ip=client.ip
    )
    out = await _one(request, session, agent)
    return Envelope(data=AgentCreated(**out.model_dump(), token=token))


@router.get("", summary="List render agents")
async def list_agents(
    request: Request,
    _admin: CurrentAdmin,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[AgentStatus | None, Query(description="Only agents in this state")] = None,
) -> Envelope[Page[AgentOut]]:
    """Oldest first, with what each runs now and whether it was heard from within a lease."""
    rows, total = await paginate(session, agents.list_statement(status), pagination)
    running = await agents.running_frames(session, [agent.id for agent in rows])
    now = datetime.now(UTC)
    items = [_out(request, agent, running[agent.id], now) for agent in rows]
    return Envelope(data=Page[AgentOut](**make_page(items, total, pagination)))


@router.get("/{agent_id}", summary="One render agent", responses=error_responses(404))
async def get_agent(
    request: Request, agent_id: AgentId, _admin: CurrentAdmin, session: DbSession
) -> Envelope[AgentOut]:
    return Envelope(data=await _one(request, session, await agents.get(session, agent_id)))


@router.post(
    "/{agent_id}/disable", summary="Stop dispatch to an agent", responses=error_responses(404, 409)
)
async def disable_agent(
    request: Request, agent_id: AgentId, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[AgentOut]:
    """It still authenticates, heartbeats and finishes what it runs, but is offered no new
    frame. Idempotent; 409 for a revoked agent."""
    agent = await agents.set_dispatch(
        session, agent_id, enabled=False, actor_id=admin.user.id, ip=client.ip
    )
    return Envelope(data=await _one(request, session, agent))


@router.post(
    "/{agent_id}/enable", summary="Resume dispatch to an agent", responses=error_responses(404, 409)
)
async def enable_agent(
    request: Request, agent_id: AgentId, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[AgentOut]:
    """Idempotent; 409 for a revoked agent (issue it a new token instead)."""
    agent = await agents.set_dispatch(
        session, agent_id, enabled=True, actor_id=admin.user.id, ip=client.ip
    )
    return Envelope(data=await _one(request, session, agent))


@router.post(
    "/{agent_id}/token",
    summary="Issue a new token (the old one stops working)",
    responses=error_responses(404),
)
async def new_token(
    request: Request, agent_id: AgentId, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[AgentCreated]:
    """Shown once, like at creation. A revoked agent becomes active again."""
    agent, token = await agents.issue_token(session, agent_id, actor_id=admin.user.id, ip=client.ip)
    out = await _one(request, session, agent)
    return Envelope(data=AgentCreated(**out.model_dump(), token=token))


@router.post("/{agent_id}/revoke", summary="Revoke an agent", responses=error_responses(404))
async def revoke_agent(
    request: Request, agent_id: AgentId, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[AgentOut]:
    """Its token stops working at once and the frames it runs go back to waiting (not counted
    against them). Idempotent. A new token brings the agent back."""
    agent = await agents.revoke(session, agent_id, actor_id=admin.user.id, ip=client.ip)
    return Envelope(data=await _one(request, session, agent))
