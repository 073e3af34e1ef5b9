"""One WebSocket connection: authenticate with the access token, then forward the user's
events, filtered by the jobs the client subscribed to.

Close codes: 4001 not authenticated (no, forged, expired or revoked token; sent also when the
token expires on an open connection), 1001 server shutting down."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from yuntu.identity import service as identity
from yuntu.jobs import events
from yuntu.jobs import service as jobs
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.identity import User
from yuntu.render import service as render_tasks

log = get_logger("yuntu.ws")
CLOSE_UNAUTHENTICATED = 4001
MAX_MESSAGE_BYTES = 4096


def _error(name: str, message: str) -> dict[str, Any]:
    return {"type": "error", "data": {"error": name, "message": message}}


async def _authenticate(ws: WebSocket, wait_seconds: float) -> tuple[User, datetime, str] | None:
    token = ws.query_params.get("token")
    if not token:
        try:
            raw = await asyncio.wait_for(ws.receive_text(), wait_seconds)
            first = json.loads(raw) if len(raw) <= MAX_MESSAGE_BYTES else {}
        except (TimeoutError, ValueError, KeyError, WebSocketDisconnect):
            first = {}
        if isinstance(first, dict) and first.get("type") == "auth":
            token = first.get("token")
    if not isinstance(token, str) or not token:
        await ws.send_json(_error("UNAUTHENTICATED", "send the access token first"))
        await ws.close(CLOSE_UNAUTHENTICATED)
        return None
    app = ws.app
    try:
        async with app.state.db.read_sessionmaker() as session:
            user, claims = await identity.authenticate_access(session, app.state.auth, token)
    except AppError as exc:
        await ws.send_json(_error(exc.spec.name, exc.spec.en))
        await ws.close(CLOSE_UNAUTHENTICATED)
        return None
    return user, claims.expires_at, token


async def serve(ws: WebSocket) -> None:
    await ws.accept()
    settings = ws.app.state.settings
    authenticated = await _authenticate(ws, settings.ws_auth_timeout_seconds)
    if authenticated is None:
        return
    user, expires_at, token = authenticated
    bus = ws.app.state.bus
    subscription = bus.subscribe(events.user_channel(user.id))
    only_jobs: set[str] = set()
    await ws.send_json(
        {
            "type": "connected",
            "data": {
                "user_id": str(user.id),
                "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
            },
        }
    )

    async def forward() -> None:
        while True:
            event, text = await subscription.get_with_text()
            data = event.get("data", {})
            if only_jobs and (data.get("job_id") or data.get("task_id")) not in only_jobs:
                continue
            await ws.send_text(text)

    async def expire() -> None:
        """Close with 4001 when the token expires, or sooner when its session is revoked or
        the user suspended (re-checked every ws_recheck_seconds)."""
        while True:
            left = (expires_at - datetime.now(UTC)).total_seconds()
            if left <= 0:
                error = _error(E.TOKEN_EXPIRED.name, "access token expired; reconnect")
                break
            await asyncio.sleep(min(left, settings.ws_recheck_seconds))
            try:
                async with ws.app.state.db.read_sessionmaker() as session:
                    await identity.authenticate_access(
                        session, ws.app.state.auth, token, cached=True
                    )
            except AppError as exc:
                if exc.spec is not E.TOKEN_EXPIRED:
                    error = _error(exc.spec.name, exc.spec.en)
                    break
        await ws.send_json(error)
        await ws.close(CLOSE_UNAUTHENTICATED)

    async def receive() -> None:
        while True:
            raw = await ws.receive_text()
            reply = await _handle(ws, user, raw, only_jobs)
            if reply is not None:
                await ws.send_json(reply)

    tasks = [asyncio.create_task(coro) for coro in (forward(), expire(), receive())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        subscription.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if ws.application_state == WebSocketState.CONNECTED and (
            ws.client_state == WebSocketState.CONNECTED
        ):
            with contextlib.suppress(Exception):
                await ws.close(1000)


async def _handle(
    ws: WebSocket, user: User, raw: str, only_jobs: set[str]
) -> dict[str, Any] | None:
    """One client message. Malformed ones get an error reply and change nothing."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return _error("PAYLOAD_TOO_LARGE", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(raw)
    except ValueError:
        return _error("MALFORMED_JSON", "messages are JSON objects")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return _error("VALIDATION_ERROR", 'messages look like {"type": "ping"}')
    kind = message["type"]
    if kind == "ping":
        return {"type": "pong", "data": {"ts": datetime.now(UTC).isoformat()}}
    if kind in ("subscribe", "unsubscribe"):
        # a job (`job_id`) or a render task (`task_id`)
        field = "task_id" if "task_id" in message else "job_id"
        target = message.get(field)
        if not isinstance(target, str | int) or not str(target).isdigit() or len(str(target)) > 19:
            return _error("VALIDATION_ERROR", f"{field} must be an id string")
        target = str(target)
        if kind == "unsubscribe":
            only_jobs.discard(target)
            return {"type": "unsubscribed", "data": {field: target}}
        try:
            async with ws.app.state.db.read_sessionmaker() as session:
                if field == "task_id":
                    await render_tasks.get(session, user.id, int(target))
                else:
                    await jobs.get(session, int(target), owner_user_id=user.id)
        except AppError:
            # another user's job or task looks missing too
            return _error("NOT_FOUND", f"no such {'task' if field == 'task_id' else 'job'}")
        only_jobs.add(target)
        return {"type": "subscribed", "data": {field: target}}
    return _error("UNKNOWN_MESSAGE", f"unknown message type {kind[:40]!r}")
