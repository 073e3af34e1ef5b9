"""Administrator ledger tools: credit or debit a user (audited), list transfers."""

from __future__ import annotations

from yuntu.kit.routing import error_responses, make_router

router = make_router(tags=["admin"], responses=error_responses(401))
