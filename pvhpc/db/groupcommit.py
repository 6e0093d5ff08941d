"""Session writes asked for together, committed together: one transaction for the writes waiting their turn.

Two hundred users asking at once made 400 transactions one after another on the store's writer thread (each
session recorded before sbatch, then its ``queued`` change), each a commit the disk had to take (SQLite's fsync,
PostgreSQL's WAL flush): the writer thread, not sbatch or slurmctld, set the pace of a burst. Now the writes that
wait while the writer thread is busy go in the next transaction together, in the order they were asked for. Each
sees the writes of those before it (SQLAlchemy flushes them before its reads), so a user's limits are checked
against every session recorded ahead of it, its own group's too, exactly as one at a time.

A write is a *unit*: a function of an open SQLAlchemy session, which may read, refuse (raise) or write. A unit that
raises must leave nothing behind, whatever it wrote before raising: the transaction is rolled back and the group
runs again without it, so the others commit what they would have committed one after another, that unit refused.
A unit may thus run more than once; only the run that commits counts, and its result is the one handed back.

Holding every row it writes until the group commits, a group can deadlock with another instance's on the
same PostgreSQL (rows locked in the other order), which one at a time never could: the database then aborts one
statement (a deadlock, or a serialization failure), and the group runs again with that unit in it, once.

An error that is the database's, not the unit's (its connection lost, the transaction failing to begin or to
commit) fails every unit left in the group with it at once: none of them is written, as none would have been one
at a time, and the group does not wait out the same failure once per unit. A statement of one unit's that fails
(a row locked past store.LOCK_WAIT_SECONDS, a unique name taken) is that unit's, as it would be alone.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

T = TypeVar("T")
Unit = Callable[[Session], Any]


@dataclass
class Outcome(Generic[T]):
    """What one unit came to: its result once committed, or the error it (or the database) raised."""

    value: T | None = None
    error: BaseException | None = None


def commit_together(begin: Callable[[], AbstractContextManager[Session]], units: Sequence[Unit]) -> list[Outcome]:
    """Run ``units`` in order in one transaction (``begin()``: commits on leaving, rolls back on an error) and
    return their outcomes in the same order. See the module's doc for what happens when one raises."""
    outcomes: dict[int, Outcome] = {}
    pending = list(range(len(units)))
    retried: set[int] = set()
    while pending:
        results: dict[int, Any] = {}
        failed: int | None = None   # the unit whose error is rolling the transaction back
        try:
            with begin() as db:
                for i in pending:
                    try:
                        results[i] = units[i](db)
                        db.flush()   # a write of its own that the database refuses is this unit's error, not the next's
                    except DBAPIError as e:
                        if not e.connection_invalidated:   # else the database's: the whole group's (below)
                            failed = i
                        raise
                    except Exception:
                        failed = i
                        raise
        except Exception as e:
            if failed is not None and failed not in retried and _lost_a_race(e):
                retried.add(failed)
                continue
            if failed is not None:
                outcomes[failed] = Outcome(error=e)
                pending.remove(failed)
                continue
            for i in pending:
                outcomes[i] = Outcome(error=e)
            break
        for i in pending:
            outcomes[i] = Outcome(value=results[i])
        break
    return [outcomes[i] for i in range(len(units))]


# PostgreSQL's SQLSTATEs for "try again": deadlock detected, serialization failure.
RETRYABLE = {"40P01", "40001"}


def _lost_a_race(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) in RETRYABLE


class WriteGroups:
    """Takes units from the event loop and runs them on ``executor`` (the store's one writer thread) in groups.

    A unit joins the group not yet taken up by the writer thread, or starts one (queued on the executor behind
    whatever is there). ``close_group`` stops the waiting group from taking more: a plain write queued on the same
    executor then keeps its place, no unit asked for after it is written before it.
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[Session]], executor: Executor):
        self._begin = begin
        self._executor = executor
        self._lock = threading.Lock()
        self._open: list[tuple[Unit, asyncio.Future]] | None = None

    def submit(self, unit: Unit) -> asyncio.Future:
        """The unit's future on the running loop: its result once its group has committed, or its error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:   # the writer thread takes a group under the same lock: none is taken half-filled
            if self._open is None:
                group: list[tuple[Unit, asyncio.Future]] = []
                self._executor.submit(self._run, group, loop)   # raises once the store is closed: no group left open
                self._open = group
            self._open.append((unit, future))
        return future

    def close_group(self) -> None:
        with self._lock:
            self._open = None

    def _run(self, group: list[tuple[Unit, asyncio.Future]], loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: the group, closed to new units, in one transaction; its futures settled on the loop."""
        with self._lock:
            if self._open is group:
                self._open = None
        try:
            outcomes = commit_together(self._begin, [unit for unit, _ in group])
        except BaseException as e:   # not one of the units' errors (they are in the outcomes): a fault here
            outcomes = [Outcome(error=e)] * len(group)
        try:
            loop.call_soon_threadsafe(_settle, [future for _, future in group], outcomes)
        except RuntimeError:
            pass   # the loop has closed: nobody waits for these answers any more


def _settle(futures: list[asyncio.Future], outcomes: list[Outcome]) -> None:
    for future, outcome in zip(futures, outcomes):
        if future.cancelled():
            continue   # its caller went away; what the unit wrote stays written, as any write under way would
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.value)
