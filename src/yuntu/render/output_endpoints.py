"""Render output endpoints: the agent's upload (`PUT /agents/frames/{frame_id}/outputs/...`,
raw bytes, no transaction held while they stream) and the owner's list and ZIP of a task's
outputs. `GET /files/download/{task_id}/{filename}` also finds outputs (drive's
download_endpoints, through `outputs.find_output`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from yuntu.drive.downloads import link_ttl
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.errors import AppError, E
from yuntu.kit.http import own_transactions, release_session
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import (
    Envelope,
    Id,
    Page,
    PageParams,
    Schema,
    UtcDatetime,
    make_page,
    page_params,
)
from yuntu.render import outputs
from yuntu.render.agent_auth import CurrentAgent

agent_router = make_router(tags=["render agents"], responses=error_responses(401, 404))
router = make_router(tags=["render"], responses=error_responses(401, 404))

TaskId = Annotated[Id, Path(description="Render task id")]
Pagination = Annotated[PageParams, Depends(page_params)]
BINARY = {"schema": {"type": "string", "format": "binary"}}


class OutputStored(Schema):
    output_id: Id
    filename: str = Field(examples=["frame_0001.png"])
    frame: int = Field(examples=[1])
    size: int = Field(examples=[123456])
    sha256: str
    path: str = Field(examples=["/renders/shot-010-7262149437321216/frame_0001.png"])
    drive_file_id: Id
    is_duplicated: bool = Field(description="The same content was already stored")


class OutputOut(Schema):
    id: Id
    filename: str = Field(examples=["frame_0001.png"])
    frame: int | None = Field(examples=[1])
    size: int
    sha256: str
    drive_file_id: Id | None = Field(description="The drive file, while it is live")
    path: str | None = Field(
        examples=["/renders/shot-010-7262149437321216/frame_0001.png"],
        description="Where the file is in the drive now (null once deleted from the drive)",
    )
    download_url: str = Field(description="Signed link to the rendered bytes")
    created_at: UtcDatetime


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@agent_router.put(
    "/agents/frames/{frame_id}/outputs/{filename:path}",
    summary="Upload one output file of a frame (render agent)",
    responses=error_responses(400, 409, 413),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": BINARY}}
    },
)
@own_transactions
async def put_output(
    request: Request,
    agent: CurrentAgent,
    frame_id: Annotated[Id, Path(description="Frame task id")],
    filename: Annotated[str, Path(max_length=1024, description="The output's file name")],
    attempt: Annotated[int, Query(ge=1, le=2**31 - 1, description="The attempt's number")],
    frame: Annotated[int, Query(ge=-(2**31), le=2**31 - 1, description="Which frame it is")],
    content_length: Annotated[int, Header(ge=0, description="Required: the body's size")],
) -> Envelope[OutputStored]:
    """The raw bytes as the body, at most `YUNTU_RENDER_MAX_OUTPUT_BYTES`. The file lands in
    the task owner's drive at `/renders/{task name}-{task id}/{filename}`, deduplicated and
    counted against the owner's quota (413 QUOTA_EXCEEDED); the same name again replaces the
    earlier output. 409 INVALID_STATE when the attempt no longer holds the frame; 422 when
    `frame` is not one of the frame task's frames; 400 INVALID_PATH for a name that is not one
    safe file name. The bytes stream to storage; no transaction is held meanwhile."""
    if content_length > request.app.state.settings.render_max_output_bytes:
        raise AppError(E.PAYLOAD_TOO_LARGE)
    await release_session(request)
    stored = await outputs.store_output(
        request.app.state.db,
        agent,
        frame_id,
        attempt,
        frame,
        filename,
        request.stream(),
        content_length,
        request.headers.get("content-type"),
    )
    return Envelope(
        data=OutputStored(
            output_id=stored.output_id,
            filename=stored.filename,
            frame=stored.frame,
            size=stored.size,
            sha256=stored.sha256,
            path=stored.path,
            drive_file_id=stored.drive_file_id,
            is_duplicated=stored.duplicated,
        )
    )


@router.get("/tasks/{task_id}/outputs", summary="A render task's outputs")
async def list_outputs(
    request: Request,
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
) -> Envelope[Page[OutputOut]]:
    """In frame order, each with a signed download link (valid for the server's link
    lifetime) to the bytes the agent rendered, even after the drive file was moved or
    deleted."""
    items, total = await outputs.list_outputs(
        session,
        auth.user.id,
        task_id,
        pagination,
        ttl=link_ttl(request.app.state.db),
        base_url=_base_url(request),
    )
    page = [OutputOut.model_validate(item, from_attributes=True) for item in items]
    return Envelope(data=Page[OutputOut](**make_page(page, total, pagination)))


ZIP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The ZIP archive (streamed)", "content": {"application/zip": BINARY}},
    **error_responses(409),
}


@router.get(
    "/tasks/{task_id}/outputs.zip",
    summary="Stream a render task's outputs as a ZIP",
    response_class=Response,
    responses=ZIP_RESPONSES,
)
async def outputs_zip(task_id: TaskId, auth: CurrentUser, session: DbSession) -> Response:
    """Store-only ZIP64 of every output, named by output file name, streamed with its
    Content-Length known up front. 409 INVALID_STATE while the task has no output."""
    return await outputs.outputs_zip(session, auth.user.id, task_id)


__all__ = ["agent_router", "router"]
