"""What clients get: the permanent links (`/dist/...`) and the one-call query API.

Both read one joined row: the package, its current version and that version's artifact blob.
A link never names a version, so publishing or rolling back changes what it serves and never
the link itself. A disabled package, or one with nothing published, answers 404 on its links.

Caching: the served bytes carry a strong ETag (the artifact's SHA-256), so a CDN or browser
revalidates cheaply; `packages_dist_max_age_seconds` bounds how long a cached answer may be
reused before a publish or rollback shows."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from yuntu.drive import downloads
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Blob
from yuntu.models.packages import Package, PackageVersion
from yuntu.packages.service import name_key
from yuntu.packages.states import PackageStatus
from yuntu.settings import Settings

_CONTENT_TYPES = {
    ".apk": "application/vnd.android.package-archive",
    ".ipa": "application/octet-stream",
    ".exe": "application/vnd.microsoft.portable-executable",
    ".msi": "application/x-msi",
    ".dmg": "application/x-apple-diskimage",
    ".zip": "application/zip",
}


@dataclass(frozen=True, slots=True)
class Current:
    """A package with what its links serve now (the version fields are None when nothing is)."""

    package_id: int
    name: str
    status: str
    download_name: str
    updated_at: datetime
    version_id: int | None
    seq: int | None
    version_name: str | None
    version_code: str | None
    md5: str | None
    sha256: str | None
    size: int | None
    storage_key: str | None
    blob_id: int | None
    blob_created_at: datetime | None
    published_at: datetime | None


def _current_statement(where: Any) -> Any:
    return (
        select(
            Package.id,
            Package.name,
            Package.status,
            Package.download_name,
            Package.updated_at,
            Package.published_at,
            PackageVersion.id.label("version_id"),
            PackageVersion.seq,
            PackageVersion.version_name,
            PackageVersion.version_code,
            PackageVersion.artifact_md5,
            PackageVersion.artifact_sha256,
            PackageVersion.artifact_size,
            Blob.id.label("blob_id"),
            Blob.storage_key,
            Blob.created_at.label("blob_created_at"),
        )
        .outerjoin(PackageVersion, PackageVersion.id == Package.current_version_id)
        .outerjoin(Blob, Blob.id == PackageVersion.artifact_blob_id)
        .where(where)
    )


# Built once: the hot paths skip building the statement and computing its cache key per call.
_BY_ID = _current_statement(Package.id == bindparam("package_id"))
_BY_NAME = _current_statement(Package.name_key == bindparam("name_key"))


async def lookup(
    session: AsyncSession, *, package_id: int | None = None, name: str | None = None
) -> Current:
    params: dict[str, object]
    if package_id is not None:
        statement, params = _BY_ID, {"package_id": package_id}
    else:
        key = name_key(name or "")
        if key is None:
            raise AppError(E.NOT_FOUND)
        statement, params = _BY_NAME, {"name_key": key}
    # Core execution on the session's connection: plain rows, no ORM result layer
    connection = await session.connection()
    row = (await connection.execute(statement, params)).first()
    if row is None:
        raise AppError(E.NOT_FOUND)
    return Current(
        package_id=row.id,
        name=row.name,
        status=row.status,
        download_name=row.download_name or row.name,
        updated_at=row.updated_at,
        version_id=row.version_id,
        seq=row.seq,
        version_name=row.version_name,
        version_code=row.version_code,
        md5=row.artifact_md5,
        sha256=row.artifact_sha256,
        size=row.artifact_size,
        storage_key=row.storage_key,
        blob_id=row.blob_id,
        blob_created_at=row.blob_created_at,
        published_at=row.published_at,
    )


def link_path(package_id: int, download_name: str) -> str:
    return f"/dist/{package_id}/{quote(download_name, safe='')}"


def download_url(settings: Settings, request: Request, current: Current) -> str:
    base = settings.packages_cdn_base_url or str(request.base_url).rstrip("/")
    return base + link_path(current.package_id, current.download_name)


def query_result(settings: Settings, request: Request, current: Current) -> dict[str, Any]:
    """The seed's fields: {package_id, name, status, version, download_url, md5, size,
    updated_at}, plus sha256 and version_code."""
    available = current.status == PackageStatus.AVAILABLE and current.storage_key is not None
    return {
        "package_id": current.package_id,
        "name": current.name,
        "status": current.status,
        "version": current.version_name or (str(current.seq) if current.seq else None),
        "version_code": current.version_code,
        "download_url": download_url(settings, request, current) if available else None,
        "md5": current.md5 if available else None,
        "sha256": current.sha256 if available else None,
        "size": current.size if available else None,
        "updated_at": current.published_at or current.updated_at,
    }


def content_type_for(name: str) -> str:
    dot = name.rfind(".")
    return (
        _CONTENT_TYPES.get(name[dot:].lower(), "application/octet-stream")
        if dot >= 0
        else ("application/octet-stream")
    )


async def serve(request: Request, db: Database, settings: Settings, current: Current) -> Response:
    """The current artifact: streamed (Range, ETag, HEAD) or a redirect to a signed URL."""
    if current.status != PackageStatus.AVAILABLE or current.storage_key is None:
        raise AppError(E.NOT_FOUND)
    assert current.blob_id is not None and current.size is not None and current.sha256
    assert current.blob_created_at is not None
    name = current.download_name
    content_type = content_type_for(name)
    max_age = settings.packages_dist_max_age_seconds
    if settings.packages_delivery == "redirect":
        ttl = settings.packages_redirect_ttl_seconds
        blob = Blob(id=current.blob_id, storage_key=current.storage_key)
        link = await downloads.sign_blob(
            db, blob, name, content_type, ttl=ttl, base_url=str(request.base_url)
        )
        # the redirect may be cached only while its signed target is still valid
        headers = {"Cache-Control": f"public, max-age={min(max_age, ttl // 2)}"}
        return RedirectResponse(link.url, status_code=302, headers=headers)
    served = downloads.ServedBlob(
        current.storage_key, current.size, current.sha256, current.blob_created_at
    )
    response = await downloads.blob_response(
        request,
        downloads.store_of_db(db),
        served,
        filename=name,
        content_type=content_type,
        expires=int(time.time()) + max_age,
    )
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response
