"""A small in-process cache whose entries expire after a stated number of seconds."""

from __future__ import annotations

import time
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

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Keep `value` for the cache's ttl, or for `ttl` seconds when that is shorter."""
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        if lifetime > 0:
            self._entries[key] = (value, lifetime)

    def clear(self) -> None:
        self._entries.clear()
