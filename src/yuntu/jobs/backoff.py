"""Retry delays: exponential with full jitter, capped per kind."""

from __future__ import annotations

import random

from yuntu.jobs.registry import HandlerSpec


def retry_delay(attempt: int, spec: HandlerSpec | None) -> float:
    base = spec.backoff_base_seconds if spec else 2.0
    cap = spec.backoff_max_seconds if spec else 600.0
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    # Full jitter (AWS architecture blog): spreads retries of a burst of failures.
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (not security sensitive)
