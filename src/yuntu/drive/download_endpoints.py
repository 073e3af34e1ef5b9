"""Placeholder router; endpoints are added by this module's owner."""

from __future__ import annotations

from yuntu.kit.routing import make_router

router = make_router(tags=["drive"])
public_router = make_router(tags=["downloads"])
