"""A small in-process cache whose entries expire after a stated number of seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from cachetools import TLRUCache

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live `ttl` seconds at most (0 turns the cache off); `clear` drops them all.
    Bounded by `max_entries` (the least recently used go first)."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        # Each entry carries its own lifetime: an API key that expires sooner than `ttl`.
        self._entries: TLRUCache[K, tuple[V, float]] = TLRUCache(
            max_entries, ttu=lambda _key, entry, now: now + entry[1], timer=time.monotonic
        )
        self._loading: dict[K, asyncio.Future[V]] = {}
        self._cleared = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Keep `value` for the cache's ttl, or for `ttl` seconds when that is shorter."""
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        if lifetime > 0:
            self._entries[key] = (value, lifetime)

    def clear(self) -> None:
        """Drop every entry; a load under way when this is called is neither kept nor
        shared with those who ask afterwards (what it read may be what changed)."""
        self._entries.clear()
        self._loading.clear()
        self._cleared += 1

    async def get_or_load(
        self, key: K, load: Callable[[], Awaitable[tuple[V, float | None]]], *, share: bool = True
    ) -> V:
        """The cached value, else the one `load` answers (with its own ttl, or None for
        the cache's), kept. The callers that ask for a key while it is being loaded wait
        for that load instead of each running their own: when an entry expires under
        load, every request in flight for it missed at once. A load that fails, or whose
        caller went away, is shared with nobody: each of its waiters then loads anew.
        `share=False`: a load that may wait for something its waiters should not (a
        write transaction's lock) is run for its caller alone."""
        if (value := self.get(key)) is not None:
            return value
        pending = self._loading.get(key)
        if pending is not None:
            await asyncio.wait((pending,))  # not cancelled if this caller is
            if not pending.cancelled():
                return pending.result()
        return await self._load(key, load, share)

    async def _load(
        self, key: K, load: Callable[[], Awaitable[tuple[V, float | None]]], share: bool
    ) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        if share:
            self._loading[key] = future
        cleared = self._cleared
        try:
            value, ttl = await load()
        except BaseException:
            future.cancel()  # its waiters load for themselves
            raise
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]
        if cleared == self._cleared:
            self.put(key, value, ttl=ttl)
        future.set_result(value)
        return value
