"""create_app(settings): middleware, error handlers and every domain router."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from yuntu import __version__
from yuntu.admin.endpoints import router as admin_router
from yuntu.drive.download_endpoints import public_router as download_public_router
from yuntu.drive.download_endpoints import router as download_router
from yuntu.drive.endpoints import router as drive_router
from yuntu.drive.item_endpoints import router as item_router
from yuntu.drive.team_endpoints import router as team_router
from yuntu.events.endpoints import router as events_router
from yuntu.identity.authcache import CHANNEL as AUTH_CHANNEL
from yuntu.identity.authcache import AuthCache
from yuntu.identity.endpoints import router as identity_router
from yuntu.identity.service import AuthRuntime
from yuntu.identity.tokens import TokenCodec
from yuntu.identity.wechat import WechatClient
from yuntu.identity.wechat_endpoints import router as wechat_router
from yuntu.jobs.endpoints import router as jobs_router
from yuntu.jobs.runtime import build_worker
from yuntu.kit import ids
from yuntu.kit.db import Database
from yuntu.kit.http import RequestContextMiddleware, install_error_handlers
from yuntu.kit.logging import configure_logging, get_logger
from yuntu.kit.metrics import Metrics
from yuntu.kit.pubsub import PubSub, create_pubsub
from yuntu.kit.ratelimit import RateLimiter
from yuntu.ledger.admin_endpoints import router as ledger_admin_router
from yuntu.ledger.payment_endpoints import router as payment_router
from yuntu.ledger.points_endpoints import router as points_router
from yuntu.ledger.subscription_endpoints import router as subscription_router
from yuntu.ledger.user_endpoints import router as ledger_user_router
from yuntu.ops.endpoints import router as ops_router
from yuntu.packages.client_endpoints import public_router as package_public_router
from yuntu.packages.client_endpoints import router as package_client_router
from yuntu.packages.endpoints import router as package_router
from yuntu.render.admin_endpoints import router as render_admin_router
from yuntu.render.agent.local import start_local_agent, stop_local_agent
from yuntu.render.agent_endpoints import router as render_agent_router
from yuntu.render.output_endpoints import agent_router as render_output_agent_router
from yuntu.render.output_endpoints import router as render_output_router
from yuntu.render.task_endpoints import router as render_task_router
from yuntu.settings import Settings
from yuntu.storage import open_store
from yuntu.uploads.task_endpoints import router as upload_task_router
from yuntu.uploads.transfer_endpoints import router as upload_transfer_router

API_PREFIX = "/api/v1"
log = get_logger("yuntu.app")

DESCRIPTION = """One backend for Yuntu Cloud, package distribution, PicKitchen and CineGen.

Every JSON answer is an envelope: `{"code": 0, "message": "success", "data": ...}` on success,
`{"code", "message", "error", "data": null, "details"}` on error (see docs/errors.md). Ids are
strings; times are RFC 3339 UTC."""


async def _apply_invalidations(bus: PubSub, cache: AuthCache) -> None:
    """Other processes' session and user changes, received over the bus."""
    subscription = bus.subscribe(AUTH_CHANNEL)
    try:
        while True:
            cache.apply(await subscription.get())
    finally:
        subscription.close()


