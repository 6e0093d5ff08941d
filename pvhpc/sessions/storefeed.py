"""Changes written by other instances sharing the database, published on this instance's event bus.

With two instances on one database, a session may be created on one, made
ready by a job report taken by the other and ended by whichever polls. Each
instance's front-end map, push channels and waiting launcher requests follow
its own event bus; this feed puts the peers' changes there too, by reading
the sessions written since it last looked.

It looks back a margin, not just since its last read: a transaction that
started before another may commit after it, and the instances' clocks (which
stamp ``updated_at``) differ a little. Versions it has already published,
its own included, are not published again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from pvhpc.sessions.background import BackgroundLoop
from pvhpc.sessions.events import EventBus
from pvhpc.db.store import SessionRecord, Store, utcnow

log = logging.getLogger("pvhpc.sessions.storefeed")


class StoreFeed(BackgroundLoop):
    def __init__(self, store: Store, bus: EventBus, interval: float = 0.5, margin: float = 30.0):
        self.store = store
        self.bus = bus
        self.interval = interval
        self.margin = timedelta(seconds=margin)
        self._published: dict[str, datetime] = {}   # session id -> updated_at of the version last published
        self._since = utcnow()
        self._warned_clock = False
        bus.on_change(self._seen)

    def _seen(self, record: SessionRecord) -> None:
        self._published[record.id] = record.updated_at

    async def read_once(self) -> int:
        """Publish what changed since the last look; returns how many versions were new here."""
        # Ids and versions first: after a mass write (every session "unknown" while Slurm is away) the
        # window holds thousands of rows this instance has already published.
        versions = await self.store.off_loop.versions_since(self._since - self.margin)
        unseen = [sid for sid, version in versions if self._published.get(sid) != version]
        new = 0
        for i in range(0, len(unseen), 500):
            for record in await self.store.off_loop.get_many(unseen[i:i + 500]):
                if self._published.get(record.id) != record.updated_at:
                    self.bus.publish(record, from_peer=True)   # _seen records it
                    new += 1
        if versions:
            now = utcnow()
            newest = max(version for _, version in versions)
            if newest > now + self.margin and not self._warned_clock:
                log.warning("a session was stamped %s, more than %s ahead of this host's clock: keep the "
                            "instances' clocks in step (NTP)", newest, self.margin)
                self._warned_clock = True
            # Never ahead of this host's clock: one peer's fast clock must not push the window past the others.
            self._since = min(max(self._since, newest), now)
        if len(self._published) > 1000:
            horizon = self._since - 2 * self.margin
            self._published = {k: v for k, v in self._published.items() if v >= horizon}
        return new

    async def run(self) -> None:
        while True:
            try:
                await self.read_once()
            except Exception as e:   # database away for a moment: the next look catches up
                log.warning("could not read peers' changes: %s", e)
            await asyncio.sleep(self.interval)
