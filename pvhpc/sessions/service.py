"""What can be done to a session: create (submit its job), cancel, take the job's report, wait for it.

Every state change goes store -> event bus, in that order, through ``apply``;
nothing else writes a session's state. Store calls run off the event loop
(pvhpc.db.offloop), writes on the store's writer thread, in the order asked for (those that wait there
together committed together: pvhpc.db.groupcommit).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import string
import time
from datetime import timedelta
from typing import Iterable

from pvhpc import hostaddresses
from pvhpc.config import SiteConfig
from pvhpc.db.store import Change, SessionRecord, Store, utcnow
from pvhpc.jobs import reports
from pvhpc.jobs.states import EndReason, SessionState
from pvhpc.jobs.template import TemplateError
from pvhpc.scheduler import ControllerDown, NoAnswer, Scheduler, SchedulerUnavailable, SubmitRefused
from pvhpc.sessions import lifecycle, nodeaddresses
from pvhpc.sessions.events import EventBus, Notice
# ServiceError, the outcomes' root, is named here too for the callers that catch it.
from pvhpc.sessions.outcomes import (JobRefused, JobScriptFailed, NotAllowed, OverLimit, SchedulerAway,
                                     ServiceError, WrongState)  # noqa: F401
from pvhpc.sessions.job import build_job
from pvhpc.sessions.modules import ModuleAvailability
from pvhpc.sessions.savedstates import SavedStates
from pvhpc.sessions.spec import RequestError, SessionSpec

log = logging.getLogger("pvhpc.sessions.service")
S = SessionState
# Seconds within which a ready report that Slurm's node view refuses does not read that view again.
NODES_REREAD_S = 10.0
# Tries of a user's cancel against a scheduler that does not answer (SessionService._cancel_for_user).
CANCEL_TRIES = 2
CANCEL_RETRY_PAUSE_S = 1.0


def random_word() -> str:
    """192 random bits, URL-safe; never starting with '-', which command lines would read as an option (a
    server given ``--authKey SECRET`` refuses a secret such as ``-x3...`` as a missing argument)."""
    while True:
        candidate = secrets.token_urlsafe(24)
        if not candidate.startswith("-"):
            return candidate


SESSION_ID_ALPHABET = string.ascii_lowercase + string.digits
ID_SPACE = len(SESSION_ID_ALPHABET) ** 32


def new_session_id() -> str:
    """32 lowercase letters and digits (165 random bits). Lowercase because trame's browser client lowercases
    the whole sessionURL the launcher hands it (``?sessionId=<id>`` included) before it connects; the front
    ends read the query's key in any case. Never starting with '-', as random_word.

    One draw below 36**32 written in base 36: every id as likely as with a draw per character, but a read or two
    of the system's randomness instead of 60 (a draw per character, some drawn again), a cost a burst noticed."""
    number = secrets.randbelow(ID_SPACE)
    digits = []
    for _ in range(32):
        number, digit = divmod(number, len(SESSION_ID_ALPHABET))
        digits.append(SESSION_ID_ALPHABET[digit])
    return "".join(digits)


new_secret = random_word


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def idle_warning(record: SessionRecord, seconds_left: int) -> Notice:
    """The server's word that nobody has used it for a while (pvhpc/node/input_idle.py), as the user's warning."""
    return Notice(record.id, "idle", f"Nobody has used this session for a while: it ends in {seconds_left} s "
                  "(its state is saved) unless you use it (rotate the view, change something)",
                  seconds_left=seconds_left, ends_at=utcnow() + timedelta(seconds=seconds_left))


def jobs_of(record: SessionRecord) -> list[str]:
    """Every job a session holds: its own, and a continued session's successor (queued) or predecessor (saving its
    state); cancelling the session cancels them all."""
    return [j for j in (record.job_id, record.successor_job_id, record.predecessor_job_id) if j]


