"""The request harness: one transaction per request, the error envelope, request ids, body limits
and the access log. Endpoints and services never commit; this module does."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from yuntu.kit import idempotency
from yuntu.kit.errors import BY_STATUS, AppError, E, ErrorSpec
from yuntu.kit.i18n import preferred_language
from yuntu.kit.logging import get_logger
from yuntu.kit.metrics import Metrics

log = get_logger("yuntu.http")
_SESSION_KEY = "yuntu_db_session"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_READ_ONLY_KEY = "yuntu_read_only"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
F = TypeVar("F", bound=Callable[..., Any])


def writes(endpoint: F) -> F:
    """Mark a GET endpoint that writes (an OAuth callback, say): it gets a write session."""
    endpoint.yuntu_writes = True  # type: ignore[attr-defined]
    return endpoint


def own_transactions(endpoint: F) -> F:
    """Mark a writing endpoint that opens its own short transactions (byte transfers): the
    request session is a read session, so no write lock is held while a body streams in."""
    endpoint.yuntu_own_transactions = True  # type: ignore[attr-defined]
    return endpoint


def is_read_only(request: Request) -> bool:
    return bool(request.scope.get(_READ_ONLY_KEY))


async def get_db_session(request: Request) -> AsyncSession:
    """The request's session, opened lazily; TransactionalRoute commits or rolls it back.
    GET and HEAD routes get a read session (on SQLite it does not take the write lock)."""
    session = request.scope.get(_SESSION_KEY)
    if session is None:
        db = request.app.state.db
        maker = db.read_sessionmaker if request.scope.get(_READ_ONLY_KEY) else db.sessionmaker
        session = maker()
        request.scope[_SESSION_KEY] = session
    return session


async def release_session(request: Request) -> None:
    """Close the request's session early (it was needed only to authenticate): byte transfers
    open their own short transactions and must not hold a pooled connection meanwhile."""
    await _finish(request, commit=False)


class TransactionalRoute(APIRoute):
    """Commits the request's session once the endpoint succeeded, before the response leaves;
    rolls back on any error (unless the error asks to keep its writes, see AppError.commit)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        read_only = getattr(self.endpoint, "yuntu_own_transactions", False) or (
            bool(self.methods)
            and set(self.methods or ()) <= _READ_METHODS
            and not getattr(self.endpoint, "yuntu_writes", False)
        )

        async def run_in_transaction(request: Request) -> Response:
            request.scope[_READ_ONLY_KEY] = read_only
            try:
                response = await handler(request)
                if request.scope.get(idempotency.SCOPE_KEY) is not None:
                    await idempotency.remember(request, await get_db_session(request), response)
            except idempotency.Replay as replay:
                await _finish(request, commit=False)
                return replay.response()
            except AppError as exc:
                await _finish(request, commit=exc.commit)
                raise
            except BaseException:
                await _finish(request, commit=False)
                raise
            await _finish(request, commit=response.status_code < 400)
            return response

        return run_in_transaction


async def _finish(request: Request, *, commit: bool) -> None:
    session: AsyncSession | None = request.scope.pop(_SESSION_KEY, None)
    if session is None:
        return
    try:
        if request.scope.get(_READ_ONLY_KEY):
            pass  # nothing to commit; close() returns the connection
        elif commit:
            await session.commit()
        else:
            await session.rollback()
    finally:
        await session.close()


def error_body(
    spec: ErrorSpec, lang: str, message: str | None = None, details: Any = None
) -> dict[str, Any]:
    text = message or (spec.en if lang == "en" else spec.zh)
    return {
        "code": spec.code,
        "message": text,
        "error": spec.name,
        "data": None,
        "details": details,
    }


def error_response(
    request: Request,
    spec: ErrorSpec,
    *,
    message: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    lang = preferred_language(request.headers.get("accept-language"))
    body = json.dumps(error_body(spec, lang, message, details), ensure_ascii=False)
    return Response(body, status_code=spec.status, media_type="application/json", headers=headers)


def _validation_details(exc: RequestValidationError) -> tuple[ErrorSpec, list[dict[str, str]]]:
    details = []
    spec = E.VALIDATION_ERROR
    for error in exc.errors()[:50]:
        if error.get("type") == "json_invalid":
            spec = E.MALFORMED_JSON
        location = ".".join(str(part) for part in error.get("loc", ()))
        details.append({"field": location, "message": str(error.get("msg", ""))[:300]})
    return spec, details


# Statuses Starlette/FastAPI raise themselves (routing, body parsing, our body limit): the
# specific catalogue entry, not merely the first one with that status (413 is not a quota).
_HTTP_EXCEPTION_SPECS: dict[int, ErrorSpec] = {
    400: E.BAD_REQUEST,
    404: E.ROUTE_NOT_FOUND,
    405: E.METHOD_NOT_ALLOWED,
    413: E.PAYLOAD_TOO_LARGE,
}


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return error_response(
            request, exc.spec, message=exc.message, details=exc.details, headers=exc.headers
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        spec, details = _validation_details(exc)
        return error_response(request, spec, details=details)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        spec = _HTTP_EXCEPTION_SPECS.get(exc.status_code) or BY_STATUS.get(
            exc.status_code, E.BAD_REQUEST if exc.status_code < 500 else E.INTERNAL_ERROR
        )
        return error_response(request, spec, headers=dict(exc.headers or {}))

    async def on_integrity(request: Request, exc: Exception) -> Response:
        # A uniqueness race the service did not anticipate: still a conflict, never a 500.
        log.warning("integrity_conflict", error=type(exc).__name__)
        return error_response(request, E.CONFLICT)

    async def on_pool_timeout(request: Request, exc: Exception) -> Response:
        # Every pooled connection stayed busy for the pool timeout: overload, not a bug.
        log.warning("database_pool_exhausted")
        return error_response(request, E.SERVICE_UNAVAILABLE, headers={"Retry-After": "5"})

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, on_pool_timeout)
    app.add_exception_handler(IntegrityError, on_integrity)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413)


class RequestContextMiddleware:
    """Outermost application middleware: request id, body size limit, the catch-all that turns an
    unexpected exception into a 500 envelope (never a stack trace), metrics and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        metrics: Metrics,
        body_limit_for: Callable[[str], int | None] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics
        self.body_limit_for = body_limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        limit = self.max_body
        if self.body_limit_for is not None:
            limit = self.body_limit_for(scope["path"]) or limit
        lang = preferred_language(headers.get("accept-language"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                raw = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                raw.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": raw}
            await send(message)

        async def reply(spec: ErrorSpec) -> None:
            body = json.dumps(error_body(spec, lang), ensure_ascii=False).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": spec.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        declared = headers.get("content-length")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        try:
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                await reply(E.PAYLOAD_TOO_LARGE if declared.isdigit() else E.BAD_REQUEST)
            else:
                await self.app(scope, limited_receive, send_with_id)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if not status_holder["started"]:
                await reply(E.INTERNAL_ERROR)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status_holder["status"], duration)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status_holder["status"],
                duration_ms=round(duration * 1000, 2),
                user_id=scope.get("state", {}).get("user_id"),
                client=(scope.get("client") or ("", 0))[0],
            )
