"""Shapes of the byte-transfer endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.models.uploads import MultipartUpload
from yuntu.storage.base import PartInfo


class TaskFileResult(Schema):
    id: Id
    task_id: Id
    path: str = Field(validation_alias="relative_path")
    size: int
    md5: str
    sha256: str | None
    status: str
    attempts: int
    bytes_received: int
    file_id: Id | None = Field(description="The drive file, once completed")
    error: str | None
    completed_at: UtcDatetime | None


class MultipartInit(BaseModel):
    part_size: int | None = Field(
        default=None,
        ge=5 * 1024 * 1024,
        le=5 * 1024 * 1024 * 1024,
        description="Bytes per part (default 5 MiB; raised when 10,000 parts would not do)",
    )
    direct: bool = Field(
        default=False, description="Presigned part URLs for direct-to-storage upload (S3)"
    )


class PartUrl(BaseModel):
    part_number: int
    size: int
    url: str | None


class MultipartOut(BaseModel):
    upload_id: Id
    size: int
    part_size: int
    part_count: int
    direct: bool
    created_at: UtcDatetime
    part_urls: list[PartUrl] = Field(default_factory=list)

    @classmethod
    def build(cls, upload: MultipartUpload, urls: list[dict[str, Any]]) -> MultipartOut:
        return cls(
            upload_id=upload.id,
            size=upload.size,
            part_size=upload.part_size,
            part_count=upload.part_count,
            direct=upload.direct,
            created_at=upload.created_at,
            part_urls=[PartUrl(**url) for url in urls],
        )


class PartOut(BaseModel):
    part_number: int
    size: int
    etag: str


class PartsOut(BaseModel):
    upload_id: Id
    size: int
    part_size: int
    part_count: int
    received_bytes: int
    parts: list[PartOut]
    missing: list[int] = Field(description="Part numbers not received yet")
    last_activity_at: UtcDatetime

    @classmethod
    def build(cls, upload: MultipartUpload, parts: list[PartInfo]) -> PartsOut:
        numbers = {part.part_number for part in parts}
        return cls(
            upload_id=upload.id,
            size=upload.size,
            part_size=upload.part_size,
            part_count=upload.part_count,
            received_bytes=sum(part.size for part in parts),
            parts=[PartOut(part_number=p.part_number, size=p.size, etag=p.etag) for p in parts],
            missing=[n for n in range(1, upload.part_count + 1) if n not in numbers],
            last_activity_at=upload.last_activity_at,
        )
