"""Downloads: signed links and the byte-serving side of them.

A link is either the store's own presigned URL (S3: the bytes never pass through the app) or,
when the store cannot presign (local disk), our own HMAC-signed URL served by `GET /dl/...`.
That URL carries everything the server needs to decide (blob id, file name, expiry, content
type) and the signature over them, so serving it takes no permission check and no write: one
primary-key read of the blob row, then the bytes straight from the store.

The signature key is derived from the app secret (HMAC(secret, "yuntu-download-v1")), so
rotating the secret revokes every outstanding link. A forged, altered or expired link answers
403 FORBIDDEN; a link whose content was purged since answers 404 NOT_FOUND.

Serving follows RFC 9110: a strong `ETag` (the SHA-256), `If-None-Match` (304), one `Range`
(206 with `Content-Range`; unsatisfiable: 416 with `Content-Range: bytes */size`; several
ranges are answered with the whole body, which RFC 9110 allows), `If-Range` (ETag or the exact
`Last-Modified` date) and HEAD.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from yuntu.drive.access import Level, get_drive, level_on
from yuntu.kit.db import Database, database_of
from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Blob, Drive, DriveFile, FileVersion
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.storage.base import BlobStore, ObjectMissing, StorageError
from yuntu.storage.blobs import storage_app_error
from yuntu.storage.s3 import content_disposition
from yuntu.uploads.tasks import get_task

KEY_LABEL = b"yuntu-download-v1"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# type/subtype with optional simple parameters: nothing that could break a header or a line.
_CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9!#$&^_.+-]{1,63}/[A-Za-z0-9!#$&^_.+-]{1,63}"
    r"(?:; ?[A-Za-z0-9_.-]{1,40}=[A-Za-z0-9_.-]{1,40}){0,3}$"
)
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_BLOB_ID = re.compile(r"^[1-9][0-9]{0,18}$")
_MAX_TTL = 7 * 24 * 3600
SUCCEEDED = ("completed", "instant")  # task file states whose file is in the drive


def finished_in_drive(task_id: int) -> ColumnElement[bool]:
    """A task's finished files whose drive file is still live (joined as DriveFile)."""
    return and_(
        UploadTaskFile.task_id == task_id,
        UploadTaskFile.status.in_(SUCCEEDED),
        DriveFile.trashed_at.is_(None),
    )


def safe_content_type(value: str | None) -> str:
    """A content type that is safe in a header and in the signed message."""
    if value and len(value) <= 200 and _CONTENT_TYPE.match(value):
        return value
    return DEFAULT_CONTENT_TYPE


def http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC).replace(microsecond=0), usegmt=True)


