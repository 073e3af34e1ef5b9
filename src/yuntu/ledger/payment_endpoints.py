"""The development payment provider's simulated checkout and its signed callback."""

from __future__ import annotations

from yuntu.kit.routing import error_responses, make_router

router = make_router(tags=["payments"], responses=error_responses(401))
