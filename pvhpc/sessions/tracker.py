"""Follow every live session's job with one batched scheduler query per poll cycle.

Never one query per session: the cost to slurmctld must not grow with the
number of sessions (jupyterhub#4646, batchspawner#292). The same cycle, run
once at start-up, reconciles the store with the scheduler after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from pvhpc.sessions import lifecycle
from pvhpc.sessions.background import BackgroundLoop
from pvhpc.config import SiteConfig
from pvhpc.db.leadership import Leadership
from pvhpc.scheduler import Scheduler, SchedulerUnavailable
from pvhpc.sessions.joblogs import JobLogs
from pvhpc.sessions.service import SessionService
from pvhpc.jobs.states import EndReason, SessionState
from pvhpc.db.store import Change, Store, utcnow

log = logging.getLogger("pvhpc.sessions.tracker")
S = SessionState


@dataclass
class PollStats:
    sessions: int = 0
    scheduler_calls: int = 0
    reachable: bool = True
    seconds: float = 0.0          # how long the cycle took


class Tracker(BackgroundLoop):
    def __init__(self, config: SiteConfig, store: Store, scheduler: Scheduler, service: SessionService,
                 leadership: Leadership | None = None, logs: JobLogs | None = None):
        """``logs``: the jobs' logs, whose last words a start timeout's reason carries (None: without them)."""
        self.config = config
        self.logs = logs
        self.store = store
        self.scheduler = scheduler
        self.service = service
        self.leadership = leadership or Leadership()
        self.leading = False
        self.poll_cycles = 0          # for /api/v1/health: shows which instance polls
        self.scheduler_calls = 0
        self.cycle_observers: list = []   # called with each cycle's PollStats (pvhpc.metrics)
        # Successor jobs (pvhpc/sessions/continuation.py), asked about in the same one query; None: none.
        self.continuation = None

    def start_timeout(self, application: str) -> float:
        app = self.config.applications.get(application)
        return app.start_timeout if app else 300

    async def poll_once(self) -> PollStats:
        live = await self.store.off_loop.live()
        stats = PollStats(sessions=len(live))
        with_job = [s for s in live if s.job_id]
        extra = self.continuation.extra_job_ids(live) if self.continuation else []
        if with_job:
            stats.scheduler_calls += 1
            try:
                jobs = await self.scheduler.query([s.job_id for s in with_job] + extra)
            except SchedulerUnavailable as e:
                stats.reachable = False
                log.warning("scheduler unreachable; %d sessions kept as unknown: %s", len(with_job), e)
                for s in with_job:
                    await self.service.apply(s.id, lifecycle.unreachable(s, str(e)), known=s)
                return stats
            now = utcnow()
            gone = []
            if self.continuation is not None:
                # Continued sessions' steps first: an old job gone at its walltime with a successor queued is no end.
                decided = await self.continuation.cycle(with_job, jobs, now)
                with_job = [s for s in with_job if s.id not in decided]
            for s in with_job:
                job = jobs.get(s.job_id)
                timeout = self.start_timeout(s.application)
                if job is None:
                    gone.append(s)
                elif job.is_running and lifecycle.start_timed_out(s, now, timeout):
                    await self.service.end(s, EndReason.START_TIMEOUT, await self._no_report(s, timeout),
                                           only_if_unchanged=True)
                else:
                    await self.service.apply(s.id, lifecycle.from_job(s, job, now, timeout), known=s)
            for s in gone:
                # Gone from the queue: one more look (accounting) before calling it ended.
                stats.scheduler_calls += 1
                try:
                    record = await self.scheduler.lookup_finished(s.job_id)
                except SchedulerUnavailable:
                    continue
                change = lifecycle.from_job(s, record, now, 0) if record else lifecycle.ended(EndReason.LOST)
                await self.service.apply(s.id, change, known=s)
        await self._find_unanswered_submissions([s for s in live if not s.job_id], stats)
        return stats

    async def _no_report(self, session, timeout: float) -> str:
        """A start timeout's reason, with the job log's last words: the job may say why nothing came (it could
        not reach pvhpc, pvhpc refused its report), which pvhpc, having heard nothing, cannot."""
        said = f"no report within {timeout:.0f} s"
        last = await self.logs.last_words(session.user, session.job_name) if self.logs is not None else ""
        return f"{said}; the job's log ends: {last}" if last else said

    async def _find_unanswered_submissions(self, sessions, stats: PollStats) -> None:
        """Sessions whose sbatch answer was lost: attach the job by its name, or give up after the grace time."""
        now = utcnow()
        grace = timedelta(seconds=self.config.service.submit_grace)
        settle = timedelta(seconds=self.config.scheduler.command_timeout)
        # Young ones may still have sbatch running in this process.
        waiting = [s for s in sessions if s.session_state is S.SUBMITTING and now - s.created_at > settle]
        if not waiting:
            return
        stats.scheduler_calls += 1
        try:
            found = await self.scheduler.find_by_name([s.job_name for s in waiting])
        except SchedulerUnavailable:
            return
        for s in waiting:
            job = found.get(s.job_name)
            if job is not None:
                found_job = Change.to(S.QUEUED, f"found job {job.job_id} by name", job_id=job.job_id)
                await self.service.apply(s.id, found_job, known=s)
            elif now - s.created_at > grace:
                await self.service.apply(s.id, lifecycle.ended(EndReason.SUBMIT_FAILED, "no job was queued"), known=s)

    async def poll_if_leading(self) -> PollStats | None:
        """One cycle if this instance is the poller; a follower only asks for the lead."""
        leading = await self.leadership.hold()
        if leading != self.leading:
            # Only a change of hands between instances is news worth a warning.
            log.log(logging.WARNING if self.leadership.shared else logging.INFO, "%s the scheduler poller (%s)",
                    "now" if leading else "no longer", self.leadership.kind)
            self.leading = leading
        if not leading:
            return None
        started = time.monotonic()
        stats = await self.poll_once()
        stats.seconds = time.monotonic() - started
        self.poll_cycles += 1
        self.scheduler_calls += stats.scheduler_calls
        for observe in self.cycle_observers:
            observe(stats)
        return stats

    async def run(self) -> None:
        interval = self.config.service.poll_interval
        # A follower asks for the lead at least every 2 s, so a dead leader is replaced within seconds.
        follower_interval = min(interval, 2.0)
        while True:
            try:
                await self.poll_if_leading()
            except Exception:  # a bug in one cycle must not stop tracking for good
                log.exception("poll cycle failed")
            await asyncio.sleep(interval if self.leading else follower_interval)

    async def stop(self) -> None:
        await super().stop()
        self.leadership.release()
