"""A value loaded from the database and kept for a few seconds: configuration read on every request.

The join form's choices and the rate limits' settings change a few times a year but were read on every
submission (ten statements of a join's thirty). `Expiring` keeps what its loader returned for `ttl_s`
seconds; one caller reloads at a time while the others wait for it, and the process that changes the
configuration calls `forget()` so its own next read is fresh. Other instances see the change within
`ttl_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Expiring(Generic[T]):
    def __init__(self, load: Callable[[], Awaitable[T]], ttl_s: float) -> None:
        self._load = load
        self.ttl_s = ttl_s
        self._value: T | None = None
        self._loaded_at = float("-inf")
        self._generation = 0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return time.monotonic() - self._loaded_at < self.ttl_s

    async def get(self) -> T:
        if self._value is not None and self._fresh():
            return self._value
        async with self._lock:
            if self._value is not None and self._fresh():  # another caller loaded it while we waited
                return self._value
            generation = self._generation
            value = await self._load()
            if generation == self._generation:  # not forgotten while loading: keep it
                self._value, self._loaded_at = value, time.monotonic()
            return value

    def forget(self) -> None:
        """The next `get` reloads (call it after changing what the loader reads)."""
        self._generation += 1
        self._value, self._loaded_at = None, float("-inf")
