"""What clients call: `GET /api/v1/package/query` (an API key with `packages:read`) and the
permanent links `GET /dist/{package_id}/{filename}` and `GET /dist/by-name/{name}` (public:
whoever has the link may download, as with any distribution link)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request
from starlette.responses import Response

from yuntu.identity.deps import DbSession, Principal, require_scope
from yuntu.kit.errors import AppError, E
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id
from yuntu.packages import delivery
from yuntu.packages.schemas import QueryResult

router = make_router(tags=["package clients"])
public_router = make_router(tags=["package clients"])
PackageReader = Annotated[Principal, require_scope("packages:read")]


async def _limit(request: Request, principal: Principal) -> None:
    if principal.api_key is not None:
        who = f"key:{principal.api_key.id}"
    else:
        who = f"user:{principal.user.id if principal.user else 0}"
    limit = request.app.state.settings.packages_query_per_minute
    await request.app.state.limiter.enforce(limit, 60, f"pkgquery:{who}")


@router.get(
    "/package/query",
    summary="A package's current download link (client API)",
    responses=error_responses(404, 422, 429),
)
async def query_package(
    request: Request,
    session: DbSession,
    principal: PackageReader,
    package_id: Annotated[Id | None, Query(description="Package id")] = None,
    package_name: Annotated[str | None, Query(max_length=100, description="Or its name")] = None,
) -> Envelope[QueryResult]:
    """Send `X-API-Key` (scope `packages:read`). Give `package_id` or `package_name`.
    `download_url` is the permanent link (on the CDN when one is configured); it is null
    while nothing is published. Rate-limited per key (`packages_query_per_minute`)."""
    if (package_id is None) == (package_name is None):
        raise AppError(
            E.VALIDATION_ERROR,
            details=[{"field": "query.package_id", "message": "give package_id or package_name"}],
        )
    await _limit(request, principal)
    current = await delivery.lookup(session, package_id=package_id, name=package_name)
    result = delivery.query_result(request.app.state.settings, request, current)
    return Envelope(data=QueryResult(**result))


DIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The current artifact", "content": {"application/octet-stream": {}}},
    206: {"description": "The requested byte range"},
    302: {"description": "Redirect mode: to a short-lived signed storage URL"},
    304: {"description": "Not modified (If-None-Match)"},
    **error_responses(404),
    416: error_responses(416)[416] | {"description": "Range not satisfiable"},
}


async def _serve(request: Request, session: DbSession, current: delivery.Current) -> Response:
    return await delivery.serve(request, request.app.state.db, request.app.state.settings, current)


@public_router.get(
    "/dist/by-name/{name}",
    summary="Permanent download link by package name",
    response_class=Response,
    responses=DIST_RESPONSES,
)
@public_router.head(
    "/dist/by-name/{name}",
    summary="Headers of the permanent download link by name",
    response_class=Response,
    responses=DIST_RESPONSES,
)
async def dist_by_name(
    request: Request,
    session: DbSession,
    name: Annotated[str, Path(max_length=100, description="Package name (case-insensitive)")],
) -> Response:
    current = await delivery.lookup(session, name=name)
    return await _serve(request, session, current)


# after /dist/by-name/{name}, which this pattern would also match
@public_router.get(
    "/dist/{package_id}/{filename}",
    summary="Permanent download link",
    response_class=Response,
    responses=DIST_RESPONSES,
)
@public_router.head(
    "/dist/{package_id}/{filename}",
    summary="Headers of the permanent download link",
    response_class=Response,
    responses=DIST_RESPONSES,
)
async def dist_by_id(
    request: Request,
    session: DbSession,
    package_id: Annotated[str, Path(max_length=20, description="Package id")],
    filename: Annotated[str, Path(max_length=255, description="Any name; the package's own")],
) -> Response:
    """Always the package's current processed version; the link never changes when versions
    do. Range, If-Range, If-None-Match (ETag = SHA-256) and HEAD; or a redirect to a signed
    storage URL (`packages_delivery=redirect`)."""
    if not package_id.isascii() or not package_id.isdigit() or len(package_id) > 19:
        raise AppError(E.NOT_FOUND)
    current = await delivery.lookup(session, package_id=int(package_id))
    return await _serve(request, session, current)
