"""Job endpoints: the admin API under /admin/jobs, and read access for a job's owner."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query
from pydantic import BaseModel

from yuntu.identity.deps import CurrentAdmin, CurrentUser, DbSession
from yuntu.jobs import service
from yuntu.jobs.schemas import JobLogOut, JobOut, Status
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params, paginate
from yuntu.kit.text import line

router = make_router(tags=["jobs"], responses=error_responses(401, 403, 404))
JobId = Annotated[Id, Path(description="Job id")]
Pagination = Annotated[PageParams, Depends(page_params)]
Kind = Annotated[str | None, line(64), Query(description="Job kind")]


def _page(
    rows: list[Any], total: int, pagination: PageParams, model: type[BaseModel]
) -> dict[str, Any]:
    return make_page([model.model_validate(row) for row in rows], total, pagination)


@router.get("/admin/jobs", summary="List jobs (admin)")
async def admin_list(
    _admin: CurrentAdmin,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[Status | None, Query()] = None,
    kind: Kind = None,
    queue: Annotated[str | None, line(64), Query()] = None,
    owner_user_id: Annotated[Id | None, Query()] = None,
) -> Envelope[Page[JobOut]]:
    statement = service.list_statement(
        status=status, kind=kind, queue=queue, owner_user_id=owner_user_id
    )
    rows, total = await paginate(session, statement, pagination)
    return Envelope(data=Page[JobOut](**_page(rows, total, pagination, JobOut)))


@router.get("/admin/jobs/{job_id}", summary="One job (admin)")
async def admin_get(job_id: JobId, _admin: CurrentAdmin, session: DbSession) -> Envelope[JobOut]:
    return Envelope(data=JobOut.model_validate(await service.get(session, job_id)))


@router.get("/admin/jobs/{job_id}/logs", summary="A job's log, page by page (admin)")
async def admin_logs(
    job_id: JobId,
    _admin: CurrentAdmin,
    session: DbSession,
    pagination: Pagination,
    attempt: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> Envelope[Page[JobLogOut]]:
    await service.get(session, job_id)
    rows, total = await paginate(session, service.logs_statement(job_id, attempt), pagination)
    return Envelope(data=Page[JobLogOut](**_page(rows, total, pagination, JobLogOut)))


@router.post(
    "/admin/jobs/{job_id}/retry",
    summary="Retry a failed or cancelled job",
    responses=error_responses(409),
)
async def admin_retry(job_id: JobId, _admin: CurrentAdmin, session: DbSession) -> Envelope[JobOut]:
    job = await service.retry(session, await service.get(session, job_id))
    return Envelope(data=JobOut.model_validate(job))


@router.post("/admin/jobs/{job_id}/cancel", summary="Cancel a job", responses=error_responses(409))
async def admin_cancel(job_id: JobId, _admin: CurrentAdmin, session: DbSession) -> Envelope[JobOut]:
    """Queued or paused jobs are cancelled at once; a running job stops at its next checkpoint."""
    job = await service.cancel(session, await service.get(session, job_id))
    return Envelope(data=JobOut.model_validate(job))


@router.post("/admin/jobs/{job_id}/pause", summary="Pause a job", responses=error_responses(409))
async def admin_pause(job_id: JobId, _admin: CurrentAdmin, session: DbSession) -> Envelope[JobOut]:
    job = await service.pause(session, await service.get(session, job_id))
    return Envelope(data=JobOut.model_validate(job))


@router.post(
    "/admin/jobs/{job_id}/resume", summary="Resume a paused job", responses=error_responses(409)
)
async def admin_resume(job_id: JobId, _admin: CurrentAdmin, session: DbSession) -> Envelope[JobOut]:
    job = await service.resume(session, await service.get(session, job_id))
    return Envelope(data=JobOut.model_validate(job))


@router.get("/jobs/{job_id}", summary="One of my jobs (current state after reconnecting)")
async def my_job(job_id: JobId, auth: CurrentUser, session: DbSession) -> Envelope[JobOut]:
    return Envelope(data=JobOut.model_validate(await service.get(session, job_id, auth.user.id)))


@router.get("/jobs/{job_id}/logs", summary="The log of one of my jobs")
async def my_job_logs(
    job_id: JobId, auth: CurrentUser, session: DbSession, pagination: Pagination
) -> Envelope[Page[JobLogOut]]:
    await service.get(session, job_id, auth.user.id)
    rows, total = await paginate(session, service.logs_statement(job_id), pagination)
    return Envelope(data=Page[JobLogOut](**_page(rows, total, pagination, JobLogOut)))
