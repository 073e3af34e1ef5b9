"""PicKitchen subscriptions: /subscription/status and the RevenueCat webhook."""

from __future__ import annotations

from yuntu.kit.routing import error_responses, make_router

router = make_router(tags=["subscription"], responses=error_responses(401))
