"""Continuation: a session asked to continue goes on in a successor job, keeping its id, URL and secret.

The steps, each in the session's history and on its push channel:

1. At walltime minus the lead (``lead_seconds``) the successor is submitted as the first job was (same partition,
   resources, account, QoS, application, version, data, and the session's secret, given the same way: in its job
   script, never on a command line), with a report token of its own, and a job script that waits for the handover
   before its server starts (``continues``: pvhpc/node/jobhelper.py handover).
2. Once the successor runs (the tracker sees it, or its job asks for the handover with its token), it takes over:
   its token becomes the session's (the old job's is no longer believed), its job id the session's, the route is
   dropped until it reports ready, and the old job is ended the way the walltime would end it: Slurm's SIGTERM,
   on which its server saves its ParaView state (pvhpc/node/pvstate.py).
3. The successor's handover asks are answered "wait" until the old job has left the queue, then with the newest
   state this session saved: its server starts from it, reports ready like any job, and the front ends route the
   same session id to the new host and port. A ``continued`` Notice tells the page.

A successor still queued when the old walltime comes: the old job ends and saves its state as at any walltime,
and the session waits for its successor (queued, in words that say so); the successor loads that state when it
starts. A successor that never starts (refused, failed, cancelled while queued) while the old job still runs
takes nothing from the session: continuation is turned off, the history and a Notice say why, and the session
runs to its walltime. Only when the old job has already ended (the successor was the session's one hope) does it
end the session with that reason: its saved states are kept and listed, and no job is left behind.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from datetime import datetime, timedelta

from pvhpc.config import SiteConfig
from pvhpc.db.store import Change, SessionRecord, utcnow
from pvhpc.jobs.durations import format_minutes
from pvhpc.jobs.states import EndReason, SessionState
from pvhpc.jobs.template import TemplateError
from pvhpc.scheduler import JobInfo, JobState, SchedulerUnavailable, SubmitRefused
from pvhpc.sessions import lifecycle
from pvhpc.sessions.events import Notice
from pvhpc.sessions.job import build_job
from pvhpc.sessions.outcomes import NotAllowed, OverLimit, ServiceError, WrongState
from pvhpc.sessions.service import token_hash
from pvhpc.sessions.spec import SessionSpec
from pvhpc.sessions.walltime_warnings import ends_at

log = logging.getLogger("pvhpc.sessions.continuation")
S = SessionState

# The lead's bounds when staff set none: a quarter of the walltime, no less than a successor's usual start on an
# idle cluster, no more than one on a busy one is worth waiting early for.
MIN_LEAD_S, MAX_LEAD_S = 30.0, 300.0
SUCCESSOR_SUFFIX = re.compile(r"-c\d+$")


# -- the rules (pure) -------------------------------------------------------------------------------------------
def lead_seconds(config: SiteConfig, walltime_minutes: int) -> float:
    """Seconds before the walltime at which the successor is submitted: staff's continue_lead (never more than
    half the walltime), else a quarter of the walltime within MIN_LEAD_S..MAX_LEAD_S."""
    walltime_s = walltime_minutes * 60.0
    if config.service.continue_lead is not None:
        return min(config.service.continue_lead, walltime_s / 2)
    return min(MAX_LEAD_S, max(MIN_LEAD_S, walltime_s / 4), walltime_s / 2)


def allowed_on(config: SiteConfig, partition: str) -> bool:
    """Whether sessions on ``partition`` may continue: its own word, else the site's."""
    own = config.partitions[partition].continuation if partition in config.partitions else None
    return config.service.continuation if own is None else own


def refusal(config: SiteConfig, partition: str, walltime_minutes: int, continuations: int = 0,
            application: str | None = None) -> Exception | None:
    """Why a session of ``application`` on ``partition`` with this walltime, continued ``continuations`` times so
    far, may not ask for one more job, or None. The error names the field ``continue``."""
    app = config.applications.get(application) if application else None
    if app is not None and not app.saved_states:
        # Its server saves no state: a successor would start empty, the user's work lost.
        return NotAllowed(f"application {application} cannot continue: its server does not save its ParaView "
                          "state (saved_states is false)", field="continue")
    if not allowed_on(config, partition):
        return NotAllowed(f"sessions on partition {partition} cannot continue in a successor job here "
                          "(service.continuation, partitions.<name>.continuation)", field="continue")
    total = walltime_minutes * (continuations + 2)
    if total > config.service.continue_max_total:
        done = walltime_minutes * (continuations + 1)
        return OverLimit(f"one more job of {format_minutes(walltime_minutes)} would make this session run "
                         f"{format_minutes(total)} in all ({format_minutes(done)} so far); this site allows a "
                         f"continued session {format_minutes(config.service.continue_max_total)} "
                         "(service.continue_max_total)", field="continue")
    return None


