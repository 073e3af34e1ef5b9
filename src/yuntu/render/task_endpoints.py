"""Render tasks for their owner (Yuntu seed paths): /tasks, /tasks/estimate, /tasks/{id} and
its pause, resume, cancel, submit, logs, frames and retry. Outputs: output_endpoints.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request, Response

from yuntu.identity.deps import CurrentUser, DbSession, IdempotentUser
from yuntu.kit.errors import AppError, E
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params, paginate
from yuntu.ledger.schemas import exact_yuan_fields
from yuntu.render import billing, service, views
from yuntu.render.schemas import (
    EstimateOut,
    FrameTaskOut,
    LogPageOut,
    ResumeIn,
    RetryIn,
    TaskDetailOut,
    TaskIn,
    TaskOut,
)
from yuntu.render.states import FrameStatus, TaskStatus

router = make_router(tags=["render"], responses=error_responses(401, 404))
Pagination = Annotated[PageParams, Depends(page_params)]
TaskId = Annotated[Id, Path(description="Render task id")]


def _bus(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.bus


def _statuses(value: str | None, allowed: type[TaskStatus] | type[FrameStatus]) -> list[str]:
    if not value:
        return []
    names = [part.strip() for part in value.split(",") if part.strip()]
    known = {str(member) for member in allowed}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise AppError(
            E.VALIDATION_ERROR,
            details=[{"field": "query.status", "message": f"unknown status {unknown[0]!r}"}],
        )
    return names


async def _detail(session: DbSession, task_id: int, user_id: int) -> TaskDetailOut:
    task = await service.get(session, user_id, task_id)
    fields = views.task_fields(task)
    fields["eta_seconds"] = await service.eta_seconds(session, task)
    fields["bill_id"] = task.bill_id
    return TaskDetailOut(**fields)


@router.post(
    "/tasks/estimate",
    summary="Price a render task without creating it",
    dependencies=[exact_yuan_fields("budget")],
    responses=error_responses(422),
)
async def estimate_task(body: TaskIn, auth: CurrentUser, request: Request) -> Envelope[EstimateOut]:
    """The estimate submitting would hold: each frame task priced at the rate card from the
    renderer's predicted core-seconds at this resolution (the scene is not needed)."""
    settings = request.app.state.settings
    spec = body.spec()
    planned = service.estimate(spec, settings)
    card = billing.rate_card(settings)
    hold = planned.amount if spec.budget is None else min(planned.amount, spec.budget)
    return Envelope(
        data=EstimateOut(
            frames=len(planned.frames),
            frame_tasks=len(planned.chunks),
            estimate=planned.amount,
            core_seconds_per_frame=round(planned.core_seconds_per_frame, 3),
            price_per_core_hour=round(card.micro_fen_per_core_second * 3600 / 1_000_000),
            hold=hold,
        )
    )


@router.post(
    "/tasks",
    status_code=201,
    summary="Create and submit a render task",
    dependencies=[exact_yuan_fields("budget")],
    responses=error_responses(402, 409, 422),
)
async def create_task(
    body: TaskIn, auth: IdempotentUser, session: DbSession, request: Request
) -> Envelope[TaskDetailOut]:
    """Creates the task and its frame tasks (`chunk_size` frames each) and submits it: the
    estimate is held on the balance and the task is queued. **402 INSUFFICIENT_BALANCE** when
    the balance does not cover the estimate: the task is kept as a draft (its id is in
    `details.task_id`); recharge, then `POST /tasks/{id}/submit`. With `submit: false` the task
    is saved as a draft and nothing is held. Send an `Idempotency-Key` to retry safely."""
    task, refused = await service.create(
        session,
        auth.user.id,
        body.spec(),
        request.app.state.settings,
        submit_now=body.submit,
        bus=_bus(request),
    )
    if refused is not None:
        raise refused
    return Envelope(data=await _detail(session, task.id, auth.user.id))


@router.post(
    "/tasks/{task_id}/submit",
    summary="Submit a draft: hold the estimate and queue it",
    responses=error_responses(402, 409),
)
async def submit_task(
    task_id: TaskId, auth: IdempotentUser, session: DbSession, request: Request
) -> Envelope[TaskDetailOut]:
    task = await service.get(session, auth.user.id, task_id, for_update=True)
    refused = await service.submit(session, task, request.app.state.settings, bus=_bus(request))
    if refused is not None:
        raise refused
    return Envelope(data=await _detail(session, task.id, auth.user.id))


