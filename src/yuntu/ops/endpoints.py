"""Operations endpoints at the root: /health and /metrics."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from yuntu import __version__
from yuntu.kit.metrics import PROMETHEUS_CONTENT_TYPE
from yuntu.kit.routing import make_router

router = make_router(tags=["operations"])


class ComponentHealth(BaseModel):
    status: Literal["ok", "down"]
    latency_ms: float = Field(examples=[0.8])
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "down"]
    version: str = Field(examples=["0.1.0"])
    mode: Literal["embedded", "distributed"]
    components: dict[str, ComponentHealth]


async def _timed(check) -> ComponentHealth:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    try:
        await check()
        status: Literal["ok", "down"] = "ok"
        error = None
    except Exception as exc:  # a health probe reports failures, it does not raise them
        status, error = "down", type(exc).__name__
    return ComponentHealth(
        status=status, latency_ms=round((time.perf_counter() - started) * 1000, 2), error=error
    )


@router.get(
    "/health",
    summary="Service health",
    responses={503: {"model": HealthOut, "description": "A required component is down"}},
)
async def health(request: Request) -> JSONResponse:
    """Overall status, version and `{status, latency_ms}` per component: database, storage (the
    blob store), and Redis when configured. 503 when a required one is down."""
    state = request.app.state
    settings = state.settings

    async def database() -> None:
        async with state.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def storage() -> None:
        await state.storage.check()

    components = {"database": await _timed(database), "storage": await _timed(storage)}
    if settings.redis_url:

        async def redis() -> None:
            if not await state.limiter.check_health():
                raise ConnectionError("redis ping failed")

        components["redis"] = await _timed(redis)
    down = [name for name, c in components.items() if c.status == "down"]
    body = HealthOut(
        status="down" if down else "ok",
        version=__version__,
        mode="distributed"
        if settings.database_url and settings.database_url.startswith("postgres")
        else "embedded",
        components=components,
    )
    return JSONResponse(
        {
            "code": 0 if not down else 503001,
            "message": "success" if not down else "unavailable",
            "data": body.model_dump(mode="json"),
        },
        status_code=503 if down else 200,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": "yuntu_http_requests_total 1"}}}},
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)
