"""Yuntu balance, recharge, transactions and bills: /users/balance, /users/recharge,
/users/transactions, /users/bills."""

from __future__ import annotations

from yuntu.kit.routing import error_responses, make_router

router = make_router(tags=["ledger"], responses=error_responses(401))