def upload_body_limit(settings: Settings) -> Callable[[str], int | None]:
    """Routes that take file bytes get a larger body limit than JSON endpoints."""
    direct = settings.upload_direct_max_bytes + 64 * 1024  # multipart form overhead
    part = settings.upload_max_part_bytes

    def limit(path: str) -> int | None:
        if path.endswith("/multipart/upload"):
            return part
        if path.endswith("/upload") and path.startswith(f"{API_PREFIX}/upload-tasks/"):
            return direct
        if path == f"{API_PREFIX}/files/upload":
            return settings.upload_form_max_bytes
        if path.startswith(f"{API_PREFIX}/agents/frames/") and "/outputs/" in path:
            return settings.render_max_output_bytes
        if path.startswith(f"{API_PREFIX}/packages/") and path.endswith("/versions"):
            return settings.packages_max_upload_bytes + 64 * 1024  # multipart form overhead
        if path.endswith("/files/check"):
            return max(settings.max_request_bytes, 64 * 1024 * 1024)
        if path == f"{API_PREFIX}/upload-tasks":
            return max(settings.max_request_bytes, 64 * 1024 * 1024)
        return None

    return limit


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    secret = settings.resolve_secret_key()  # refuses production with a default secret
    configure_logging(settings.log_level, settings.log_json)
    ids.configure(settings.node_id)
    settings.ensure_data_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings.effective_database_url)
        app.state.db.settings = settings
        app.state.storage = open_store(settings.effective_storage_url)
        await app.state.storage.start()
        app.state.db.storage = app.state.storage
        app.state.limiter = RateLimiter(settings.rate_limit_storage_url)
        app.state.auth = AuthRuntime(
            settings=settings,
            codec=TokenCodec(
                secret, settings.access_token_ttl_seconds, settings.refresh_token_ttl_seconds
            ),
            limiter=app.state.limiter,
        )
        app.state.wechat = WechatClient(settings) if settings.wechat_enabled else None
        app.state.bus = create_pubsub(
            settings.redis_url.get_secret_value() if settings.redis_url else None
        )
        await app.state.bus.start()
        app.state.db.bus = app.state.bus
        invalidations = None
        if settings.auth_cache_seconds > 0:
            cache = AuthCache(max_age=settings.auth_cache_seconds)
            app.state.auth.cache = app.state.db.auth_cache = cache
            invalidations = asyncio.create_task(_apply_invalidations(app.state.bus, cache))
        app.state.worker = None
        if settings.workers > 0 and getattr(app.state, "run_workers", True):
            app.state.worker = build_worker(app.state.db, app.state.bus, settings)
            await app.state.worker.start()
        app.state.local_agent = await start_local_agent(app)
        # Everything loaded at start-up lives as long as the process: keep it out of the cyclic
        # collector's scans (large batches, e.g. a 10,000-file manifest, otherwise pay for
        # re-scanning the whole app on every collection).
        gc.freeze()
        log.info("started", version=__version__, env=settings.env, dialect=app.state.db.dialect)
        try:
            yield
        finally:
            await stop_local_agent(app.state.local_agent)
            if app.state.worker is not None:
                await app.state.worker.stop()
            if invalidations is not None:
                invalidations.cancel()
            await app.state.bus.stop()
            if app.state.wechat is not None:
                await app.state.wechat.aclose()
            await app.state.storage.close()
            await app.state.db.dispose()

    app = FastAPI(
        title="Yuntu API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(ops_router)
    # the hottest machine-client paths first: routes are matched in order
    app.include_router(package_client_router, prefix=API_PREFIX)
    app.include_router(package_public_router)
    app.include_router(identity_router, prefix=API_PREFIX)
    app.include_router(wechat_router, prefix=API_PREFIX)
    app.include_router(admin_router, prefix=API_PREFIX)
    app.include_router(jobs_router, prefix=API_PREFIX)
    app.include_router(drive_router, prefix=API_PREFIX)
    app.include_router(team_router, prefix=API_PREFIX)
    app.include_router(item_router, prefix=API_PREFIX)
    app.include_router(upload_task_router, prefix=API_PREFIX)
    app.include_router(upload_transfer_router, prefix=API_PREFIX)
    app.include_router(download_router, prefix=API_PREFIX)
    app.include_router(download_public_router)
    app.include_router(ledger_user_router, prefix=API_PREFIX)
    app.include_router(payment_router, prefix=API_PREFIX)
    app.include_router(points_router, prefix=API_PREFIX)
    app.include_router(subscription_router, prefix=API_PREFIX)
    app.include_router(ledger_admin_router, prefix=API_PREFIX)
    app.include_router(render_agent_router, prefix=API_PREFIX)
    app.include_router(render_admin_router, prefix=API_PREFIX)
    app.include_router(render_output_agent_router, prefix=API_PREFIX)
    app.include_router(render_output_router, prefix=API_PREFIX)
    app.include_router(render_task_router, prefix=API_PREFIX)
    app.include_router(package_router, prefix=API_PREFIX)
    app.include_router(events_router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["ETag", "X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body=settings.max_request_bytes,
        metrics=app.state.metrics,
        body_limit_for=upload_body_limit(settings),
    )
    return app
