"""The drive operation log: who did what to which path."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.models.drive import DriveOperation

OPS = frozenset(
    {"create", "upload", "move", "copy", "rename", "delete", "restore", "purge", "overwrite"}
)


def record(
    session: AsyncSession,
    *,
    drive_id: int,
    actor_id: int | None,
    op: str,
    item_type: str,
    item_id: int,
    before_path: str | None = None,
    after_path: str | None = None,
    **detail: Any,
) -> None:
    assert op in OPS, op
    session.add(
        DriveOperation(
            drive_id=drive_id,
            actor_id=actor_id,
            op=op,
            item_type=item_type,
            item_id=item_id,
            before_path=before_path,
            after_path=after_path,
            detail=detail,
        )
    )
