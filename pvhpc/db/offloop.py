"""The store's calls for code on the event loop: each runs in a thread of its own and is awaited.

A database call can wait: on a lock another process holds (a staff command, a
second instance, a migration: up to store.LOCK_WAIT_SECONDS), on a slow disk,
on a PostgreSQL failover. Made on the event loop, that wait paused every
request, push channel and proxied websocket of the service. Made here, only
the request that needs the answer waits.

Writes go to one thread, in the order they were asked for: the service stays
the one writer of session state. Its session writes (``together``: a new
session with the checks that allow it, a change with the row read again under
lock) are units that the writer thread commits in groups, as many as have
waited for it in one transaction (pvhpc.db.groupcommit); a check that must hold
when its write lands (a user's limits before a new session is recorded) runs in
the same unit as that write. Other writes (``write``) run alone, in their turn.
Reads use a few threads beside it, so that a write waiting on a lock holds up
no read; a reader sees each write whole or not at all (SQLite's WAL,
PostgreSQL's MVCC).

Records come back detached (the store's sessions expire nothing on commit), so
they are read on the loop like any value.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from pvhpc.db.groupcommit import WriteGroups

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from pvhpc.db.store import Change, SessionEvent, SessionRecord, Store

T = TypeVar("T")
READERS = 4   # a handful: requests read one row or one user's sessions; the pool behind them is SQLAlchemy's


class OffLoopStore:
    """The same calls as ``Store``'s, awaited; ``write`` and ``read`` run any function that uses the store."""

    def __init__(self, store: "Store", readers: int = READERS):
        self.store = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pvhpc-db-write")
        # An in-memory SQLite database exists once per connection, which SQLAlchemy keeps one per thread:
        # there, every call goes to the one thread.
        self._readers = (ThreadPoolExecutor(readers, thread_name_prefix="pvhpc-db-read")
                         if store.threads_share_data else self._writer)
        self._groups = WriteGroups(store.transaction, self._writer)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the writer thread, after every write asked for before it."""
        self._groups.close_group()   # no unit asked for after this write goes before it
        return await asyncio.get_running_loop().run_in_executor(self._writer, functools.partial(fn, *args, **kwargs))

    async def together(self, unit: "Callable[[Session], T]") -> T:
        """Run ``unit`` (a function of an open database session: reads, checks, writes) on the writer thread, after
        every write asked for before it, in one transaction with the units that wait there with it."""
        return await self._groups.submit(unit)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn``, which only reads, on a reader thread."""
        if self._readers is self._writer:
            self._groups.close_group()   # on the writer's thread it keeps its place among the writes too
        return await asyncio.get_running_loop().run_in_executor(self._readers, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Let calls under way finish; no new ones."""
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)

    # -- Store's calls ------------------------------------------------------------------------------------
    async def get(self, session_id: str) -> "SessionRecord | None":
        return await self.read(self.store.get, session_id)

    async def find(self, *where, **options) -> "list[SessionRecord]":
        return await self.read(self.store.find, *where, **options)

    async def live(self) -> "list[SessionRecord]":
        return await self.read(self.store.live)

    async def sessions_of(self, user: "str | None", **options) -> "list[SessionRecord]":
        return await self.read(self.store.sessions_of, user, **options)

    async def count_live(self) -> int:
        return await self.read(self.store.count_live)

    async def versions_since(self, since: datetime) -> list[tuple[str, datetime]]:
        return await self.read(self.store.versions_since, since)

    async def get_many(self, session_ids: list[str]) -> "list[SessionRecord]":
        return await self.read(self.store.get_many, session_ids)

    async def events(self, session_id: str) -> "list[SessionEvent]":
        return await self.read(self.store.events, session_id)

    async def add(self, record: "SessionRecord") -> "SessionRecord":
        return await self.together(lambda db: self.store.add_in(db, record))

    async def change(self, session_id: str, change: "Change",
                     decided_on: datetime | None = None) -> "SessionRecord | None":
        return await self.together(lambda db: self.store.change_in(db, session_id, change, decided_on))
