"""Package distribution tables: packages, their immutable versions, and each version's
processing steps.

- A version's `blob_id` (the original as uploaded) holds one blob reference while the version
  row exists; `artifact_blob_id` (what processing produced, served by the permanent links)
  holds one more when set. `yuntu drive fsck` counts both.
- `packages.current_version_id` is the version the permanent links serve. It only ever points
  at a processed version of the same package (`yuntu.packages.versions` keeps it so).
- `packages.status` is derived (`yuntu.packages.states.package_status`) and stored so lists can
  filter on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from yuntu.kit.db import Base, IdMixin, TimestampMixin, UTCDateTime, utcnow


class Package(IdMixin, TimestampMixin, Base):
    __tablename__ = "packages"
    __table_args__ = (
        Index("ix_packages_status_created", "status", "created_at"),
        Index("ix_packages_platform_created", "platform", "created_at"),
    )

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # case-folded name: unique, and what /dist/by-name/{name} and ?package_name= look up
    name_key: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    platform: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # the last segment of the permanent link, and the name a browser saves the file under
    download_name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="no_version")
    disabled: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    current_version_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey(
            "package_versions.id",
            ondelete="SET NULL",
            use_alter=True,
            name="fk_packages_current_version_id_package_versions",
        ),
    )
    # versions uploaded so far: the next version's `seq`
    version_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    created_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PackageVersion(IdMixin, Base):
    """One uploaded original, immutable once stored; processing adds its artifact."""

    __tablename__ = "package_versions"
    __table_args__ = (
        UniqueConstraint("package_id", "seq", name="uq_package_versions_package_seq"),
        Index("ix_package_versions_status", "status", "created_at"),
    )

    package_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("packages.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)  # 1, 2, 3 ... within the package
    blob_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blobs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    md5: Mapped[str] = mapped_column(String(32), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    release_notes: Mapped[str] = mapped_column(Text, nullable=False, default="")
    uploaded_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    uploaded_by_key: Mapped[int | None] = mapped_column(BigInteger)  # API key id, when a key
    status: Mapped[str] = mapped_column(String(24), nullable=False, default="uploaded")
    # app metadata parsed from the package (APK / IPA), when recognisable
    app_id: Mapped[str | None] = mapped_column(String(255))
    version_name: Mapped[str | None] = mapped_column(String(100))
    version_code: Mapped[str | None] = mapped_column(String(100))
    app_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the processed file the links serve (the original when no step rewrote it)
    artifact_blob_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("blobs.id", ondelete="RESTRICT"), index=True
    )
    artifact_size: Mapped[int | None] = mapped_column(BigInteger)
    artifact_md5: Mapped[str | None] = mapped_column(String(32))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    # processing runs of this version so far (a reprocess starts the next)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PackageStep(IdMixin, Base):
    """One processing step of one run of a version: what ran, how long, how it ended, its log."""

    __tablename__ = "package_steps"
    __table_args__ = (
        UniqueConstraint("version_id", "run", "position", name="uq_package_steps_run_position"),
    )

    version_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("package_versions.id", ondelete="CASCADE"), nullable=False
    )
    run: Mapped[int] = mapped_column(Integer, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(32), nullable=False)
    kind: Mapped[str] = mapped_column(
        String(16), nullable=False
    )  # checksum metadata clamav command
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    log: Mapped[str] = mapped_column(Text, nullable=False, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
