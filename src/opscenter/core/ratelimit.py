"""Rate limits on the `limits` library: memory by default, Redis when REDIS_URL is set."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from limits import RateLimitItem, WindowStats, parse, strategies
from limits.aio import strategies as aio_strategies
from limits.aio.storage import Storage
from limits.storage import MemoryStorage, storage_from_string


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


@functools.lru_cache(maxsize=64)
def _parsed(rule: str) -> RateLimitItem:
    """A rule such as "100/minute", parsed once (a regular expression and an object per
    request otherwise); the settings hold a handful."""
    item: RateLimitItem = parse(rule)
    return item


SWEEP_EVERY = 1.0  # seconds between two sweeps of expired windows in memory


class SweptMemoryStorage(MemoryStorage):
    """`limits`' synchronous in-process storage, its expired windows swept inline at most
    once a second instead of by a timer thread started every 10 ms of traffic.

    The library's asynchronous storage sweeps after each hit, handing each caller's window
    to a worker thread (about 100 us of CPU per hit); its synchronous one starts a thread
    per sweep, and each start waits for that thread to take the interpreter: 5 % of a
    loaded SQLite list's event loop. Whether a hit is allowed never depends on the sweep
    (each check reads the entries' own times); the sweep only frees memory. The override is
    of the base class's private hook (`limits` is pinned; a test counts the threads)."""

    _next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class RateLimiter:
    """In memory, `SweptMemoryStorage` (nothing waits, so the event loop calls it as it
    is); with Redis, the library's asynchronous storage, shared by every process."""

    def __init__(self, redis_url: str | None, *, enabled: bool = True) -> None:
        # Exactly one of the two, by where the counters live.
        self._memory: strategies.MovingWindowRateLimiter | None = None
        self._shared: aio_strategies.MovingWindowRateLimiter | None = None
        if redis_url:
            storage: Storage = storage_from_string("async+" + redis_url, implementation="redispy")  # type: ignore[assignment]
            self._shared = aio_strategies.MovingWindowRateLimiter(storage)
        else:
            self._memory = strategies.MovingWindowRateLimiter(SweptMemoryStorage())
        self.enabled = enabled

    async def hit(self, rule: str, *identifiers: str) -> Verdict:
        item = _parsed(rule)
        if not self.enabled:
            return Verdict(True, item.amount, item.amount, int(time.time()) + item.get_expiry())
        stats: WindowStats
        if self._memory is not None:
            allowed = self._memory.hit(item, *identifiers)
            stats = self._memory.get_window_stats(item, *identifiers)
        else:
            assert self._shared is not None
            allowed = await self._shared.hit(item, *identifiers)
            stats = await self._shared.get_window_stats(item, *identifiers)
        return Verdict(allowed, item.amount, max(0, stats.remaining), int(stats.reset_time) + 1)

    async def test(self, rule: str, *identifiers: str) -> bool:
        """Whether a hit would be allowed now, without counting one."""
        if not self.enabled:
            return True
        if self._memory is not None:
            return self._memory.test(_parsed(rule), *identifiers)
        assert self._shared is not None
        return await self._shared.test(_parsed(rule), *identifiers)

    async def check(self) -> bool:
        """Whether the storage answers (Redis); memory always does."""
        return self._shared is None or await self._shared.storage.check()

    async def reset(self) -> None:
        if self._memory is not None:
            self._memory.storage.reset()
        else:
            assert self._shared is not None
            await self._shared.storage.reset()
