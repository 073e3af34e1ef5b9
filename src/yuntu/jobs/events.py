"""Job events on the live bus: task.status, task.progress, task.log, addressed to the owner."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from yuntu.kit.pubsub import PubSub


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


def message(event_type: str, job_id: int, kind: str, **data: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "data": {"job_id": str(job_id), "kind": kind, **data},
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


async def publish(bus: PubSub | None, owner_user_id: int | None, event: dict[str, Any]) -> None:
    if bus is not None and owner_user_id is not None:
        await bus.publish(user_channel(owner_user_id), event)


def publish_soon(bus: PubSub | None, owner_user_id: int | None, event: dict[str, Any]) -> None:
    if bus is not None and owner_user_id is not None:
        bus.publish_soon(user_channel(owner_user_id), event)