# -- signing -------------------------------------------------------------------------------------
class DownloadSigner:
    """HMAC-SHA256 over `blob_id \\n filename \\n exp \\n content type`."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()

    def signature(self, blob_id: int, filename: str, exp: int, content_type: str) -> str:
        message = f"{blob_id}\n{filename}\n{exp}\n{content_type}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def path(self, blob_id: int, filename: str, exp: int, content_type: str) -> str:
        sig = self.signature(blob_id, filename, exp, content_type)
        query = urlencode({"exp": exp, "ct": content_type, "sig": sig}, quote_via=quote)
        return f"/dl/{blob_id}/{quote(filename, safe='')}?{query}"

    def verify(
        self,
        blob_id: str,
        filename: str,
        exp: str | None,
        content_type: str | None,
        sig: str | None,
        now: float | None = None,
    ) -> tuple[int, int, str]:
        """(blob id, expiry, content type) of a genuine, unexpired link; 403 otherwise."""
        if (
            not _BLOB_ID.match(blob_id)
            or exp is None
            or not exp.isascii()
            or not exp.isdigit()
            or len(exp) > 12
            or content_type is None
            or safe_content_type(content_type) != content_type
            or sig is None
            or not _SIGNATURE.match(sig)
            or any(ch in filename for ch in "\n\r\x00")
        ):
            raise AppError(E.FORBIDDEN, message="invalid download link")
        expected = self.signature(int(blob_id), filename, int(exp), content_type)
        if not hmac.compare_digest(expected, sig):
            raise AppError(E.FORBIDDEN, message="invalid download link")
        if int(exp) < (now if now is not None else time.time()):
            raise AppError(E.FORBIDDEN, message="download link expired")
        return int(blob_id), int(exp), content_type


_SIGNERS: weakref.WeakKeyDictionary[Database, DownloadSigner] = weakref.WeakKeyDictionary()


def signer_of(db: Database) -> DownloadSigner:
    """The signer of this process (the key is derived once per database object)."""
    signer = _SIGNERS.get(db)
    if signer is None:
        if db.settings is None:
            raise AppError(E.FEATURE_NOT_CONFIGURED, message="no secret key to sign links")
        signer = _SIGNERS[db] = DownloadSigner(db.settings.resolve_secret_key())
    return signer


def store_of_db(db: Database) -> BlobStore:
    if db.storage is None:
        raise AppError(E.FEATURE_NOT_CONFIGURED, message="blob storage is not configured")
    return db.storage  # type: ignore[no-any-return]


def link_ttl(db: Database, requested: int | None = None) -> int:
    default = int(db.settings.download_url_ttl_seconds) if db.settings is not None else 3600
    return max(10, min(requested or default, _MAX_TTL))


@dataclass(frozen=True, slots=True)
class SignedLink:
    url: str
    expires_at: datetime


async def sign_blob(
    db: Database,
    blob: Blob,
    filename: str,
    content_type: str | None,
    *,
    ttl: int,
    base_url: str = "",
) -> SignedLink:
    """A link serving `blob` as `filename` for `ttl` seconds: presigned by the store when it
    can, else ours (absolute when `base_url` is given, root-relative otherwise)."""
    content_type = safe_content_type(content_type)
    exp = int(time.time()) + ttl
    expires_at = datetime.fromtimestamp(exp, UTC)
    store = store_of_db(db)
    try:
        url = await store.presign_get(
            blob.storage_key, filename=filename, content_type=content_type, expires_seconds=ttl
        )
    except StorageError as exc:
        raise storage_app_error(exc) from exc
    if url is None:
        url = base_url.rstrip("/") + signer_of(db).path(blob.id, filename, exp, content_type)
    return SignedLink(url=url, expires_at=expires_at)


# -- what to download ------------------------------------------------------------------------------
async def drive_file_blob(
    session: AsyncSession, drive_id: int, file_id: int, user_id: int, version: int | None
) -> tuple[DriveFile, Blob]:
    """A live file of a drive the user may read, and the blob of its current (or given)
    version. Trashed files and other users' drives answer 404."""
    drive = await get_drive(session, drive_id, user_id, Level.READ)
    file = await session.scalar(
        select(DriveFile).where(
            DriveFile.id == file_id, DriveFile.drive_id == drive.id, DriveFile.trashed_at.is_(None)
        )
    )
    if file is None:
        raise AppError(E.NOT_FOUND)
    blob_id: int | None = file.blob_id
    if version is not None and version != file.version:
        blob_id = await session.scalar(
            select(FileVersion.blob_id).where(
                FileVersion.file_id == file.id, FileVersion.version == version
            )
        )
        if blob_id is None:
            raise AppError(E.NOT_FOUND, message=f"version {version} does not exist")
    blob = await session.get(Blob, blob_id)
    if blob is None:
        raise AppError(E.NOT_FOUND)
    return file, blob


async def finished_task(session: AsyncSession, task_id: int, user_id: int) -> UploadTask:
    """The user's upload task, on a drive they can still read, with at least one finished
    (completed or instant) file: completed, partially failed and still-running tasks alike.
    Another user's task answers 404; one with nothing finished 409 INVALID_STATE."""
    task = await get_task(session, task_id, user_id)
    drive = await session.get(Drive, task.drive_id)
    if drive is None or await level_on(session, drive, user_id) is None:
        raise AppError(E.NOT_FOUND)
    if task.completed_files + task.instant_files == 0:
        raise AppError(
            E.INVALID_STATE,
            message="the task has no completed files yet",
            details={"status": task.status},
        )
    return task