class SessionService:
    def __init__(self, config: SiteConfig, store: Store, scheduler: Scheduler, bus: EventBus,
                 resolve: nodeaddresses.Resolver | None = None, saved_states: SavedStates | None = None,
                 modules: ModuleAvailability | None = None):
        """``resolve``: how node names become addresses on the side that dials them (default: here).
        ``saved_states``: lists a user's saved ParaView states and checks the one a request starts from before
        anything is recorded (None: a request that names one is refused).
        ``modules``: the environment modules known missing, whose sessions are refused before anything is
        recorded (None: none are looked for)."""
        self.config = config
        self.modules = modules
        self.saved_states = saved_states
        self.resolve = resolve or nodeaddresses.resolve_here
        self.store = store
        self.db = store.off_loop
        self.scheduler = scheduler
        self.bus = bus
        self._create_locks: dict[str, asyncio.Lock] = {}
        self._nodes: dict[str, set[str]] = {}   # node -> Slurm's names and addresses, refreshed on a new node
        self._nodes_read_at = -NODES_REREAD_S

    # -- the one way a state changes ----------------------------------------
    async def apply(self, session_id: str, change: Change | None,
                    known: SessionRecord | None = None) -> SessionRecord | None:
        """Apply ``change``. With ``known`` (the session as the caller read it and decided on): skip the write
        when it is no news, and drop the change when the session was written since (the decision is stale).

        The tracker passes what it read at the start of its cycle: most sessions do not move in a cycle, and
        a transaction per unmoved session held the event loop for seconds at 10,000 sessions.
        """
        if change is None or (known is not None and not change.is_news_for(known)):
            return None
        record = await self.db.change(session_id, change, known.updated_at if known is not None else None)
        if record is not None:
            log.info("session %s… %s: %s", session_id[:6], record.state, record.detail)
            self.bus.publish(record)
        return record

    async def end(self, record: SessionRecord, reason: EndReason, extra: str = "",
                  only_if_unchanged: bool = False) -> None:
        """End a session and make sure its job is gone. With ``only_if_unchanged``, ``record`` is what the
        decision was made on: if the session was written since (say, it reported ready), it is left alone,
        job and all."""
        ended = await self.apply(record.id, lifecycle.ended(reason, extra), known=record if only_if_unchanged else None)
        if only_if_unchanged and ended is None:
            return
        await self._cancel_job(record, ended or await self.db.get(record.id))

    async def _cancel_job(self, record: SessionRecord, ended: SessionRecord | None = None) -> None:
        """Cancel an ended session's job, if it has one, and a continued session's successor or predecessor; a
        scheduler away now is logged (the tracker sees the job). ``ended``: the row as the end was written: a
        successor submitted after the caller read ``record`` is in it, not in ``record``."""
        await self._cancel_ids(record.user, list(dict.fromkeys(
            jobs_of(record) + (jobs_of(ended) if ended is not None else []))))

    async def _cancel_ids(self, user: str, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                await self.scheduler.cancel(job_id, user)
            except SchedulerUnavailable as e:
                log.warning("could not cancel job %s of an ended session: %s", job_id, e)

    # -- reading -----------------------------------------------------------------
    async def get(self, session_id: str) -> SessionRecord | None:
        return await self.db.get(session_id)

    async def sessions_of(self, user: str | None, state: SessionState | None = None, live: bool = False,
                          limit: int | None = None) -> list[SessionRecord]:
        """``user``'s sessions (everyone's for None), newest first: in ``state``, or with ``live`` not ended."""
        return await self.db.sessions_of(user, state=state, live=live, limit=limit)

    async def history(self, session_id: str) -> list:
        """The session's states as it went through them (store.SessionEvent), oldest first."""
        return await self.db.events(session_id)

    async def count_live(self) -> int:
        return await self.db.count_live()

    # -- create ----------------------------------------------------------------
    def attachable(self, db, user: str, request_key: str) -> SessionRecord | None:
        """A live session of the same request that no launcher reply has handed out yet. (In the writer's
        transaction ``db``.)"""
        return self.store.not_handed_out(user, request_key, db=db)

    def check_limits(self, db, user: str, spec: SessionSpec) -> None:
        """Refuse a session over the user's limits. (In the writer's transaction ``db``, with the write it allows.)"""
        live = self.store.sessions_of(user, live=True, db=db)
        limits = self.config.limits
        if len(live) >= limits.sessions_per_user:
            raise OverLimit(f"you already have {len(live)} live sessions, the most this site allows "
                            f"(limits.sessions_per_user = {limits.sessions_per_user}); end one first")
        gpus = sum(s.gpus for s in live)
        if spec.gpus and gpus + spec.gpus > limits.gpus_per_user:
            raise OverLimit(f"{spec.gpus} more GPUs would make {gpus + spec.gpus}; this site allows "
                            f"{limits.gpus_per_user} per user at once", field="gpus")

    async def create(self, user: str, spec: SessionSpec, attach: bool = False,
                     continue_wanted: bool = False) -> SessionRecord:
        """Record the session, then submit its job. With ``attach``, a retried request joins its first session.
        ``continue_wanted``: it goes on in a successor job before its walltime (pvhpc/sessions/continuation.py;
        the caller has checked that the site allows it)."""
        if self.modules is not None:
            await self.modules.refuse_missing(spec)
        if spec.saved_state_file is not None:
            if self.saved_states is None:
                raise RequestError("this service cannot check saved states", field="saved_state")
            spec = await self.saved_states.checked(user, spec)
        key = spec.request_key(user)
        lock = self._create_locks.setdefault(key, asyncio.Lock())
        async with lock:
            report_token = secrets.token_urlsafe(32)
            record = SessionRecord(
                id=new_session_id(), user=user, application=spec.application, partition=spec.partition,
                gpus=spec.gpus, nodes=spec.nodes, ranks=spec.ranks, walltime_minutes=spec.walltime_minutes,
                account=spec.account, version=spec.version,
                data_file=spec.data_file, request_key=key, state=S.SUBMITTING.value,
                qos=spec.qos, data_root=spec.data_root, continue_wanted=continue_wanted,
                detail="submitting the job to Slurm", job_name=f"pvhpc-{secrets.token_hex(8)}",
                secret=new_secret(), report_token_hash=token_hash(report_token),
            )
            # Recorded before sbatch runs: a crash or a lost answer leaves a session to find the job by name.
            existing = await self.db.together(lambda db: self._record_new(db, record, spec, attach))
            if existing is not None:
                return existing
            self.bus.publish(record)
        if len(self._create_locks) > 10000:
            self._create_locks = {k: v for k, v in self._create_locks.items() if v.locked()}
        try:
            job = build_job(self.config, spec, user, record.id, record.job_name, record.secret, report_token)
        except TemplateError as e:
            await self.apply(record.id, lifecycle.ended(EndReason.SUBMIT_FAILED, str(e)))
            raise JobScriptFailed(f"the job script could not be made: {e}") from None
        except KeyError:
            # Jobs run as their users: a user the system does not know cannot have one.
            await self.apply(record.id, lifecycle.ended(EndReason.SUBMIT_FAILED, f"no account {user} on this host"))
            raise NotAllowed(f"user {user} has no account on this host; pvhpc cannot run jobs as them") from None
        return await self._submit(record, job)

    def _record_new(self, db, record: SessionRecord, spec: SessionSpec, attach: bool) -> SessionRecord | None:
        """In one transaction ``db`` of the writer thread's, so that nothing is written between the checks and the
        new row: the session to attach to, if ``attach`` finds one; else ``record`` is added, if the user's
        limits allow it."""
        if attach:
            existing = self.attachable(db, record.user, record.request_key)
            if existing is not None:
                db.expunge(existing)
                return existing
        self.check_limits(db, record.user, spec)
        self.store.add_in(db, record)
        return None

    async def _submit(self, record: SessionRecord, job) -> SessionRecord:
        try:
            job_id = await self.scheduler.submit(job)
        except SubmitRefused as e:
            await self.apply(record.id, lifecycle.ended(EndReason.SUBMIT_FAILED, str(e)))
            raise JobRefused(f"Slurm refused the job: {e}") from None
        except ControllerDown as e:
            # Nothing reached Slurm: say so now rather than look for a job that cannot exist.
            await self.apply(record.id, lifecycle.ended(EndReason.SUBMIT_FAILED, f"Slurm's controller is down: {e}"))
            raise SchedulerAway(f"Slurm's controller cannot be reached, nothing was queued; try again "
                                f"shortly: {e}") from None
        except SchedulerUnavailable as e:
            # The job may or may not be queued: ask by name before deciding.
            try:
                found = (await self.scheduler.find_by_name([record.job_name])).get(record.job_name)
            except SchedulerUnavailable:
                await self.apply(record.id, Change.to(S.SUBMITTING, f"Slurm did not answer ({e}); looking for the job"))
                return await self.db.get(record.id)
            if found is None:
                await self.apply(record.id, lifecycle.ended(EndReason.SUBMIT_FAILED, f"Slurm did not answer: {e}"))
                raise SchedulerAway(f"the scheduler did not answer, nothing was queued: {e}") from None
            job_id = found.job_id
        updated = await self.apply(record.id, Change.to(S.QUEUED, f"submitted as job {job_id}", job_id=job_id))
        if updated is None:
            current = await self.db.get(record.id)
            if current is not None and current.session_state is S.ENDED:
                # Cancelled (or reported) while sbatch was running: the job must not outlive it.
                await self.scheduler.cancel(job_id, record.user)
            elif current is not None and current.job_id is None:
                await self.db.change(record.id, Change.to(current.session_state, current.detail, job_id=job_id))
            return await self.db.get(record.id)
        return updated

    # -- handing out -------------------------------------------------------------
    async def hand_out(self, record: SessionRecord) -> None:
        """Mark a ready session as handed out by a launcher answer: a retried request no longer attaches to it."""
        await self.apply(record.id, Change.to(S.READY, record.detail, handed_out=True))

    # -- cancel ----------------------------------------------------------------
    async def cancel(self, record: SessionRecord) -> SessionRecord:
        if record.session_state is S.ENDED:
            return record
        cancelled = jobs_of(record)
        for job_id in cancelled:
            await self._cancel_for_user(job_id, record.user)
        await self.apply(record.id, lifecycle.ended(EndReason.CANCELLED))
        ended = await self.db.get(record.id)
        # A successor submitted after ``record`` was read is in the row only; once ended, none is submitted.
        if ended is not None:
            await self._cancel_ids(ended.user, [j for j in jobs_of(ended) if j not in cancelled])
        return ended

    async def _cancel_for_user(self, job_id: str, user: str) -> None:
        """Cancel ``job_id`` for a user who is waiting on the answer: once more after a pause if Slurm's client
        sent the kill and gave up waiting for the answer (NoAnswer). A busy controller times out a kill it may
        well have done (seen with 31 cancels at once on 2 cores); cancelling a cancelled job again is harmless
        (scancel exits 0 on 22.05 and 25.11). Anything else is not tried again: a controller that took no
        connection (Slurm's client has retried that already), a command that hung past pvhpc's own timeout.
        Only a scheduler still away is the user's to hear about: the session stays live, to be cancelled again."""
        for attempt in range(CANCEL_TRIES):
            try:
                await self.scheduler.cancel(job_id, user)
                return
            except SchedulerUnavailable as e:
                if attempt + 1 == CANCEL_TRIES or not isinstance(e, NoAnswer):
                    raise SchedulerAway(f"could not reach the scheduler to cancel job {job_id}: {e}") from None
                log.warning("cancelling job %s: the scheduler did not answer (%s); trying once more", job_id, e)
                await asyncio.sleep(CANCEL_RETRY_PAUSE_S)

    # -- the job's report --------------------------------------------------------
    async def reporting(self, session_id: str, token: str, live: bool = False) -> SessionRecord:
        """The session whose job holds ``token`` (its report token), read once from the store; with ``live``, one
        that has not ended (WrongState)."""
        record = await self.db.get(session_id)
        # Unknown session and wrong token get the same answer: no way to probe for ids.
        if record is None or not token or not hmac.compare_digest(token_hash(token), record.report_token_hash):
            raise NotAllowed("unknown session or wrong report token")
        if live and record.session_state is S.ENDED:
            raise WrongState("the session has ended")
        return record

    async def liveness(self, session_id: str, token: str) -> dict:
        """Whether the job's session is live, for the watchdog beside its server (pvhpc/node/watchdog.py), which
        stops the server when it is not. Nothing else of the session: the job's user can read the token. Every
        live session's job asks every runtime.watchdog_interval seconds, so this is one read of the session, no
        scheduler call (the web layer adds one read of its grants when sharing is on, for the share gate)."""
        record = await self.reporting(session_id, token)
        if record.session_state is S.ENDED:
            return {"live": False, "state": record.state, "end_reason": record.end_reason}
        return {"live": True, "state": record.state}

    async def report(self, session_id: str, token: str, report: reports.Report,
                     peer: str | None = None) -> SessionRecord:
        """Take the job's report (reports.parse read it). ``peer``: the address it came from (the request's),
        which a ready report's address is preferred to be among several its node has."""
        record = await self.reporting(session_id, token, live=True)
        job_id = report.job_id
        if job_id and record.job_id and job_id != record.job_id:
            raise NotAllowed(f"the report comes from job {job_id}, not this session's job")
        if isinstance(report, reports.Ready):
            if record.host is not None or record.port is not None:
                # One ready report per start (a requeued job's new start clears the route): a second one, a
                # replay with the job's token, must not re-route the session to another port on the node.
                raise WrongState(f"the session already reported ready on {record.node or record.host}; a "
                                 "session takes one ready report per start")
            # The front end will connect wherever this says: it must be the job's own node, or a forged
            # report could point the proxy at any host the login node reaches. What it dials is the address
            # checked, never a name this side may not resolve.
            address, job_nodes = await self._check_on_job_node(record, job_id or record.job_id, report.host, peer)
            fields = dict(ready_at=utcnow(), expected_start=None)
            if record.job_id is None and job_id:
                fields["job_id"] = job_id
            # The node as Slurm names it, for people to read: the one the job says, if it is one of the job's.
            node = report.node
            node = node if node in job_nodes else (job_nodes[0] if job_nodes else node)
            await self.apply(record.id, lifecycle.ready(address, report.port, node, **fields))
        elif isinstance(report, reports.Exited):
            # The job would end by itself right after saying so, but it is cancelled all the same (below).
            await self.apply(record.id, lifecycle.exited(report.code, report.cause))
            # Ended means no job left running: a report that the server stopped while the job goes on (a
            # replayed one, or a job script that hangs after its server) must not leave the job behind.
            await self._cancel_job(record)
        elif isinstance(report, reports.Failed):
            # After ready it is no longer the start that failed (a parallel session's rank that died).
            await self.end(record, EndReason.FAILED if record.ready_at else EndReason.START_FAILED, report.reason)
        elif isinstance(report, reports.IdleWarning):
            self.bus.notify(idle_warning(record, report.seconds_left))
        return await self.db.get(record.id)

    async def _read_nodes(self) -> None:
        self._nodes = await self.scheduler.node_addresses()
        self._nodes_read_at = time.monotonic()

    async def _check_on_job_node(self, record: SessionRecord, job_id: str | None, host: str,
                                 peer: str | None = None) -> tuple[str, list[str]]:
        """The address to dial for a ready report that says ``host``, checked against Slurm's view of the job's
        node(s) (nodeaddresses.py), and the job's nodes as Slurm names them; NotAllowed if it is not theirs."""
        if not job_id:
            raise WrongState("the report names no job and the session has none yet")
        try:
            job = (await self.scheduler.query([job_id])).get(job_id)
            if job is None or not job.is_running or (record.job_id is None and job.name != record.job_name):
                raise WrongState(f"job {job_id} is not this session's running job")
            job_nodes = self.scheduler.node_names(job.nodes)
            fresh = not set(job_nodes) <= self._nodes.keys()
            if fresh:
                await self._read_nodes()
        except SchedulerUnavailable as e:
            raise SchedulerAway(f"cannot check the report with the scheduler now: {e}") from None
        if host in {a for n in job_nodes for a in self._nodes.get(n, ()) if nodeaddresses.is_ipv4(a)}:
            # An address Slurm itself gives for the job's node (its NodeAddr) is the node's, as the look-ups below
            # would find too: nothing to resolve. A name of the node the login side does not resolve would
            # otherwise keep every session's start waiting for the site's DNS to give up on it.
            return host, job_nodes
        reported_gives = (await self.resolve([host]))[host]
        while True:
            # A job on several nodes (a parallel session) reports from any one of them: its first, in practice.
            names = set().union(*(self._nodes.get(n, {n}) for n in job_nodes))
            node_view = await self.resolve(names)
            address = nodeaddresses.checked_address(host, reported_gives, node_view, self._all_local, peer)
            if address is not None or fresh:
                break
            # Slurm's view may have changed since it was read (a node's NodeAddr): read it once more before refusing,
            # but not again within NODES_REREAD_S: a job's user can post forged reports with its token as fast as
            # they like, and each would cost a whole sinfo.
            fresh = True
            if time.monotonic() - self._nodes_read_at < NODES_REREAD_S:
                break
            try:
                await self._read_nodes()
            except SchedulerUnavailable as e:
                raise SchedulerAway(f"cannot check the report with the scheduler now: {e}") from None
        if address is None:
            said = host if reported_gives in (set(), {host}) else f"{host} ({', '.join(sorted(reported_gives))})"
            hint = ""
            if any(hostaddresses.is_loopback(a) for a in reported_gives):
                hint = ("; a loopback address is taken only from a node that is this very host: the node's server "
                        "must listen where this host reaches it (is service.callback_url reachable from the node?)")
            raise NotAllowed(f"the report says {said}, which is not node {job.nodes} where job {job_id} runs: "
                             f"Slurm names it {nodeaddresses.describe(node_view)}{hint}")
        return address, job_nodes

    @staticmethod
    def _all_local(addresses: set[str]) -> bool:
        return all(hostaddresses.is_local(a) for a in addresses)

    # -- waiting -----------------------------------------------------------------
    async def wait_for(self, session_id: str, states: Iterable[SessionState], timeout: float) -> SessionRecord:
        """Wait until the session is in one of ``states`` or has ended; return it as it is then."""
        wanted = {s.value for s in states} | {S.ENDED.value}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.bus.subscribe() as events:
            record = await self.db.get(session_id)
            while record is not None and record.state not in wanted:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    changed = await events.get(remaining)
                except asyncio.TimeoutError:
                    break
                if changed.id == session_id:
                    record = changed
        return record
