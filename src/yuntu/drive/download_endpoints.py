"""Download endpoints: signed links for drive files and upload tasks, the `/dl` route that
serves our own signed links (outside /api/v1, no bearer token: the signature is the
permission), streaming ZIP archives, the archive job, and the render client's
`/files/upload` and `/files/download/{task_id}/{filename}`.

Binary answers (`/dl`, `*.zip`) are not enveloped; errors still use the error envelope.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Body, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from yuntu.drive import archive, downloads, scenes
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.http import own_transactions, release_session
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Schema, UtcDatetime
from yuntu.kit.text import line
from yuntu.render.outputs import find_output

router = make_router(tags=["downloads"], responses=error_responses(401, 404))
public_router = make_router(tags=["downloads"])

DriveId = Annotated[Id, Path(description="Drive id")]
FileId = Annotated[Id, Path(description="File id")]
TaskId = Annotated[Id, Path(description="Upload task id")]
ExpiresIn = Annotated[
    int | None,
    Query(ge=60, le=7 * 24 * 3600, description="Link lifetime in seconds (default: server's)"),
]

BINARY = {"schema": {"type": "string", "format": "binary"}}
ZIP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The ZIP archive (streamed)", "content": {"application/zip": BINARY}},
    **error_responses(403, 409),
}


class DownloadLink(Schema):
    url: str = Field(examples=["https://yuntu.example/dl/7262149437321216/a.png?exp=..."])
    expires_at: UtcDatetime
    filename: str = Field(examples=["a.png"])
    size: int = Field(examples=[1048576])
    md5: str = Field(examples=["9e107d9d372bb6826bd81d3542a419d6"])
    sha256: str


class TaskFileLink(Schema):
    task_file_id: Id
    path: str = Field(examples=["textures/wood.png"])
    file_id: Id
    size: int
    md5: str
    url: str


class TaskDownloads(Schema):
    task_id: Id
    expires_at: UtcDatetime
    files: list[TaskFileLink]
    total: int = Field(examples=[3])
    page: int = Field(examples=[1])
    page_size: int = Field(examples=[1000])
    pages: int = Field(examples=[1])


class ArchiveIn(BaseModel):
    archive_name: Annotated[str, line(200, 1)] | None = Field(
        default=None, description="File name without `.zip` (default: the task's name)"
    )
    format: Literal["zip"] = "zip"


class ArchiveQueued(Schema):
    job_id: Id
    status: str = Field(examples=["queued"])


class SceneUploaded(Schema):
    file_id: Id
    drive_id: Id
    path: str = Field(examples=["/scenes/local_1700000000000/scene.blend"])
    size: int
    md5: str
    sha256: str
    is_duplicated: bool = Field(description="The same content was already stored")


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- signed links ------------------------------------------------------------------------------
@router.get(
    "/drives/{drive_id}/files/{file_id}/download",
    summary="A signed download link for a file",
    response_model=Envelope[DownloadLink],
    responses={
        302: {"description": "`redirect=true`: redirect to the link"},
        **error_responses(403),
    },
)
async def file_download(
    request: Request,
    drive_id: DriveId,
    file_id: FileId,
    auth: CurrentUser,
    session: DbSession,
    version: Annotated[int | None, Query(ge=1, le=1_000_000, description="A kept version")] = None,
    redirect: Annotated[bool, Query(description="Answer 302 to the link")] = False,
    expires_in: ExpiresIn = None,
) -> Any:
    """READ access. The link serves the bytes with Range, ETag and the file's name; it is the
    storage's own presigned URL on S3, else this server's `/dl/...` link."""
    file, blob = await downloads.drive_file_blob(session, drive_id, file_id, auth.user.id, version)
    db = request.app.state.db
    link = await downloads.sign_blob(
        db,
        blob,
        file.name,
        file.mime_type,
        ttl=downloads.link_ttl(db, expires_in),
        base_url=_base_url(request),
    )
    if redirect:
        return RedirectResponse(link.url, status_code=302)
    return Envelope(
        data=DownloadLink(
            url=link.url,
            expires_at=link.expires_at,
            filename=file.name,
            size=blob.size,
            md5=blob.md5,
            sha256=blob.sha256,
        )
    )


@router.get(
    "/upload-tasks/{task_id}/download",
    summary="Signed links for every finished file of an upload task",
    responses=error_responses(409),
)
async def task_download(
    request: Request,
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000, description="Links per page (max 1000)")] = 1000,
    expires_in: ExpiresIn = None,
) -> Envelope[TaskDownloads]:
    """The owner only (404 otherwise). Needs at least one completed or instant file (409
    INVALID_STATE otherwise); completed, partially failed and running tasks all qualify. Files
    deleted from the drive since are left out. Paged by up to 1000 links in manifest order."""
    task = await downloads.finished_task(session, task_id, auth.user.id)
    db = request.app.state.db
    ttl = downloads.link_ttl(db, expires_in)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    items, total = await downloads.task_links(
        session,
        task,
        offset=(page - 1) * page_size,
        limit=page_size,
        ttl=ttl,
        base_url=_base_url(request),
    )
    return Envelope(
        data=TaskDownloads(
            task_id=task.id,
            expires_at=expires_at.replace(microsecond=0),
            files=[TaskFileLink(**item) for item in items],
            total=total,
            page=page,
            page_size=page_size,
            pages=-(-total // page_size),
        )
    )


# -- /dl: our own signed links -----------------------------------------------------------------
DL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": {"*/*": BINARY}},
    206: {"description": "The requested byte range", "content": {"*/*": BINARY}},
    304: {"description": "Not modified (If-None-Match)"},
    **error_responses(403, 404),
    416: error_responses(416)[416] | {"description": "Range not satisfiable"},
}


@public_router.get(
    "/dl/{blob_id}/{filename}",
    summary="Download through a signed link",
    response_class=Response,
    responses=DL_RESPONSES,
)
@public_router.head(
    "/dl/{blob_id}/{filename}",
    summary="Headers of a signed link's file",
    response_class=Response,
    responses=DL_RESPONSES,
)
async def signed_download(
    request: Request,
    session: DbSession,
    blob_id: Annotated[str, Path(max_length=40, description="From the signed link")],
    filename: Annotated[str, Path(max_length=1000)],
    exp: Annotated[str | None, Query(max_length=12)] = None,
    ct: Annotated[str | None, Query(max_length=200)] = None,
    sig: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Links come from the download endpoints. A forged, altered or expired link answers 403;
    purged content 404. Supports Range (one range; several get the whole file), If-Range,
    If-None-Match (304) and HEAD; `ETag` is the SHA-256."""
    db = request.app.state.db
    blob_key, expires, content_type = downloads.signer_of(db).verify(
        blob_id, filename, exp, ct, sig
    )
    blob = await downloads.served_blob(session, blob_key)
    return await downloads.blob_response(
        request,
        downloads.store_of_db(db),
        blob,
        filename=filename,
        content_type=content_type,
        expires=expires,
    )


