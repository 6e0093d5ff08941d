"""More time for a running session: its job's walltime raised in place, as far as the partition's staff allow.

Staff choose per partition how pvhpc may raise a running job's TimeLimit (``extend_walltime``: none, operator,
sudo) and the most a session's whole walltime may come to (``extend_walltime_max``). Every rule is checked here
before Slurm is asked; the stored walltime changes only after Slurm took the new one, so everything that reads
it (the time left in the API, the page and the CLI, the warnings before the walltime) follows Slurm, never the
other way round. Slurm is asked for the new total, not for an addition: a request repeated after an unanswered
one, or two at once from two instances, cannot add twice.

Nothing on the node needs telling: the job script computes no end of its own, and the server saves its state on
Slurm's SIGTERM at whatever time that comes (pvhpc/node/pvstate.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from sqlalchemy.exc import OperationalError

from pvhpc.config import PartitionConfig, SiteConfig
from pvhpc.db.store import Change, SessionRecord
from pvhpc.jobs.states import SessionState
from pvhpc.scheduler import ChangeRefused, Scheduler, SchedulerUnavailable
from pvhpc.sessions.outcomes import JobRefused, NotAllowed, NotRecorded, SchedulerAway, WrongState
from pvhpc.sessions.spec import RequestError

log = logging.getLogger("pvhpc.sessions.more_time")
S = SessionState

#: states in which the session's job runs (its server starting, or ready)
RUNNING_STATES = frozenset({S.STARTING, S.READY})


def parse_minutes(value) -> int:
    """The request's ``minutes``: a positive whole number (JSON 5, not 5.0, "5" or true)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RequestError(f"must be a positive whole number of minutes, not {value!r}", field="minutes")
    return value


def allowed_now(record: SessionRecord, partition: PartitionConfig | None) -> tuple[int, str | None]:
    """The most minutes the session's walltime may still grow by, and why not (None when it may): the page's
    button and the API's ``more_time`` say the same as a request would be answered."""
    if partition is None or partition.extend_walltime == "none":
        return 0, (f"partition {record.partition} does not allow more time for a running session; "
                   f"start a new session with a longer walltime")
    if record.successor_job_id:
        # The successor takes over before this job's walltime and ends it: minutes added to it would be lost.
        return 0, ("a successor job is already queued to continue this session: it takes over before the "
                   "walltime, so more time for this job would be lost")
    room = partition.extend_walltime_max - record.walltime_minutes
    if room <= 0:
        return 0, (f"this session has the most walltime partition {record.partition} allows "
                   f"({partition.extend_walltime_max} min)")
    return room, None


def offer(record: SessionRecord, config: SiteConfig) -> dict | None:
    """What the session's user may ask for now (the API's ``more_time``); None once it has ended."""
    if record.session_state is S.ENDED:
        return None
    most, why = allowed_now(record, config.partitions.get(record.partition))
    if why is None and record.session_state not in RUNNING_STATES:
        why = "more time can be asked for once the session's job runs"
    return {"allowed": why is None, "most_minutes": most, "why": why}


def check(record: SessionRecord, user: str, minutes, config: SiteConfig) -> tuple[int, int, PartitionConfig]:
    """``minutes`` checked against every rule for ``user``'s request on ``record``; returns the minutes, the new
    whole walltime and the partition. Raises, naming what was wrong, before anything is asked of Slurm."""
    if record.user != user:
        # As the API answers for any session that is not the caller's (web/base.py own_session): no probing.
        raise NotAllowed(f"no session {record.id}")
    minutes = parse_minutes(minutes)
    if record.session_state not in RUNNING_STATES or not record.job_id:
        raise WrongState(f"the session is {record.state}: more time is only for a session whose job runs "
                         f"(starting or ready)", field="state")
    partition = config.partitions.get(record.partition)
    most, why = allowed_now(record, partition)
    if why is not None:
        raise NotAllowed(why, field="continue" if record.successor_job_id else "partition")
    if minutes > most:
        raise RequestError(f"{minutes} more minutes would make {record.walltime_minutes + minutes} min, over the "
                           f"{partition.extend_walltime_max} min partition {record.partition} allows "
                           f"(extend_walltime_max): at most {most} more", field="minutes")
    return minutes, record.walltime_minutes + minutes, partition


class MoreTime:
    """Grants more time: the rules, then Slurm, then the store (which tells the push channel and the warnings)."""

    def __init__(self, config: SiteConfig, scheduler: Scheduler, service,
                 counted: Callable[[str, str, int], None] | None = None):
        """``service``: the session service, the one writer of session state. ``counted(partition, outcome,
        minutes)``: how each request ended, for the metrics."""
        self.config = config
        self.scheduler = scheduler
        self.service = service
        self.counted = counted or (lambda partition, outcome, minutes=0: None)
        self._locks: dict[str, asyncio.Lock] = {}

    async def extend(self, session_id: str, user: str, minutes) -> SessionRecord:
        # One request per session at a time here: the second reads the walltime the first one stored (across
        # instances, asking Slurm for the total keeps two at once from adding more than one of them).
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            record = await self._extend(session_id, user, minutes)
        if len(self._locks) > 10000:   # forget the idle ones now and then (as the service forgets its create locks)
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return record

    async def _extend(self, session_id: str, user: str, minutes) -> SessionRecord:
        record = await self.service.get(session_id)
        if record is None:
            raise NotAllowed(f"no session {session_id}")
        try:
            minutes, total, partition = check(record, user, minutes, self.config)
        except (NotAllowed, WrongState, RequestError):
            self.counted(record.partition, "refused", 0)
            raise
        try:
            await self.scheduler.set_time_limit(record.job_id, total, partition.extend_walltime)
        except ChangeRefused as e:
            self.counted(record.partition, "slurm_refused", 0)
            raise JobRefused(f"Slurm refused more time for job {record.job_id}: {e}", field="minutes") from None
        except SchedulerUnavailable as e:
            self.counted(record.partition, "unavailable", 0)
            # Asked for the total, so asking again cannot add twice.
            raise SchedulerAway(f"Slurm could not be asked for more time (the walltime may or may not have "
                                f"changed; asking again is safe): {e}") from None
        detail = f"walltime extended by {minutes} min, now {total} min"
        log.info("session %s… job %s: %s", session_id[:6], record.job_id, detail)
        # The session's detail and state stay (the tracker's words for them); the history says what changed.
        try:
            updated = await self.service.apply(session_id, Change.noted(detail, walltime_minutes=total))
        except OperationalError as e:
            # Not the web layer's "nothing was changed": Slurm has the new TimeLimit. The stored walltime is still
            # the old one, so the same request again asks Slurm for the same total and records it.
            self.counted(record.partition, "unrecorded", 0)
            log.warning("session %s… job %s: %s in Slurm, not recorded: %s", session_id[:6], record.job_id, detail,
                        str(e).splitlines()[0][:200])
            raise NotRecorded(f"Slurm gave job {record.job_id} its new walltime of {total} min, but pvhpc could not "
                              f"record it (its database is busy or unavailable); ask again for the same {minutes} "
                              f"min shortly: it adds nothing twice") from None
        self.counted(record.partition, "granted", minutes)
        return updated or await self.service.get(session_id)