def successor_due(config: SiteConfig, record: SessionRecord, now: datetime) -> bool:
    """Whether the successor of ``record`` is to be submitted now: asked for, allowed, none yet, its server
    ready, and the walltime within the lead."""
    if not record.continue_wanted or record.successor_job_id or record.session_state is not S.READY:
        return False
    end = ends_at(record)
    if end is None or refusal(config, record.partition, record.walltime_minutes, record.continuations,
                              record.application):
        return False
    return (end - now).total_seconds() <= lead_seconds(config, record.walltime_minutes)


def job_gone(job: JobInfo | None) -> bool:
    """Whether a job has left the queue for good (gone from it, or ended); one ENDING is still saving."""
    return job is None or job.is_finished


def successor_job_name(job_name: str, continuations: int) -> str:
    """The successor's job name: the session's first one with the successor's number (its log's name too)."""
    return f"{SUCCESSOR_SUFFIX.sub('', job_name)}-c{continuations + 1}"


def spec_of(config: SiteConfig, record: SessionRecord) -> SessionSpec:
    """The request a successor is submitted with: the session's own, without a state to start from (it waits for
    the one its predecessor saves). Its walltime is the session's within the partition's walltime max: More time
    may have grown the session's past it (up to extend_walltime_max), and sbatch would refuse that."""
    app = config.applications[record.application]
    partition = config.partitions.get(record.partition)
    walltime = min(record.walltime_minutes, partition.walltime.max) if partition else record.walltime_minutes
    return SessionSpec(record.application, record.partition, record.gpus, walltime, record.account,
                       record.qos, record.data_root or str(app.data_roots[0]), record.data_file, record.nodes,
                       record.ranks, None, record.version)


