"""Package administration under /api/v1/packages: packages, versions, processing logs, publish
and rollback. Writes need an admin, or a user or API key granted `packages:admin`; reads also
accept `packages:read`. Every write is audited (`GET /api/v1/admin/audit`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Request

from yuntu.drive.scenes import upload_name
from yuntu.identity.deps import ClientInfo, DbSession, Principal, require_scope
from yuntu.identity.service import Client
from yuntu.kit.forms import StreamedForm, field_error
from yuntu.kit.http import own_transactions, release_session
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import (
    Envelope,
    FilterDatetime,
    Id,
    Page,
    PageParams,
    make_page,
    page_params,
    paginate,
)
from yuntu.kit.text import clean_text
from yuntu.models.packages import Package, PackageVersion
from yuntu.packages import delivery, service, versions
from yuntu.packages.schemas import (
    PackageCreate,
    PackageOut,
    PackageUpdate,
    Platform,
    PublishIn,
    RollbackIn,
    StepOut,
    VersionDetail,
    VersionOut,
)
from yuntu.packages.service import Actor
from yuntu.settings import Settings

router = make_router(prefix="/packages", tags=["packages"], responses=error_responses(401, 403))
PackageAdmin = Annotated[Principal, require_scope("packages:admin")]
PackageReader = Annotated[Principal, require_scope("packages:read")]
PackageId = Annotated[Id, Path(description="Package id")]
VersionId = Annotated[Id, Path(description="Version id")]
Pagination = Annotated[PageParams, Depends(page_params)]
MAX_NOTES = 10_000


def actor_of(principal: Principal, client: Client) -> Actor:
    return Actor(
        user_id=principal.user.id if principal.user else None,
        api_key_id=principal.api_key.id if principal.api_key else None,
        ip=client.ip,
    )


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def package_out(request: Request, package: Package) -> PackageOut:
    settings = _settings(request)
    base = settings.packages_cdn_base_url or str(request.base_url).rstrip("/")
    link = base + delivery.link_path(package.id, package.download_name or package.name)
    fields = {name: getattr(package, name) for name in _PACKAGE_FIELDS}
    return PackageOut.model_validate({**fields, "download_url": link})


_PACKAGE_FIELDS = (
    "id",
    "name",
    "platform",
    "description",
    "download_name",
    "status",
    "disabled",
    "current_version_id",
    "version_count",
    "created_by",
    "created_at",
    "updated_at",
    "published_at",
)


def version_out(version: PackageVersion, current_id: int | None) -> VersionOut:
    out = VersionOut.model_validate(version)
    out.is_current = version.id == current_id
    return out


@router.post("", status_code=201, summary="Create a package", responses=error_responses(409))
async def create_package(
    request: Request,
    body: PackageCreate,
    principal: PackageAdmin,
    session: DbSession,
    client: ClientInfo,
) -> Envelope[PackageOut]:
    """The name is unique (case-insensitive) and becomes `/dist/by-name/{name}`."""
    package = await service.create(
        session,
        actor_of(principal, client),
        name=body.name,
        platform=body.platform,
        description=body.description,
        download_name=body.download_name,
    )
    return Envelope(data=package_out(request, package))


@router.get("", summary="List packages")
async def list_packages(
    request: Request,
    session: DbSession,
    pagination: Pagination,
    _principal: PackageReader,
    name: Annotated[str | None, Query(max_length=100, description="Part of the name")] = None,
    platform: Annotated[Platform | None, Query()] = None,
    status: Annotated[
        Literal["no_version", "processing", "processing_failed", "available", "disabled"] | None,
        Query(),
    ] = None,
    created_from: Annotated[FilterDatetime | None, Query(description="Created at or after")] = None,
    created_to: Annotated[FilterDatetime | None, Query(description="Created before")] = None,
) -> Envelope[Page[PackageOut]]:
    statement = service.list_statement(
        name=name,
        platform=platform,
        status=status,
        created_from=created_from,
        created_to=created_to,
    )
    rows, total = await paginate(session, statement, pagination)
    items = [package_out(request, row) for row in rows]
    return Envelope(data=Page[PackageOut](**make_page(items, total, pagination)))


@router.get("/{package_id}", summary="One package", responses=error_responses(404))
async def get_package(
    request: Request, package_id: PackageId, session: DbSession, _principal: PackageReader
) -> Envelope[PackageOut]:
    return Envelope(data=package_out(request, await service.get(session, package_id)))


@router.patch("/{package_id}", summary="Update a package", responses=error_responses(404, 409))
async def update_package(
    request: Request,
    package_id: PackageId,
    body: PackageUpdate,
    principal: PackageAdmin,
    session: DbSession,
    client: ClientInfo,
) -> Envelope[PackageOut]:
    """Renaming changes `/dist/by-name/{name}`; `/dist/{id}/...` never changes."""
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "platform", "description", "download_name", "disabled"):
        if field in changes and changes[field] is None:
            raise field_error(f"body.{field}", "may not be null")
    package = await service.update(session, actor_of(principal, client), package_id, changes)
    return Envelope(data=package_out(request, package))


@router.delete(
    "/{package_id}", summary="Delete a package and all its versions", responses=error_responses(404)
)
async def delete_package(
    package_id: PackageId, principal: PackageAdmin, session: DbSession, client: ClientInfo
) -> Envelope[None]:
    """Its links answer 404 at once; stored files are released (the audit log keeps the record)."""
    await service.remove(session, actor_of(principal, client), package_id)
    return Envelope(data=None)


@router.post(
    "/{package_id}/versions",
    status_code=201,
    summary="Upload a new version (multipart, streamed)",
    responses=error_responses(404, 413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "release_notes": {"type": "string", "maxLength": MAX_NOTES},
                        },
                    }
                }
            },
        }
    },
)
@own_transactions
async def upload_version(
    request: Request, package_id: PackageId, principal: PackageAdmin, client: ClientInfo
) -> Envelope[VersionOut]:
    """The file streams straight to storage (any size up to `packages_max_upload_bytes`; no
    transaction is held meanwhile). The version is immutable; processing starts at once
    (`job_id`), and with auto-publish a successfully processed version becomes current."""
    actor = actor_of(principal, client)
    await release_session(request)
    form = StreamedForm(request.headers.get("content-type"), request.stream())

    def read_form() -> tuple[str, str]:
        if not form.found:
            raise field_error("body.file", "Field required")
        notes = form.fields.get("release_notes", "")
        if len(notes) > MAX_NOTES:
            raise field_error("body.release_notes", f"at most {MAX_NOTES} characters")
        try:
            notes = clean_text(notes)
        except ValueError as exc:
            raise field_error("body.release_notes", str(exc)) from None
        return upload_name(form.filename), notes

    db = request.app.state.db
    version = await versions.upload(
        db, _settings(request), actor, package_id, form.file_chunks(), read_form=read_form
    )
    return Envelope(data=version_out(version, None))


@router.get(
    "/{package_id}/versions", summary="List a package's versions", responses=error_responses(404)
)
async def list_versions(
    package_id: PackageId, session: DbSession, pagination: Pagination, _principal: PackageReader
) -> Envelope[Page[VersionOut]]:
    package = await service.get(session, package_id)
    rows, total = await paginate(session, versions.list_statement(package.id), pagination)
    items = [version_out(row, package.current_version_id) for row in rows]
    return Envelope(data=Page[VersionOut](**make_page(items, total, pagination)))


@router.get(
    "/{package_id}/versions/{version_id}",
    summary="One version with its processing steps and logs",
    responses=error_responses(404),
)
async def get_version(
    package_id: PackageId,
    version_id: VersionId,
    session: DbSession,
    _principal: PackageReader,
    run: Annotated[int | None, Query(ge=1, le=10_000, description="Default: the latest")] = None,
) -> Envelope[VersionDetail]:
    """`steps` hold each step's status, duration, exit code and log for one processing run."""
    package = await service.get(session, package_id)
    version = await versions.get(session, package.id, version_id)
    steps = await versions.steps(session, version, run)
    out = version_out(version, package.current_version_id).model_dump()
    detail = VersionDetail(**out, steps=[StepOut.model_validate(step) for step in steps])
    return Envelope(data=detail)