@router.get("/tasks", summary="My render tasks")
async def list_tasks(
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[
        str | None, Query(max_length=200, description="Comma-separated statuses")
    ] = None,
) -> Envelope[Page[TaskOut]]:
    statement = service.list_query(auth.user.id, _statuses(status, TaskStatus))
    rows, total = await paginate(session, statement, pagination)
    items = [TaskOut(**views.task_fields(task)) for task in rows]
    return Envelope(data=Page[TaskOut](**make_page(items, total, pagination)))


@router.get("/tasks/{task_id}", summary="A render task: frame counts, cost so far, ETA")
async def get_task(
    task_id: TaskId, auth: CurrentUser, session: DbSession
) -> Envelope[TaskDetailOut]:
    return Envelope(data=await _detail(session, task_id, auth.user.id))


@router.put(
    "/tasks/{task_id}/pause",
    summary="Pause: no new frame starts; running frames finish",
    responses=error_responses(409),
)
async def pause_task(
    task_id: TaskId, auth: CurrentUser, session: DbSession, request: Request
) -> Envelope[TaskDetailOut]:
    await service.pause(session, auth.user.id, task_id, bus=_bus(request))
    return Envelope(data=await _detail(session, task_id, auth.user.id))


@router.put(
    "/tasks/{task_id}/resume",
    summary="Resume a paused task (optionally with a new budget)",
    responses=error_responses(409, 422),
    dependencies=[exact_yuan_fields("budget")],
)
async def resume_task(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    request: Request,
    body: ResumeIn | None = None,
) -> Envelope[TaskDetailOut]:
    """A task paused because its budget was spent resumes only with a higher `budget` (409
    BUDGET_EXHAUSTED otherwise)."""
    budget = body.budget if body is not None else None
    await service.resume(session, auth.user.id, task_id, budget=budget, bus=_bus(request))
    return Envelope(data=await _detail(session, task_id, auth.user.id))


@router.put(
    "/tasks/{task_id}/cancel",
    summary="Cancel: stop every frame, keep what rendered, release the rest of the hold",
    responses=error_responses(409),
)
async def cancel_task(
    task_id: TaskId, auth: CurrentUser, session: DbSession, request: Request
) -> Envelope[TaskDetailOut]:
    await service.cancel(session, auth.user.id, task_id, bus=_bus(request))
    return Envelope(data=await _detail(session, task_id, auth.user.id))


@router.delete(
    "/tasks/{task_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a task (cancelled first if it could still run)",
)
async def delete_task(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    request: Request,
    delete_cloud_data: Annotated[
        bool, Query(description="Also move its output files in the drive to the trash")
    ] = False,
) -> Response:
    """The bill stays in the ledger (closed). Output files stay in the drive unless
    `delete_cloud_data=true`."""
    await service.remove(
        session, auth.user.id, task_id, delete_cloud_data=delete_cloud_data, bus=_bus(request)
    )
    return Response(status_code=204)


@router.get("/tasks/{task_id}/frames", summary="The task's frame tasks")
async def list_frames(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[str | None, Query(max_length=200)] = None,
) -> Envelope[Page[FrameTaskOut]]:
    task = await service.get(session, auth.user.id, task_id)
    statement = views.frames_query(task.id, _statuses(status, FrameStatus))
    rows, total = await paginate(session, statement, pagination)
    items = [views.frame_out(frame) for frame in rows]
    return Envelope(data=Page[FrameTaskOut](**make_page(items, total, pagination)))


@router.post(
    "/tasks/{task_id}/frames/retry",
    summary="Retry failed frame tasks (all, or those listed)",
    responses=error_responses(409),
)
async def retry_frames(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    request: Request,
    body: RetryIn | None = None,
) -> Envelope[TaskDetailOut]:
    frame_ids = body.frame_ids if body is not None else None
    await service.retry(session, auth.user.id, task_id, frame_ids, bus=_bus(request))
    return Envelope(data=await _detail(session, task_id, auth.user.id))


@router.get("/tasks/{task_id}/logs", summary="The task's log lines, oldest first")
async def task_logs(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    frame_id: Annotated[Id | None, Query(description="Only this frame task's lines")] = None,
    after: Annotated[Id | None, Query(description="Cursor: `next_cursor` of the last page")] = None,
    limit: Annotated[int, Query(ge=1, le=views.MAX_LOG_LINES)] = 200,
) -> Envelope[LogPageOut]:
    task = await service.get(session, auth.user.id, task_id)
    lines, cursor = await views.log_lines(
        session, task.id, frame_id=frame_id, after=after, limit=limit
    )
    return Envelope(data=LogPageOut(items=lines, next_cursor=cursor))


__all__ = ["router"]
