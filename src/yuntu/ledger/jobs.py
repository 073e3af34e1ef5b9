"""Scheduled ledger work: expired holds and orders, old idempotency records, weekly rewards."""

from __future__ import annotations