@router.get(
    "/{package_id}/versions/{version_id}/logs",
    summary="Processing logs of a version",
    responses=error_responses(404),
)
async def version_logs(
    package_id: PackageId,
    version_id: VersionId,
    session: DbSession,
    _principal: PackageReader,
    run: Annotated[int | None, Query(ge=1, le=10_000, description="Default: the latest")] = None,
) -> Envelope[list[StepOut]]:
    package = await service.get(session, package_id)
    version = await versions.get(session, package.id, version_id)
    steps = await versions.steps(session, version, run)
    return Envelope(data=[StepOut.model_validate(step) for step in steps])


@router.post(
    "/{package_id}/versions/{version_id}/reprocess",
    summary="Process a failed version again",
    responses=error_responses(404, 409),
)
async def reprocess_version(
    package_id: PackageId,
    version_id: VersionId,
    principal: PackageAdmin,
    session: DbSession,
    client: ClientInfo,
    request: Request,
) -> Envelope[VersionOut]:
    version = await versions.reprocess(
        session, _settings(request), actor_of(principal, client), package_id, version_id
    )
    return Envelope(data=version_out(version, None))


@router.post(
    "/{package_id}/publish",
    summary="Make a processed version current",
    responses=error_responses(404, 409),
)
async def publish(
    request: Request,
    package_id: PackageId,
    body: PublishIn,
    principal: PackageAdmin,
    session: DbSession,
    client: ClientInfo,
) -> Envelope[PackageOut]:
    """The permanent links serve it from now on (a CDN within `packages_dist_max_age_seconds`).
    Only a successfully processed version: 409015 otherwise."""
    package = await versions.publish(
        session, actor_of(principal, client), package_id, body.version_id
    )
    return Envelope(data=package_out(request, package))


@router.post(
    "/{package_id}/rollback",
    summary="Point the links at an earlier processed version",
    responses=error_responses(404, 409),
)
async def rollback(
    request: Request,
    package_id: PackageId,
    principal: PackageAdmin,
    session: DbSession,
    client: ClientInfo,
    body: RollbackIn | None = None,
) -> Envelope[PackageOut]:
    """Without `version_id`: the newest processed version older than the current one."""
    package = await versions.rollback(
        session, actor_of(principal, client), package_id, body.version_id if body else None
    )
    return Envelope(data=package_out(request, package))
