"""Rate limits on the `limits` library: memory by default, Redis when REDIS_URL is set."""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # epoch seconds

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_at - int(time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class RateLimiter:
    def __init__(self, redis_url: str | None, *, enabled: bool = True) -> None:
        storage: Storage
        if redis_url:
            storage = storage_from_string("async+" + redis_url, implementation="redispy")  # type: ignore[assignment]
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.enabled = enabled
        self._strategy = MovingWindowRateLimiter(storage)

    async def hit(self, rule: str, *identifiers: str) -> Verdict:
        item: RateLimitItem = parse(rule)
        if not self.enabled:
            return Verdict(True, item.amount, item.amount, int(time.time()) + item.get_expiry())
        allowed = await self._strategy.hit(item, *identifiers)
        stats = await self._strategy.get_window_stats(item, *identifiers)
        return Verdict(allowed, item.amount, max(0, stats.remaining), int(stats.reset_time) + 1)

    async def test(self, rule: str, *identifiers: str) -> bool:
        """Whether a hit would be allowed now, without counting one."""
        if not self.enabled:
            return True
        return await self._strategy.test(parse(rule), *identifiers)

    async def reset(self) -> None:
        await self.storage.reset()
