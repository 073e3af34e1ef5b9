"""Routers for every domain: transactional routes and the error responses documented once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from yuntu.kit.http import TransactionalRoute
from yuntu.kit.schemas import ErrorEnvelope

_DESCRIPTIONS = {
    400: "Bad request or malformed JSON",
    401: "Missing, expired or invalid credentials",
    403: "Authenticated but not allowed",
    404: "Not found (also for other users' resources)",
    409: "Conflict with existing state",
    413: "Body too large",
    422: "Validation failed; `details` lists the fields",
    429: "Rate limited; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


COMMON_ERRORS = error_responses(400, 413, 422, 429)


def make_router(**kwargs: Any) -> APIRouter:
    responses = {**COMMON_ERRORS, **kwargs.pop("responses", {})}
    return APIRouter(route_class=TransactionalRoute, responses=responses, **kwargs)
