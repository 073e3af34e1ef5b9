"""PicKitchen points and points-pack orders: /points/balance, /points/transactions, /order/*."""

from __future__ import annotations

from yuntu.kit.routing import error_responses, make_router

router = make_router(tags=["points"], responses=error_responses(401))
