"""WebSocket routes: /ws, and /api/v1/ws/tasks for CineGen clients."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from yuntu.events import live

router = APIRouter()


@router.websocket("/ws")
@router.websocket("/api/v1/ws/tasks")
async def websocket_events(websocket: WebSocket) -> None:
    await live.serve(websocket)
