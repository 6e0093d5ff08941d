"""What the service measures, for Prometheus: every metric pvhpc exposes is declared here.

Metrics follow what happens rather than asking the database at each scrape:
session changes come from the event bus, poll cycles from the tracker, scheduler
calls through a wrapper around the scheduler, the built-in proxy's connections and
bytes from the proxy itself, HTTP requests from the access log hook
(pvhpc/web/prometheus.py, which also serves /metrics).

Each application has a registry of its own, never prometheus_client's global one,
so that several applications in one process (tests, a bench) do not collide.

Label values are only what the site configured or pvhpc defines (partitions,
states, end reasons, call names, route patterns): never a session id, a user or a
raw path, which would leak and grow without bound.

Several instances on one database: every instance shows every session in
``pvhpc_sessions`` (sum it with max by (state, partition)), while a counter or
histogram counts only the changes this instance made, so summing them over
instances counts each change once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pvhpc.db.store import SessionRecord
from pvhpc.scheduler import ChangeRefused, SubmitRefused
from pvhpc.jobs import reports
from pvhpc.jobs.states import SessionState

S = SessionState
# No *_created series: in Prometheus's text format they are one more stored series per counter and
# histogram, and nothing here reads them (a restart is seen as a counter reset). A process-wide switch.
prometheus_client.disable_created_metrics()
LIVE_STATES = tuple(s for s in SessionState if s.live)
# Seconds. A session is ready in tens of seconds on an idle cluster and waits hours on a full one.
WAIT_BUCKETS = (1, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CALL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# What the scheduler interface offers (pvhpc.scheduler.base.Scheduler): each call counted by this name.
SCHEDULER_CALLS = ("submit", "query", "find_by_name", "lookup_finished", "cancel", "partitions", "node_addresses",
                   "set_time_limit")
# How a request for more time ended (pvhpc/sessions/more_time.py): granted, refused by pvhpc's rules before Slurm
# was asked, refused by Slurm, or Slurm could not be asked.
EXTENSION_OUTCOMES = ("granted", "refused", "slurm_refused", "unavailable", "unrecorded")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Followed:
    """What the metrics remember of one live session between its changes."""

    state: SessionState
    partition: str
    waiting_since: datetime | None   # submitted or requeued, not started since: its queue wait is still running
    was_ready: bool                  # request-to-ready is measured once per session, at its first ready


class Metrics:
    def __init__(self, partitions: Iterable[str] = ()):
        self.registry = r = CollectorRegistry()
        self.sessions = Gauge("pvhpc_sessions", "Live sessions by state and partition (every instance's)",
                              ["state", "partition"], registry=r)
        self.created = Counter("pvhpc_sessions_created", "Sessions requested through this instance",
                               ["partition"], registry=r)
        self.ended = Counter("pvhpc_sessions_ended", "Sessions ended, by why (end_reason) and partition",
                             ["reason", "partition"], registry=r)
        self.request_to_ready = Histogram(
            "pvhpc_session_request_to_ready_seconds", "From a session's request to its server's ready report",
            ["partition"], buckets=WAIT_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "pvhpc_session_queue_wait_seconds", "From a session's submission (or requeue) to its job's start",
            ["partition"], buckets=WAIT_BUCKETS, registry=r)
        self.poll_cycle = Histogram("pvhpc_poll_cycle_seconds", "One poll cycle of the tracker, every live session",
                                    buckets=POLL_BUCKETS, registry=r)
        self.polled_sessions = Gauge("pvhpc_poll_sessions", "Live sessions the last poll cycle followed", registry=r)
        self.leading = Gauge("pvhpc_poller_leading", "1 on the instance that polls the scheduler, 0 on the others",
                             registry=r)
        self.scheduler_calls = Counter("pvhpc_scheduler_calls", "Calls to the scheduler, by call", ["call"],
                                       registry=r)
        self.scheduler_failures = Counter(
            "pvhpc_scheduler_call_failures", "Scheduler calls that got no answer (unreachable, timed out, broken)",
            ["call"], registry=r)
        self.scheduler_seconds = Histogram("pvhpc_scheduler_call_seconds", "How long a scheduler call took",
                                           ["call"], buckets=CALL_BUCKETS, registry=r)
        self.reports = Counter("pvhpc_reports", "Job reports received, by event and whether they were taken",
                               ["event", "outcome"], registry=r)
        self.proxy_open = Gauge("pvhpc_proxy_connections", "Client websockets the built-in front end holds open",
                                registry=r)
        self.proxy_opened = Counter("pvhpc_proxy_connections_opened", "Client websockets the built-in front end "
                                    "joined to a session's server", registry=r)
        self.proxy_bytes = Counter("pvhpc_proxy_bytes", "Bytes of websocket messages the built-in front end carried",
                                   ["direction"], registry=r)
        self.http_requests = Counter("pvhpc_http_requests", "HTTP requests answered, by route pattern and status",
                                     ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram("pvhpc_http_request_duration_seconds", "How long an answer took, by route",
                                      ["route"], registry=r)
        self.extensions = Counter("pvhpc_walltime_extensions", "Requests for more time for a running session, by "
                                  "partition and outcome", ["partition", "outcome"], registry=r)
        self.extended_minutes = Counter("pvhpc_walltime_extended_minutes", "Minutes of walltime granted to running "
                                        "sessions", ["partition"], registry=r)
        self._followed: dict[str, Followed] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._partitions = tuple(partitions)
        # Every series exists from the start: a dashboard shows 0, not "no data", for an idle partition.
        for partition in self._partitions:
            for state in LIVE_STATES:
                self.sessions.labels(state.value, partition).set(0)
            self.created.labels(partition)
        for direction in ("to_server", "to_client"):
            self.proxy_bytes.labels(direction)
        for call in SCHEDULER_CALLS:
            self.scheduler_calls.labels(call)
            self.scheduler_failures.labels(call)

    def extension(self, partition: str, outcome: str, minutes: int = 0) -> None:
        """A request for more time ended so (EXTENSION_OUTCOMES); ``minutes`` granted."""
        self.extensions.labels(partition, outcome).inc()
        if minutes:
            self.extended_minutes.labels(partition).inc(minutes)

    # -- wiring ------------------------------------------------------------------
    def watch(self, bus, tracker, frontend) -> None:
        """Follow the event bus, the tracker's cycles and the front end's connections (the built-in proxy's;
        Apache counts its own, and pvhpc's count stays 0)."""
        bus.on_news(self.session_changed)
        tracker.cycle_observers.append(self.poll_cycle_done)
        self.leading.set_function(lambda: 1 if tracker.leading else 0)
        self.proxy_open.set_function(frontend.open_connections)

    def proxy_traffic(self) -> "ProxyTraffic":
        """What a proxying front end tells what it carries (given to it when it is built)."""
        return ProxyTraffic(self)

    def metered(self, scheduler) -> "MeteredScheduler":
        return MeteredScheduler(scheduler, self)

    # -- sessions ----------------------------------------------------------------
    def load(self, live: Iterable[SessionRecord]) -> None:
        """Start from the store's live sessions, so the counts by state are right after a restart."""
        for record in live:
            self._count(record.state, record.partition, +1)
            waiting = record.session_state in (S.SUBMITTING, S.QUEUED) or (
                record.session_state is S.UNKNOWN and record.running_since is None and record.ready_at is None)
            self._followed[record.id] = Followed(record.session_state, record.partition,
                                                 record.created_at if waiting else None, record.ready_at is not None)

    def session_changed(self, record: SessionRecord, from_peer: bool) -> None:
        state = record.session_state
        before = self._followed.get(record.id)
        if before is None:
            if state is S.ENDED:
                return   # a peer's session this instance never saw live: nothing to take away
            before = Followed(state, record.partition, record.created_at, False)
            self._followed[record.id] = before
            self._count(state.value, record.partition, +1)
            if not from_peer:
                self.created.labels(record.partition).inc()
        elif before.state is not state:
            self._count(before.state.value, before.partition, -1)
            if state is not S.ENDED:
                self._count(state.value, record.partition, +1)
        own = not from_peer
        if state in (S.STARTING, S.READY) and before.waiting_since is not None:
            started = record.running_since or record.ready_at or record.updated_at
            if own:
                self.queue_wait.labels(record.partition).observe(_seconds(started, before.waiting_since))
            before.waiting_since = None
        if state is S.READY and not before.was_ready:
            if own:
                ready = record.ready_at or record.updated_at
                self.request_to_ready.labels(record.partition).observe(_seconds(ready, record.created_at))
            before.was_ready = True
        if state is S.QUEUED and before.state in (S.STARTING, S.READY):
            before.waiting_since = record.updated_at   # requeued: a new wait begins
        before.state = state
        if state is S.ENDED:
            del self._followed[record.id]
            if own:
                self.ended.labels(record.end_reason or "unknown", record.partition).inc()

    def _count(self, state: str, partition: str, delta: int) -> None:
        key = (state, partition)
        self._counts[key] = self._counts.get(key, 0) + delta
        self.sessions.labels(state, partition).set(self._counts[key])

    # -- the rest ----------------------------------------------------------------
    def poll_cycle_done(self, stats) -> None:
        self.poll_cycle.observe(stats.seconds)
        self.polled_sessions.set(stats.sessions)

    def report(self, event: object, taken: bool) -> None:
        """A job's report came in (``event`` as the job sent it: anything)."""
        shown = event if event in reports.EVENTS else "other"
        self.reports.labels(shown, "taken" if taken else "refused").inc()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        # A client may send any word as its method: only the ones HTTP defines become label values.
        shown = method if method in HTTP_METHODS else "other"
        self.http_requests.labels(shown, route, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)


def _seconds(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())


class ProxyTraffic:
    """The built-in front end's hook (pvhpc.frontends.builtin.ProxyTraffic), counted."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        # Told of every write the proxy makes (two per image): the two labelled counters are looked up once,
        # not per write (labels() takes a lock and a dict lookup each time: 0.9 against 0.3 µs).
        self._bytes = {direction: metrics.proxy_bytes.labels(direction) for direction in ("to_server", "to_client")}

    def opened(self) -> None:
        self.metrics.proxy_opened.inc()

    def carried(self, direction: str, nbytes: int) -> None:
        self._bytes[direction].inc(nbytes)


class MeteredScheduler:
    """The site's scheduler, each call counted and timed; everything else passes through unchanged.

    A refusal (SubmitRefused) is an answer, not a failure; no answer at all (SchedulerUnavailable) or
    anything unexpected is.
    """

    def __init__(self, inner, metrics: Metrics):
        self.inner = inner
        self.metrics = metrics

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def _call(self, name: str, *args, **kwargs):
        started = time.monotonic()
        try:
            return await getattr(self.inner, name)(*args, **kwargs)
        except (SubmitRefused, ChangeRefused):
            raise
        except Exception:   # SchedulerUnavailable, or a backend's bug: no answer either way
            self.metrics.scheduler_failures.labels(name).inc()
            raise
        finally:
            self.metrics.scheduler_calls.labels(name).inc()
            self.metrics.scheduler_seconds.labels(name).observe(time.monotonic() - started)

    async def submit(self, *args, **kwargs):
        return await self._call("submit", *args, **kwargs)

    async def query(self, *args, **kwargs):
        return await self._call("query", *args, **kwargs)

    async def find_by_name(self, *args, **kwargs):
        return await self._call("find_by_name", *args, **kwargs)

    async def lookup_finished(self, *args, **kwargs):
        return await self._call("lookup_finished", *args, **kwargs)

    async def cancel(self, *args, **kwargs):
        return await self._call("cancel", *args, **kwargs)

    async def partitions(self, *args, **kwargs):
        return await self._call("partitions", *args, **kwargs)

    async def node_addresses(self, *args, **kwargs):
        return await self._call("node_addresses", *args, **kwargs)

    async def set_time_limit(self, *args, **kwargs):
        return await self._call("set_time_limit", *args, **kwargs)
