"""Batch upload tables: tasks (a client manifest), one row per manifest file, multipart uploads
and their parts.

A task's counters are changed only by the file state transition function, in the same
transaction as the file's status (`yuntu drive fsck` recounts them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from yuntu.kit.db import Base, IdMixin, TimestampMixin, UTCDateTime, utcnow


class UploadTask(IdMixin, TimestampMixin, Base):
    __tablename__ = "upload_tasks"
    __table_args__ = (Index("ix_upload_tasks_user_status", "user_id", "status"),)

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    drive_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drives.id", ondelete="CASCADE"), nullable=False, index=True
    )
    folder_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="pending")
    conflict: Mapped[str] = mapped_column(String(16), nullable=False, default="rename")
    total_files: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    completed_files: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    instant_files: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    failed_files: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cancelled_files: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    done_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    saved_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    client_info: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UploadTaskFile(IdMixin, Base):
    __tablename__ = "upload_task_files"
    __table_args__ = (
        Index("uq_upload_task_files_index", "task_id", "position", unique=True),
        Index("ix_upload_task_files_status", "task_id", "status"),
    )

    task_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("upload_tasks.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # index in the manifest
    relative_path: Mapped[str] = mapped_column(String(4096), nullable=False)
    folder_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    mime_type: Mapped[str | None] = mapped_column(String(128))
    mtime: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reserved: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    proof_failed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    bytes_received: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    file_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("files.id", ondelete="SET NULL")
    )
    sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class MultipartUpload(IdMixin, Base):
    __tablename__ = "multipart_uploads"
    __table_args__ = (Index("ix_multipart_uploads_activity", "last_activity_at"),)

    task_file_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("upload_task_files.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    )
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    part_size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    part_count: Mapped[int] = mapped_column(Integer, nullable=False)
    storage_key: Mapped[str] = mapped_column(String(512), nullable=False)
    storage_upload_id: Mapped[str] = mapped_column(String(1024), nullable=False)
    direct: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    completing: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_activity_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, nullable=False
    )


class UploadPart(Base):
    __tablename__ = "upload_parts"

    upload_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("multipart_uploads.id", ondelete="CASCADE"), primary_key=True
    )
    part_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    etag: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
