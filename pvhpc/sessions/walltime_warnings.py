"""When a running session's job will be ended by its walltime, and the warnings its user gets before.

The timers are set from stored times (when the job was seen running, else when its server was ready, plus
its walltime), never from what this process remembers: a restarted service sets them again for every live
session, and sends at once a warning whose time passed while it was down (the walltime itself not yet).
Each instance sharing a database warns its own push channels: every instance's bus sees every change.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta

from pvhpc.db.store import SessionRecord, utcnow
from pvhpc.sessions.events import EventBus, Notice
from pvhpc.jobs.states import SessionState

log = logging.getLogger("pvhpc.sessions.walltime_warnings")
S = SessionState


def ends_at(record: SessionRecord) -> datetime | None:
    """When Slurm ends the session's job (UTC), for a job that runs; None before it runs and once ended.

    Counted from when pvhpc saw the job running (up to a poll interval late) or its server ready
    (after the server's start): the walltime may end a few seconds before this, never after.
    """
    started = record.running_since or record.ready_at
    if record.session_state is S.ENDED or started is None or not record.walltime_minutes:
        return None
    return started + timedelta(minutes=record.walltime_minutes)


def time_left(record: SessionRecord, now: datetime | None = None) -> float | None:
    """Seconds until the walltime ends the session (0 at and past it); None without a running job."""
    end = ends_at(record)
    return None if end is None else max(0.0, (end - (now or utcnow())).total_seconds())


def warning_words(seconds_left: float, end: datetime) -> str:
    minutes = max(1, math.ceil(seconds_left / 60))
    return (f"This session ends in less than {minutes} minute{'s' if minutes != 1 else ''} (its walltime, at "
            f"{end.strftime('%H:%M')} UTC): save your work now; for more time, ask for it where the site allows (More "
            f"time, pvhpc extend) or start a new session with a longer walltime")


class WalltimeWarnings:
    """Sends a ``walltime`` Notice ``offsets`` seconds before each ready session's walltime."""

    def __init__(self, offsets, bus: EventBus):
        self.offsets = tuple(sorted({float(o) for o in offsets}, reverse=True))
        self.bus = bus
        self._timers: dict[str, tuple[datetime, list[asyncio.TimerHandle]]] = {}

    def start(self, live: list[SessionRecord]) -> None:
        """Watch every change from now on, and set the timers of the live sessions there already are."""
        self.bus.on_change(self.watch)
        for record in live:
            self.watch(record)

    def stop(self) -> None:
        for _, handles in self._timers.values():
            for handle in handles:
                handle.cancel()
        self._timers.clear()

    def watch(self, record: SessionRecord) -> None:
        end = ends_at(record) if record.session_state is S.READY else None
        known = self._timers.get(record.id)
        if known is not None and known[0] == end:
            return   # most changes of a ready session (its detail) move nothing here
        if known is not None:
            for handle in known[1]:
                handle.cancel()
            del self._timers[record.id]
        if end is None or not self.offsets:
            return
        loop = asyncio.get_running_loop()
        now = utcnow()
        left = (end - now).total_seconds()
        if left <= 0:
            return
        handles = [loop.call_later(left - offset, self._warn, record.id, end)
                   for offset in self.offsets if left > offset]
        if len(handles) < len(self.offsets):
            # A warning's time has passed (a restart, a short walltime): the user hears it now.
            handles.append(loop.call_soon(self._warn, record.id, end))
        self._timers[record.id] = (end, handles)

    def _warn(self, session_id: str, end: datetime) -> None:
        left = (end - utcnow()).total_seconds()
        if left <= 0:
            return
        log.info("session %s… is warned: %.0f s of walltime left", session_id[:6], left)
        self.bus.notify(Notice(session_id, "walltime", warning_words(left, end), seconds_left=left, ends_at=end))
