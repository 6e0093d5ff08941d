"""In-process publish/subscribe of session changes.

The store's changes are published here once they are committed; the front-end
mapping, push channels (SSE) and waiting launcher requests subscribe. Slow
subscribers lose nothing but are never waited for: each has its own queue.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from pvhpc.db.store import SessionRecord


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue] = set()
        self._callbacks: list[Callable[[SessionRecord], None]] = []
        self._news: list[Callable[[SessionRecord, bool], None]] = []

    def publish(self, record: SessionRecord, from_peer: bool = False) -> None:
        """``from_peer``: another instance sharing the database made this change (pvhpc.db.feed)."""
        for callback in self._callbacks:
            callback(record)
        for news in self._news:
            news(record, from_peer)
        for queue in self._queues:
            queue.put_nowait(record)

    def on_change(self, callback: Callable[[SessionRecord], None]) -> None:
        """Call ``callback`` synchronously for every change (for in-memory mirrors such as the proxy map)."""
        self._callbacks.append(callback)

    def on_news(self, callback: Callable[[SessionRecord, bool], None]) -> None:
        """Like on_change, with whether a peer made the change: what counts changes (pvhpc.metrics) counts each
        once over all instances by counting only its own."""
        self._news.append(callback)

    def subscribe(self) -> "Subscription":
        return Subscription(self)


class Subscription:
    def __init__(self, bus: EventBus):
        self._bus = bus
        self.queue: asyncio.Queue = asyncio.Queue()
        bus._queues.add(self.queue)

    async def get(self, timeout: float | None = None) -> SessionRecord:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def close(self) -> None:
        self._bus._queues.discard(self.queue)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
