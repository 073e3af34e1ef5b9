"""Drive tables: blobs (stored content), teams, drives, folders, files, file versions and the
operation log.

Accounting rules (checked by `yuntu drive fsck`):
- `blobs.ref_count` equals the number of rows that reference the blob (file versions now; render
  outputs and packages add their own references through the same blob service).
- `drives.used_bytes` equals the sum of `file_versions.size` of the drive's files (every kept
  version counts, trashed files included, until they are purged).
- `drives.reserved_bytes` equals the bytes reserved by unfinished upload-task files.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from yuntu.kit.db import Base, IdMixin, TimestampMixin, UTCDateTime, utcnow

_LIVE = text("trashed_at IS NULL")


class Blob(IdMixin, Base):
    __tablename__ = "blobs"
    __table_args__ = (
        Index("ix_blobs_md5_size", "md5", "size"),
        # The GC scans blobs that reached zero references.
        Index("ix_blobs_unreferenced", "ref_count", "zero_since"),
    )

    sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    storage_key: Mapped[str] = mapped_column(String(512), nullable=False)
    ref_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    zero_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class TeamRole(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Team(IdMixin, TimestampMixin, Base):
    __tablename__ = "teams"

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )


class TeamMember(Base):
    __tablename__ = "team_members"

    team_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Drive(IdMixin, TimestampMixin, Base):
    __tablename__ = "drives"
    __table_args__ = (
        CheckConstraint("(owner_user_id IS NULL) <> (team_id IS NULL)", name="one_owner"),
        CheckConstraint("used_bytes >= 0 AND reserved_bytes >= 0", name="usage_not_negative"),
        # One default drive per user, created on first use even under concurrent requests.
        Index(
            "uq_drives_default_per_user",
            "owner_user_id",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    icon: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(500))
    owner_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)  # None: unlimited
    used_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # File-type policy: lower-case extensions without the dot; an empty allow list allows all.
    allowed_types: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    denied_types: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    max_file_size: Mapped[int | None] = mapped_column(BigInteger)
    root_folder_id: Mapped[int | None] = mapped_column(BigInteger)


class Folder(IdMixin, TimestampMixin, Base):
    """`path` is the materialized path ("/" for the root, "/a/b" below it); unique per drive
    among live folders. Trashed folders keep their path and carry `trash_root_id`."""

    __tablename__ = "folders"
    __table_args__ = (
        Index(
            "uq_folders_live_path",
            "drive_id",
            "path",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
        Index("ix_folders_parent_name", "parent_id", "name"),
        Index("ix_folders_trash_root", "trash_root_id"),
    )

    drive_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drives.id", ondelete="CASCADE"), nullable=False, index=True
    )
    parent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("folders.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    path: Mapped[str] = mapped_column(String(4096), nullable=False)
    created_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    trashed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trash_root_id: Mapped[int | None] = mapped_column(BigInteger)
    trashed_by: Mapped[int | None] = mapped_column(BigInteger)


class DriveFile(IdMixin, TimestampMixin, Base):
    """A file's identity and its current version (denormalized from file_versions)."""

    __tablename__ = "files"
    __table_args__ = (
        Index(
            "uq_files_live_name",
            "folder_id",
            "name",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
        # Folder listings sorted by size or time, live files only.
        Index("ix_files_folder_size", "folder_id", "trashed_at", "size"),
        Index("ix_files_folder_updated", "folder_id", "trashed_at", "updated_at"),
        Index("ix_files_trash_root", "trash_root_id"),
    )

    drive_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drives.id", ondelete="CASCADE"), nullable=False, index=True
    )
    folder_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    extension: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    mime_type: Mapped[str] = mapped_column(String(128), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    blob_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blobs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    mtime: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the client's modified time
    created_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    upload_source: Mapped[str] = mapped_column(String(16), nullable=False, default="web")
    trashed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trash_root_id: Mapped[int | None] = mapped_column(BigInteger)
    trashed_by: Mapped[int | None] = mapped_column(BigInteger)


class FileVersion(IdMixin, Base):
    """Every kept version of a file, the current one included: each holds one blob reference."""

    __tablename__ = "file_versions"
    __table_args__ = (Index("uq_file_versions_number", "file_id", "version", unique=True),)

    file_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("files.id", ondelete="CASCADE"), nullable=False
    )
    drive_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drives.id", ondelete="CASCADE"), nullable=False, index=True
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    blob_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blobs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class DriveOperation(IdMixin, Base):
    __tablename__ = "drive_operations"
    __table_args__ = (Index("ix_drive_operations_drive", "drive_id", "id"),)

    drive_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drives.id", ondelete="CASCADE"), nullable=False
    )
    actor_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    op: Mapped[str] = mapped_column(String(16), nullable=False)
    item_type: Mapped[str] = mapped_column(String(8), nullable=False)  # file | folder
    item_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    before_path: Mapped[str | None] = mapped_column(String(4096))
    after_path: Mapped[str | None] = mapped_column(String(4096))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