# -- archives ----------------------------------------------------------------------------------
@router.get(
    "/upload-tasks/{task_id}/archive.zip",
    summary="Stream an upload task's finished files as a ZIP",
    response_class=Response,
    responses=ZIP_RESPONSES,
)
async def task_archive_zip(task_id: TaskId, auth: CurrentUser, session: DbSession) -> Response:
    """Store-only ZIP64 with the files' relative paths, streamed (Content-Length known up front,
    no Range). Same rules as `/download`: the owner only, at least one finished file."""
    return await archive.task_zip(session, task_id, auth.user.id)


@router.get(
    "/drives/{drive_id}/folders/{folder_id}/archive.zip",
    summary="Stream a folder and everything below it as a ZIP",
    response_class=Response,
    responses=ZIP_RESPONSES,
)
async def folder_archive_zip(
    drive_id: DriveId,
    folder_id: Annotated[Id, Path(description="Folder id")],
    auth: CurrentUser,
    session: DbSession,
) -> Response:
    """READ access. Members are named `<folder>/<relative path>`; trashed items are left out;
    at most 100,000 files (400 otherwise: archive a subfolder)."""
    return await archive.folder_zip(session, drive_id, folder_id, auth.user.id)


@router.post(
    "/upload-tasks/{task_id}/archive",
    status_code=202,
    summary="Save an upload task's ZIP into its drive (a job)",
    responses=error_responses(403, 409),
)
async def task_archive_job(
    task_id: TaskId,
    auth: CurrentUser,
    session: DbSession,
    body: Annotated[ArchiveIn | None, Body()] = None,
) -> Envelope[ArchiveQueued]:
    """Queues a job (follow it at `GET /jobs/{job_id}`) that writes
    `/archives/<archive_name or task name>.zip` into the task's drive (a free name is chosen
    on conflict). Its result holds `file_id`, `path` and a signed `download_url`. It fails,
    leaving nothing behind, when the archive does not fit the quota."""
    job = await archive.request_archive(
        session, task_id, auth.user.id, body.archive_name if body else None
    )
    return Envelope(data=ArchiveQueued(job_id=job.id, status=job.status))


