"""Which pvhpc instance polls the scheduler: one at a time, the others ready to take over.

Several instances (one per login node) may share one PostgreSQL database.
Each serves users, takes job reports and submits and cancels jobs; only the
leader runs the poll loop, so slurmctld sees one batched query per cycle
however many instances there are. Leadership is a PostgreSQL session-level
advisory lock held on a connection of its own: when the leader dies its
connection closes, PostgreSQL frees the lock, and the next follower to ask
gets it.

Two pollers for a moment (a leader that has not yet noticed its connection
is gone) cost only load, never correctness: every change goes through
Store.change, which re-reads the session under a row lock and checks the
move.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import zlib

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("pvhpc.db.leadership")

# Any 64-bit number that no other application on the database uses for an advisory lock.
LOCK_KEY = zlib.crc32(b"pvhpc scheduler poller")


class Leadership:
    """The single-instance case (SQLite): always the leader."""

    kind = "sole"
    shared = False    # whether other instances may share the database

    async def hold(self) -> bool:
        """Take or keep leadership; True while this instance is the one that polls."""
        return True

    def release(self) -> None:
        pass


class AdvisoryLockLeadership(Leadership):
    kind = "postgresql advisory lock"
    shared = True

    def __init__(self, engine: Engine, key: int = LOCK_KEY):
        self.engine = engine
        self.key = key
        self._conn: Connection | None = None
        # hold() runs in a worker thread and release() on the event loop at shutdown: never both at once
        # on the one connection that carries the lock.
        self._using = threading.Lock()

    async def hold(self) -> bool:
        # In a thread: a database that does not answer must not stall the event loop, which keeps
        # serving users while the lock is in doubt.
        return await asyncio.to_thread(self._hold)

    def _hold(self) -> bool:
        with self._using:
            try:
                if self._conn is not None:
                    self._conn.execute(text("SELECT 1"))   # still ours while this connection lives
                    return True
                # Autocommit: the lock is the session's, so no transaction needs to stay open while it is held.
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
                    conn.close()
                    return False
                self._conn = conn
                # A leader whose host drops off the network leaves no FIN behind: keep-alives let the
                # server notice within about 15 s and free the lock for a follower.
                for setting, value in (("idle", 5), ("interval", 2), ("count", 5)):
                    conn.execute(text(f"SET tcp_keepalives_{setting} = {value}"))
                return True
            except Exception as e:  # the database went away: whatever we held is gone with the connection
                if self._conn is not None:
                    log.warning("lost the poller lock with its database connection: %s", e)
                self._discard()
                return False

    def _discard(self) -> None:
        """Close the lock's connection for good: its server session ends, and the lock with it.

        Never back to the pool, where a connection still holding the lock would keep every
        instance from leading.
        """
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def release(self) -> None:
        with self._using:
            if self._conn is not None:
                # Unlocked before the connection goes: closing it frees the lock only once its server process has
                # ended, a moment later, and a follower asking in that moment was told no (CI saw it once).
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                except Exception:
                    pass   # the connection is gone already, and the lock with it
            self._discard()


def leadership_for(engine: Engine) -> Leadership:
    """PostgreSQL may be shared by several instances; anything else is one instance's own."""
    if engine.url.get_backend_name() == "postgresql":
        return AdvisoryLockLeadership(engine)
    return Leadership()