async def task_links(
    session: AsyncSession,
    task: UploadTask,
    *,
    offset: int,
    limit: int,
    ttl: int,
    base_url: str,
) -> tuple[list[dict[str, Any]], int]:
    """Signed links for one page of the task's finished files still in the drive (in manifest
    order), and how many there are in all."""
    db = database_of(session)
    statement = (
        select(UploadTaskFile.id, UploadTaskFile.relative_path, DriveFile, Blob)
        .join(DriveFile, DriveFile.id == UploadTaskFile.file_id)
        .join(Blob, Blob.id == DriveFile.blob_id)
        .where(finished_in_drive(task.id))
    )
    total = await session.scalar(select(func.count()).select_from(statement.subquery()))
    rows = (
        await session.execute(
            statement.order_by(UploadTaskFile.position).offset(offset).limit(limit)
        )
    ).all()
    items = []
    for task_file_id, path, file, blob in rows:
        link = await sign_blob(db, blob, file.name, file.mime_type, ttl=ttl, base_url=base_url)
        items.append(
            {
                "task_file_id": task_file_id,
                "path": path,
                "file_id": file.id,
                "size": blob.size,
                "md5": blob.md5,
                "url": link.url,
            }
        )
    return items, int(total or 0)


@dataclass(frozen=True, slots=True)
class ServedBlob:
    storage_key: str
    size: int
    sha256: str
    created_at: datetime


async def served_blob(session: AsyncSession, blob_id: int) -> ServedBlob:
    """The row behind a signed link; 404 when the content was purged since."""
    row = (
        await session.execute(
            select(Blob.storage_key, Blob.size, Blob.sha256, Blob.created_at, Blob.ref_count).where(
                Blob.id == blob_id
            )
        )
    ).first()
    if row is None or row.ref_count <= 0:
        raise AppError(E.NOT_FOUND)
    return ServedBlob(row.storage_key, row.size, row.sha256, row.created_at)


# -- ranges and conditions -------------------------------------------------------------------------
class RangeNotSatisfiable(Exception):
    pass


_RANGE = re.compile(r"^bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range as [start, end) or None (no header, several ranges or a malformed one:
    the whole body is served). Raises RangeNotSatisfiable."""
    if not header or "," in header or len(header) > 200:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - length), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        return None  # "5-2" is invalid syntax: ignored (RFC 9110 14.1.1)
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size)


def _etags(header: str) -> list[str]:
    return [item.strip() for item in header.split(",") if item.strip()]


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match matches (weak comparison): answer 304."""
    if not header:
        return False
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _etags(header))


def if_range_allows(header: str | None, etag: str, last_modified: str) -> bool:
    """Whether a Range may be honoured under If-Range (strong comparison)."""
    if header is None:
        return True
    value = header.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    return value == last_modified


# -- serving ---------------------------------------------------------------------------------------
async def _primed(iterator: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Read the first chunk before the status line goes out, so a missing object is a clean
    404 and a failing store a 502 rather than a truncated 200."""
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        first = b""
    except ObjectMissing as exc:
        raise AppError(E.NOT_FOUND) from exc
    except StorageError as exc:
        raise storage_app_error(exc) from exc

    async def chain() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in iterator:
            yield chunk

    return chain()


async def blob_response(
    request: Request,
    store: BlobStore,
    blob: ServedBlob,
    *,
    filename: str,
    content_type: str,
    expires: int,
) -> Response:
    etag = f'"{blob.sha256}"'
    last_modified = http_date(blob.created_at)
    max_age = max(0, min(expires - int(time.time()), 3600))
    headers = {
        "ETag": etag,
        "Last-Modified": last_modified,
        "Accept-Ranges": "bytes",
        "Cache-Control": f"private, max-age={max_age}",
        "Content-Disposition": content_disposition(filename),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    size = blob.size
    span = None
    if if_range_allows(request.headers.get("if-range"), etag, last_modified):
        try:
            span = parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiable:
            raise AppError(
                E.RANGE_NOT_SATISFIABLE, headers={"Content-Range": f"bytes */{size}"}
            ) from None
    status = 200
    start, end = 0, size
    if span is not None:
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    headers["Content-Type"] = content_type
    if request.method == "HEAD" or end == start:
        return Response(status_code=status, headers=headers)
    body = await _primed(aiter(store.read(blob.storage_key, start, end)))
    return StreamingResponse(body, status_code=status, headers=headers)


def link_out(link: SignedLink, **extra: Any) -> dict[str, Any]:
    return {"url": link.url, "expires_at": link.expires_at, **extra}
