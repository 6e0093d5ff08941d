"""Requests per minute per user: a token bucket each, refilled continuously.

In memory, per service process: a limit against one user's runaway script, not an
accounting record; with several pvhpc instances each enforces it on its own share.
"""

from __future__ import annotations

import time


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
