"""In-process publish/subscribe of session changes.

The store's changes are published here once they are committed; the front-end
mapping, push channels (SSE) and waiting launcher requests subscribe. Slow
subscribers lose nothing but are never waited for: each has its own queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from pvhpc.db.store import SessionRecord


@dataclass(frozen=True)
class Notice:
    """News for a session's user that is not a change of its state: its walltime is near, it is idle."""

    session_id: str
    reason: str                      # "walltime" or "idle"
    message: str                     # in the user's words, with what to do
    seconds_left: float | None = None
    ends_at: datetime | None = None  # UTC

    def json(self) -> dict:
        """As the push channel sends it (``event: warning``; docs/web.md)."""
        ends = self.ends_at.replace(tzinfo=timezone.utc).isoformat() if self.ends_at else None
        left = None if self.seconds_left is None else max(0, round(self.seconds_left))
        return {"type": "warning", "id": self.session_id, "reason": self.reason, "message": self.message,
                "seconds_left": left, "ends_at": ends}


class EventBus:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue] = set()
        self._callbacks: list[Callable[[SessionRecord], None]] = []
        self._news: list[Callable[[SessionRecord, bool], None]] = []
        self._notice_queues: set[asyncio.Queue] = set()

    def publish(self, record: SessionRecord, from_peer: bool = False) -> None:
        """``from_peer``: another instance sharing the database made this change (pvhpc.sessions.storefeed)."""
        for callback in self._callbacks:
            callback(record)
        for news in self._news:
            news(record, from_peer)
        for queue in self._queues:
            queue.put_nowait(record)

    def notify(self, notice: Notice) -> None:
        """Pass ``notice`` to the subscriptions that asked for notices (push channels); state followers never
        see one."""
        for queue in self._notice_queues:
            queue.put_nowait(notice)

    def on_change(self, callback: Callable[[SessionRecord], None]) -> None:
        """Call ``callback`` synchronously for every change (for in-memory mirrors such as the proxy map)."""
        self._callbacks.append(callback)

    def on_news(self, callback: Callable[[SessionRecord, bool], None]) -> None:
        """Like on_change, with whether a peer made the change: what counts changes (pvhpc.metrics) counts each
        once over all instances by counting only its own."""
        self._news.append(callback)

    def subscribe(self, notices: bool = False) -> "Subscription":
        """Every change; with ``notices``, every Notice too (get() then returns either)."""
        return Subscription(self, notices)


class Subscription:
    def __init__(self, bus: EventBus, notices: bool = False):
        self._bus = bus
        self.queue: asyncio.Queue = asyncio.Queue()
        bus._queues.add(self.queue)
        if notices:
            bus._notice_queues.add(self.queue)

    async def get(self, timeout: float | None = None) -> SessionRecord | Notice:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def close(self) -> None:
        self._bus._queues.discard(self.queue)
        self._bus._notice_queues.discard(self.queue)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