# -- render client -----------------------------------------------------------------------------
SCENE_FORM = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    # No `type`: any part named `file` with a filename is the file's bytes.
                    "file": {"format": "binary", "description": "The file (its name is kept)"},
                    "task_id": {
                        "pattern": scenes.TASK_KEY_PATTERN,
                        "description": "Render task id: the file goes to `/scenes/{task_id}/`",
                    },
                },
            }
        }
    },
}


@router.post(
    "/files/upload",
    summary="Upload a scene file (render client)",
    responses=error_responses(403, 413, 415),
    openapi_extra={"requestBody": SCENE_FORM},
)
@own_transactions
async def scene_upload(
    request: Request,
    auth: CurrentUser,
    task_id: Annotated[
        str | None,
        Query(pattern=scenes.TASK_KEY_PATTERN, description="Same as the form field"),
    ] = None,
) -> Envelope[SceneUploaded]:
    """A multipart form with `file` (and optionally `task_id`, as a field or in the query).
    Stored in the default drive under `/scenes/` or `/scenes/{task_id}/` (a free name is chosen
    on conflict; a directory part of the sent name is dropped). The file streams straight to
    storage; no transaction is held meanwhile."""
    await release_session(request)
    form = scenes.StreamedForm(request.headers.get("content-type"), request.stream())
    placed = await scenes.upload_scene(
        request.app.state.db, auth.user.id, form, query_task_key=task_id
    )
    return Envelope(
        data=SceneUploaded(
            file_id=placed.file_id,
            drive_id=placed.drive_id,
            path=placed.path,
            size=placed.size,
            md5=placed.md5,
            sha256=placed.sha256,
            is_duplicated=placed.duplicated,
        )
    )


@router.get(
    "/files/download/{task_id}/{filename:path}",
    summary="Download a task's file (render client): redirect to a signed link",
    status_code=302,
    response_class=Response,
    responses={302: {"description": "Redirect to the signed link"}, **error_responses(400)},
)
async def scene_download(
    request: Request,
    task_id: Annotated[str, Path(max_length=128, description="Upload task or render task id")],
    filename: Annotated[str, Path(max_length=4096, description="Name or relative path")],
    auth: CurrentUser,
    session: DbSession,
) -> Response:
    """An output of the caller's render task `task_id`; else `filename` among the completed
    files of the caller's upload task `task_id` (by name or relative path), then in
    `/scenes/{task_id}/` of the default drive."""
    output = await find_output(session, auth.user.id, task_id, filename)
    file, blob = output or await scenes.find_render_file(session, auth.user.id, task_id, filename)
    db = request.app.state.db
    link = await downloads.sign_blob(
        db,
        blob,
        file.name if file is not None else filename,
        file.mime_type if file is not None else None,
        ttl=downloads.link_ttl(db),
        base_url=_base_url(request),
    )
    return RedirectResponse(link.url, status_code=302)


__all__ = ["public_router", "router"]
