"""What one user may do: requests per minute (a token bucket each, refilled continuously), and how many of
something they may hold open at once (event streams, proxied connections).

In memory, per service process: a limit against one user's runaway script, not an
accounting record; with several pvhpc instances each enforces it on its own share.
"""

from __future__ import annotations

import collections
import time


class HeldAtOnce:
    """How many of one kind of thing each user holds open now; ``take`` within a bound, ``release`` when done."""

    def __init__(self) -> None:
        self._held: collections.Counter = collections.Counter()

    def take(self, user: str, limit: int | None) -> bool:
        """Count one more of ``user``'s, if ``limit`` (None: no bound) allows it."""
        if limit is not None and self._held[user] >= limit:
            return False
        self._held[user] += 1
        return True

    def release(self, user: str) -> None:
        self._held[user] -= 1
        if self._held[user] <= 0:
            del self._held[user]

    def __getitem__(self, user: str) -> int:
        return self._held[user]

    def __bool__(self) -> bool:
        return bool(self._held)


class RateLimiter:
    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, user: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(user, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[user] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > 100000:   # forget full buckets: they hold nothing worth keeping
            self._buckets = {u: b for u, b in self._buckets.items() if b[0] < self.capacity}
        return allowed

    def retry_after(self, user: str) -> float:
        tokens, _ = self._buckets.get(user, (self.capacity, 0.0))
        return max(0.0, (1.0 - tokens) / self.rate)
