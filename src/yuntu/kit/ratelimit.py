"""Moving-window rate limits on `limits.aio`: memory when embedded, Redis when configured."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from yuntu.kit.errors import AppError, E


class RateLimiter:
    def __init__(self, storage_url: str) -> None:
        self.storage: Storage = storage_from_string(storage_url)  # type: ignore[assignment]
        self.strategy = MovingWindowRateLimiter(self.storage)

    @staticmethod
    def item(limit: int, window_seconds: int) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(limit, window_seconds)

    async def retry_after(self, limit: int, window_seconds: int, *keys: str) -> int | None:
        """Seconds to wait when `keys` are already at the limit, else None (nothing recorded)."""
        item = self.item(limit, window_seconds)
        for key in keys:
            if not await self.strategy.test(item, key):
                stats = await self.strategy.get_window_stats(item, key)
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None

    async def hit(self, limit: int, window_seconds: int, *keys: str) -> None:
        item = self.item(limit, window_seconds)
        for key in keys:
            await self.strategy.hit(item, key)

    async def enforce(self, limit: int, window_seconds: int, *keys: str) -> None:
        """Count one event against every key; raise 429 when any is over its limit."""
        wait = await self.retry_after(limit, window_seconds, *keys)
        if wait is not None:
            raise too_many(wait, limit)
        await self.hit(limit, window_seconds, *keys)

    async def clear(self, limit: int, window_seconds: int, *keys: str) -> None:
        item = self.item(limit, window_seconds)
        for key in keys:
            await self.strategy.clear(item, key)

    async def check_health(self) -> bool:
        return bool(await self.storage.check())

    async def reset(self) -> None:
        await self.storage.reset()


def too_many(retry_after: int, limit: int) -> AppError:
    return AppError(
        E.RATE_LIMITED,
        headers={
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(retry_after),
        },
    )