# -- the steps ----------------------------------------------------------------------------------------------------
class Continuation:
    """Submits successors, hands sessions over to them and answers their handover asks. The tracker calls
    ``cycle`` in each poll with its one batched query's answers (``extra_job_ids`` are asked for in it too)."""

    def __init__(self, config: SiteConfig, service, saved_states=None):
        self.config = config
        self.service = service
        self.saved_states = saved_states
        self._told: dict[str, str] = {}   # session id -> the job whose takeover its user was told of
        service.bus.on_change(self._tell_taken_over)

    @property
    def scheduler(self):
        return self.service.scheduler

    # -- the owner's word -----------------------------------------------------------------------------------------
    def check_launch(self, spec: SessionSpec) -> None:
        """Refuse ``"continue": true`` at launch where it could never happen, before anything is submitted."""
        why = refusal(self.config, spec.partition, spec.walltime_minutes, application=spec.application)
        if why is not None:
            raise why

    async def set_wanted(self, record: SessionRecord, wanted: bool) -> SessionRecord:
        """Ask for continuation (or stop asking) on a live session. Turned off with a successor already queued:
        the successor is cancelled and the session ends at its walltime.

        The change is written only onto the row as it was read (``known``), and a successor cancelled only once
        that write went through: the tracker or a handover ask may meanwhile have made the successor the
        session's own job, which must not be cancelled, nor its takeover written back. On such a race the row is
        read again and decided anew (a few times; then the caller is asked to try again)."""
        for _ in range(3):
            if record.session_state is S.ENDED:
                raise WrongState(f"session {record.id} has ended: it cannot continue; start a new one from its "
                                 "saved state", field="continue")
            if wanted:
                why = refusal(self.config, record.partition, record.walltime_minutes, record.continuations,
                              record.application)
                if why is not None:
                    raise why
            if wanted == record.continue_wanted:
                return record
            fields = dict(continue_wanted=wanted)
            queued = record.successor_job_id if not wanted else None
            if queued:
                fields.update(successor_job_id=None, successor_token_hash=None)
            words = ("continuation asked: it goes on in a successor job before its walltime" if wanted
                     else "continuation turned off: it ends at its walltime")
            changed = await self.service.apply(record.id, Change.to(record.session_state, words, **fields),
                                               known=record)
            if changed is not None:
                if queued:
                    await self._cancel(queued, record.user)
                return changed
            fresh = await self.service.get(record.id)
            if fresh is None:
                raise NotAllowed(f"no session {record.id}")
            record = fresh
        raise ServiceError(f"session {record.id} kept changing while continuation was switched: try again")

    # -- each poll cycle ---------------------------------------------------------------------------------------------
    @staticmethod
    def extra_job_ids(live: list[SessionRecord]) -> list[str]:
        """The successors and predecessors the tracker's one query asks about besides the sessions' own jobs."""
        return [j for s in live for j in (s.successor_job_id, s.predecessor_job_id) if j]

    async def cycle(self, live: list[SessionRecord], jobs: dict[str, JobInfo], now: datetime | None = None) -> set[str]:
        """One poll's continuation steps; returns the ids of the sessions decided here this cycle (the tracker
        leaves them be until the next)."""
        now = now or utcnow()
        handled: set[str] = set()
        for record in live:
            try:
                if record.predecessor_job_id and job_gone(jobs.get(record.predecessor_job_id)):
                    await self._predecessor_ended(record)
                    continue    # written: the rest is decided next cycle, on the session as it is then
                if record.successor_job_id:
                    if await self._follow_successor(record, jobs):
                        handled.add(record.id)
                elif successor_due(self.config, record, now):
                    await self.submit_successor(record)
            except SchedulerUnavailable as e:
                log.warning("continuation of session %s…: the scheduler could not be asked: %s", record.id[:6], e)
        return handled

    async def _follow_successor(self, record: SessionRecord, jobs: dict[str, JobInfo]) -> bool:
        successor = jobs.get(record.successor_job_id)
        own = jobs.get(record.job_id) if record.job_id else None
        if successor is not None and successor.is_running:
            await self.take_over(record)
            return True
        if successor is None or successor.is_finished:
            said = (successor.said if successor is not None and successor.said else "it left the queue")
            await self._successor_failed(record, bool(record.job_id) and job_gone(own),
                                         f"job {record.successor_job_id} ({said})")
            return True
        if successor.state is JobState.PENDING and job_gone(own):
            # The walltime came first: the old job has ended, its state saved on the way out.
            words = lifecycle.explain_queue_reason(successor.queue_reason, successor.reason)
            await self.service.apply(record.id, Change.to(
                S.QUEUED, f"its job reached its walltime and saved its state; waiting for its successor job "
                          f"{record.successor_job_id} to start ({words}), which starts from that state",
                job_id=record.successor_job_id, report_token_hash=record.successor_token_hash,
                job_name=successor_job_name(record.job_name, record.continuations),   # its log is the session's now
                successor_job_id=None, successor_token_hash=None, predecessor_job_id=None,
                continuations=record.continuations + 1, host=None, port=None, node=None, running_since=None,
                expected_start=successor.expected_start), known=record)
            return True
        return False

    async def submit_successor(self, record: SessionRecord) -> SessionRecord | None:
        """Submit ``record``'s successor; a refusal turns continuation off and the session runs to its walltime."""
        token = secrets.token_urlsafe(32)
        name = successor_job_name(record.job_name, record.continuations)
        try:
            job = build_job(self.config, spec_of(self.config, record), record.user, record.id, name, record.secret,
                            token, continues=True)
            # A submission whose answer was lost (sbatch timed out after Slurm queued it) left a successor whose
            # token nobody kept: it could never take over, and it must not stay queued beside a new one.
            stray = (await self.scheduler.find_by_name([name])).get(name)
            if stray is not None and not stray.is_finished:
                log.warning("session %s…: successor job %s of an unanswered submission cancelled before submitting "
                            "again", record.id[:6], stray.job_id)
                await self.scheduler.cancel(stray.job_id, record.user)
            job_id = await self._submit(job, name)
        except (SubmitRefused, TemplateError, KeyError) as e:
            # Only submitted while the session is ready, its job running: it runs on to its walltime.
            await self._successor_failed(record, False, f"its submission was refused: {e}")
            return None
        changed = await self.service.apply(record.id, Change.to(
            record.session_state, f"successor submitted as job {job_id}; it takes over before the walltime",
            successor_job_id=job_id, successor_token_hash=token_hash(token)), known=record)
        if changed is None:
            # The session moved meanwhile (cancelled, ended): the successor must not outlive the decision.
            await self._cancel(job_id, record.user)
        return changed

    async def _submit(self, job, name: str) -> str:
        """Submit ``job``; when sbatch's answer is lost, the job found by its name (as the service's own submit
        does). A scheduler still away raises: the next poll tries again, cancelling what this one left queued."""
        try:
            return await self.scheduler.submit(job)
        except SchedulerUnavailable:
            found = (await self.scheduler.find_by_name([name])).get(name)
            if found is None or found.is_finished:
                raise
            return found.job_id

    async def _successor_failed(self, record: SessionRecord, own_ended: bool, why: str) -> None:
        """The successor will not start (``why``). Continuation is an extra: while the session's own job runs it
        keeps the time it had and ends at its walltime, continuation off (asking again would fail alike); only a
        session whose job has already ended (``own_ended``), the successor its one hope, ends (successor_failed)."""
        if own_ended:
            await self.service.end(record, EndReason.SUCCESSOR_FAILED, why, only_if_unchanged=True)
            return
        changed = await self.service.apply(record.id, Change.to(
            record.session_state, f"its successor did not start ({why}): continuation is off, and the session "
                                  "goes on until its walltime", continue_wanted=False, successor_job_id=None,
            successor_token_hash=None), known=record)
        if changed is None:
            return   # written meanwhile (taken over, cancelled): decided again on the row as it is now
        self.service.bus.notify(Notice(
            record.id, "successor_failed", f"This session cannot go on in a successor job ({why}); it still "
            "runs until its walltime: save what you need before then", ends_at=ends_at(changed)))

    async def take_over(self, record: SessionRecord) -> SessionRecord | None:
        """The successor runs: it becomes the session's job, and the old one is ended, saving its state."""
        old = record.job_id
        changed = await self.service.apply(record.id, Change.to(
            S.STARTING, f"taken over by job {record.successor_job_id}; job {old} is saving its state",
            job_id=record.successor_job_id, report_token_hash=record.successor_token_hash,
            job_name=successor_job_name(record.job_name, record.continuations),   # its log is the session's now
            successor_job_id=None, successor_token_hash=None, predecessor_job_id=old,
            continuations=record.continuations + 1, host=None, port=None, node=None, running_since=utcnow(),
            expected_start=None), known=record)
        if changed is not None and old:
            # Ended as the walltime ends it: SIGTERM, on which the server saves its state (pvhpc/node/pvstate.py).
            await self._cancel(old, record.user)
        return changed

    async def _predecessor_ended(self, record: SessionRecord) -> None:
        await self.service.apply(record.id, Change.to(
            record.session_state, f"job {record.predecessor_job_id} has ended, its state saved",
            predecessor_job_id=None), known=record)

    async def _cancel(self, job_id: str, user: str) -> None:
        try:
            await self.scheduler.cancel(job_id, user)
        except SchedulerUnavailable as e:
            log.warning("could not cancel job %s: %s", job_id, e)

    # -- the successor's handover ask ---------------------------------------------------------------------------------
    async def handover(self, session_id: str, token: str) -> dict:
        """A successor job's ask, with its own report token: ``{"wait": true}`` until its predecessor has left
        the queue (its state saved), then ``{"state": PATH}`` (the newest state the session saved; "" if none)."""
        record = await self.service.get(session_id)
        hashed = token_hash(token) if token else ""
        ours = record is not None and bool(token) and hmac.compare_digest(hashed, record.report_token_hash)
        successor = (record is not None and bool(token) and record.successor_token_hash is not None
                     and hmac.compare_digest(hashed, record.successor_token_hash))
        if not (ours or successor):
            raise NotAllowed("unknown session or wrong report token")
        if record.session_state is S.ENDED:
            raise WrongState("the session has ended")
        if successor:
            # Its job runs (only it holds the token): no need to wait for the tracker's next poll to see so.
            await self.take_over(record)
            return {"wait": True}
        if record.predecessor_job_id:
            job = (await self.scheduler.query([record.predecessor_job_id])).get(record.predecessor_job_id)
            if not job_gone(job):
                return {"wait": True}
            await self._predecessor_ended(record)
        return {"state": await self.newest_state(record)}

    async def newest_state(self, record: SessionRecord) -> str:
        if self.saved_states is None:
            return ""
        states = [s for s in await self.saved_states.list(record.user) if s["session"] == record.id]
        return states[0]["path"] if states else ""

    # -- telling the user -------------------------------------------------------------------------------------------
    def _tell_taken_over(self, record: SessionRecord) -> None:
        if record.session_state is not S.READY or not record.continuations:
            return
        if self._told.get(record.id) == record.job_id:
            return
        self._told[record.id] = record.job_id
        if len(self._told) > 10000:
            self._told.clear()
        self.service.bus.notify(Notice(
            record.id, "continued", f"This session goes on in job {record.job_id}, from the state its previous job "
            "saved: same address, same pipeline", ends_at=ends_at(record)))
