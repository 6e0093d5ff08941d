"""Fault drills on the real cluster, each recorded as a row of the drill table (tests/drill_report.py).

A session whose job ends (node down, walltime, scancel by staff, server crash) ends with the right reason within
two poll cycles of Slurm knowing, and leaves the front end's map; a drained node keeps its session and takes no
new one; the service SIGKILLed under load and restarted, and slurmctld down for a minute under load, lose no
session and leave no job lost, doubled or orphaned; the database locked (SQLite) or down (PostgreSQL) fails
requests cleanly and they succeed when retried.

Every service here but one uses the Apache front end: its RewriteMap file is the map, read straight from disk (no
Apache needs to run to check what it would route); the drill that streams a view uses the built-in proxy. "Orphaned" compares Slurm's queue with the store itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from pvhpc.client.api import ClientError
from pvhpc.db.store import Store
from pvhpc.scheduler import EndCause, JobState

from tests import backends
from tests.harness.cluster import (back_in_service, block_gpu_partition, cancel, every_job, job, known_job_ids,
                                   in_service, live, node_state, set_node_state)
from tests.harness.drills import DRILL_LIMITS, audit_jobs, drill_service, stored_sessions
from tests.harness.postgres import PostgresServer
from tests.helpers import RequestLoad, foreground_fraction, processes_of_job, render, wait_until

pytestmark = pytest.mark.cluster
POLL = 1   # the test services poll every second
# "Within two poll cycles" is checked as 2 * POLL + SLACK: the slack covers one squeue (a few tens of ms idle,
# more under load), the test's own 0.1 s polling and a 2-core machine shared with other tests.
SLACK = 1.0
TWO_POLLS = 2 * POLL + SLACK


# -- Slurm's side ------------------------------------------------------------------------------------

def ended_after_slurm_knew(client, cluster, routes, session, cause: EndCause, timeout=120):
    """Wait for Slurm to report the job ended by ``cause``, then for the session to end and leave the map.

    Returns the ended session and the lag from the moment Slurm showed the state.
    """
    wait_until(lambda: (lambda j: j is not None and j.end is cause)(job(cluster, session["job_id"])), timeout,
               message=f"job {session['job_id']} ended by {cause}")
    known = time.monotonic()
    ended = wait_until(lambda: (lambda s: s if s["state"] == "ended" else None)(client.get(session["id"])), 10,
                       interval=0.1, message="session ended")
    wait_until(lambda: session["id"] not in routes.read(), 10, interval=0.1, message="session left the map")
    return ended, time.monotonic() - known


# -- pvhpc's side ------------------------------------------------------------------------------------

def settled(problems, timeout: float, what: str) -> None:
    """Wait until ``problems()`` finds none; if it still does at the timeout, fail naming them."""
    try:
        wait_until(lambda: not problems(), timeout, interval=0.2, message=what)
    except AssertionError:
        raise AssertionError(f"{what}: not within {timeout} s: {problems()}") from None


def on_backend(drill: str, backend: str) -> str:
    """A drill's name in the table: the command-line backend's as it always was, pyslurm's marked."""
    return drill if backend == "slurm" else f"{drill} (pyslurm)"


def one_ready_session(service_factory, cluster, tmp_path, backend: str = "slurm", **launch):
    """A drill's usual start: the jobs already in Slurm (to leave out of its audit), a service on ``backend``,
    and one ready session on the cpu partition, checked to be in the map."""
    ignore = known_job_ids(cluster)
    svc, routes = drill_service(service_factory, tmp_path, scheduler=backends.scheduler_section(cluster, backend))
    svc.start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu", **launch)
    assert routes.read() == {session["id"]: target(session)}
    return ignore, svc, routes, client, session


def target(session: dict) -> str:
    """Its line in Apache's map: where its server listens, and whose it is."""
    return f"{session['host']}:{session['port']}|{session['user']}"


def ready_targets(sessions) -> dict[str, str]:
    """What the map must hold: exactly the ready sessions, each at its server's host:port, with its owner."""
    return {s["id"]: target(s) for s in sessions if s["state"] == "ready"}


def listening(line: str) -> bool:
    """Whether the server a map line ("host:port|owner") names takes connections."""
    host, port = line.partition("|")[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def refused_reports(svc) -> int:
    """Job reports the service answered 503 (its access log names them without the session id)."""
    return sum(1 for line in svc.log.read_text(errors="replace").splitlines()
               if " 503 POST /api/v1/sessions/" in line and "/report " in line)


def outcomes(records) -> str:
    """' (2 queued, 1 ended submit_failed)': how sessions came out, for a note."""
    counts = Counter(r.state if r.state != "ended" else f"ended {r.end_reason}" for r in records)
    return f" ({', '.join(f'{n} {what}' for what, n in sorted(counts.items()))})" if counts else ""


# -- a session's job ends --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_node_downed_under_a_session(backend, service_factory, cluster, tmp_path, drill_record):
    """Staff set the node of a ready session DOWN (scontrol update State=DOWN). Slurm fails its job (NODE_FAIL; jobs
    are submitted with --no-requeue), and the session ends as node_failure and leaves the map."""
    drill_record(drill=on_backend("node downed under a session", backend), sessions=1,
                 recovery="from Slurm showing NODE_FAIL to the session ended (node_failure) and out of the map",
                 bound_s=TWO_POLLS)
    ignore, svc, routes, client, session = one_ready_session(service_factory, cluster, tmp_path, backend)
    node = session["node"]
    try:
        set_node_state(cluster, node, "DOWN", reason="pvhpc-drill")
        ended, lag = ended_after_slurm_knew(client, cluster, routes, session, EndCause.NODE_FAIL)
        audit = audit_jobs(cluster, svc, ignore)
        drill_record(lost=int(ended["end_reason"] != "node_failure"), orphaned=len(audit.orphaned),
                     recover_s=round(lag, 2))
        assert ended["end_reason"] == "node_failure" and lag <= TWO_POLLS, (ended, lag)
        assert not client.list(state="live") and audit.ok, str(audit)
    finally:
        back_in_service(cluster, node)


# On the command-line backend only: a walltime is Slurm's TIMEOUT, which either backend reads into the same end
# (pvhpc/scheduler/slurm_states.py) as it reads the NODE_FAIL and CANCELLED drilled on both below; and waiting for
# Slurm's time limit costs CI a minute and a half per run.
@pytest.mark.parametrize("backend", ["slurm"])
def test_job_reaches_its_walltime(backend, service_factory, cluster, tmp_path, drill_record):
    """A session asks for one minute of walltime and keeps its server busy past it. Slurm ends the job at its
    limit (TIMEOUT), and the session ends as walltime and leaves the map."""
    drill_record(drill=on_backend("job reaches its walltime", backend), sessions=1,
                 recovery="from Slurm showing TIMEOUT to the session ended (walltime) and out of the map",
                 bound_s=TWO_POLLS)
    ignore, svc, routes, client, session = one_ready_session(service_factory, cluster, tmp_path, backend, walltime=1)
    ended, lag = ended_after_slurm_knew(client, cluster, routes, session, EndCause.TIMEOUT, timeout=180)
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=int(ended["end_reason"] != "walltime"), orphaned=len(audit.orphaned), recover_s=round(lag, 2))
    assert ended["end_reason"] == "walltime" and lag <= TWO_POLLS, (ended, lag)
    assert audit.ok, str(audit)


@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_job_cancelled_outside_pvhpc(backend, service_factory, cluster, tmp_path, drill_record):
    """Staff cancel a ready session's job with a plain scancel, not through pvhpc. The session ends as
    cancelled_outside (not as cancelled by its user) and leaves the map."""
    drill_record(drill=on_backend("job cancelled outside pvhpc (scancel)", backend), sessions=1,
                 recovery="from Slurm showing CANCELLED to the session ended (cancelled_outside) and out of the map",
                 bound_s=TWO_POLLS)
    ignore, svc, routes, client, session = one_ready_session(service_factory, cluster, tmp_path, backend)
    cancel(cluster, [session["job_id"]])
    ended, lag = ended_after_slurm_knew(client, cluster, routes, session, EndCause.CANCELLED, timeout=30)
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=int(ended["end_reason"] != "cancelled_outside"), orphaned=len(audit.orphaned),
                 recover_s=round(lag, 2))
    assert ended["end_reason"] == "cancelled_outside" and lag <= TWO_POLLS, (ended, lag)
    assert "cancelled outside pvhpc" in ended["detail"]
    assert audit.ok, str(audit)
    wait_until(lambda: not processes_of_job(session["job_id"]), 30, message="the job's processes are gone")


def test_server_crash_ends_the_session(service_factory, cluster, tmp_path, drill_record):
    """The ParaViewWeb server of a ready session is killed (SIGKILL) on its node. The job reports the exit at once,
    so the session ends as failed, with the signal, and leaves the map without waiting for a poll; and the job
    ends with it (its script exits after the report, and pvhpc cancels what would be left)."""
    drill_record(drill="session's server crashes", sessions=1,
                 recovery="from the kill to the session ended (failed) and out of the map", bound_s=TWO_POLLS)
    ignore, svc, routes, client, session = one_ready_session(service_factory, cluster, tmp_path)
    servers = [p for p in processes_of_job(session["job_id"]) if "pvweb_server.py" in p]
    assert len(servers) == 1, servers
    os.kill(int(servers[0].split(":")[0]), signal.SIGKILL)
    killed = time.monotonic()
    # The job says so at once: no waiting for Slurm or for a poll.
    ended = wait_until(lambda: (lambda s: s if s["state"] == "ended" else None)(client.get(session["id"])), TWO_POLLS,
                       interval=0.1, message="session ended within two poll cycles of the crash")
    gone = session["id"] not in routes.read()
    lag = time.monotonic() - killed
    wait_until(lambda: not live(job(cluster, session["job_id"])), 30, message="the job ends with its server")
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=int(ended["end_reason"] != "failed"), orphaned=len(audit.orphaned), recover_s=round(lag, 2))
    assert (ended["end_reason"], ended["detail"]) == (
        "failed", "the job failed: the ParaView server stopped: killed by signal 9"), (ended, lag)
    assert gone, "the ended session is still in the map"
    assert audit.ok, str(audit)


def test_node_drained_under_a_session_keeps_it_and_places_nothing_new_there(service_factory, cluster, tmp_path,
                                                                            drill_record):
    """Staff drain the node of a ready session (scontrol update State=DRAIN). A drain lets running jobs finish, so
    the session stays ready, in the map and rendering, over several poll cycles; new sessions go to the other node,
    and once that is full they wait in the queue rather than take the drained node's free CPU. When the session's
    job ends (its user ends it) the session leaves the map, and the drained node stays empty."""
    drill_record(drill="node drained under a session: kept until its job ends, nothing new placed there", sessions=4,
                 recovery="nothing to recover: the session is kept, and no new session lands on the node")
    ignore, svc, routes, client, session = one_ready_session(service_factory, cluster, tmp_path)
    node = session["node"]
    other = {"cpu01": "cpu02", "cpu02": "cpu01"}[node]
    set_node_state(cluster, node, "DRAIN", reason="pvhpc-drill")
    try:
        wait_until(lambda: node_state(cluster, node) == "drng", 10, message=f"{node} draining")
        drained = time.monotonic()
        # Two CPUs on the other node; the drained one has a CPU free, which the third must not get.
        newcomers = [client.create("slow", partition="cpu") for _ in range(3)]
        wait_until(lambda: Counter(client.get(s["id"])["state"] for s in newcomers) == {"starting": 2, "queued": 1},
                   30, message="two new sessions starting, one queued")
        newcomers = [client.get(s["id"]) for s in newcomers]
        placed = sorted(s["node"] or "-" for s in newcomers)
        # The session on the drained node, several poll cycles after the drain: untouched.
        time.sleep(max(0.0, drained + 3 * POLL + SLACK - time.monotonic()))
        kept = client.get(session["id"])
        history = [h["state"] for h in kept["history"]]
        image = render(f"ws://{kept['host']}:{kept['port']}/ws", kept["secret"])
        drill_record(lost=int(kept["state"] != "ready"))
        assert placed == ["-", other, other], f"new sessions went to {placed}; {node} is drained"
        assert (kept["state"], target(kept), history[-1]) == ("ready", target(session), "ready"), kept
        assert history.count("ready") == 1, f"the session moved while its node drained: {history}"
        assert routes.read() == {session["id"]: target(session)}
        assert foreground_fraction(image) > 0.01

        # Its job ends: the session leaves the map; the node, now drained, still takes nothing.
        assert client.cancel(session["id"])["end_reason"] == "cancelled"
        assert session["id"] not in routes.read()
        wait_until(lambda: node_state(cluster, node) == "drain", 30, message=f"{node} drained (empty)")
        time.sleep(TWO_POLLS)
        waiting = client.get(next(s["id"] for s in newcomers if s["state"] == "queued"))
        audit = audit_jobs(cluster, svc, ignore)
        drill_record(orphaned=len(audit.orphaned))
        assert waiting["state"] == "queued" and not waiting["node"], waiting
        assert audit.ok, str(audit)
    finally:
        set_node_state(cluster, node, "RESUME")
        wait_until(lambda: in_service(cluster, node), 60, interval=1,
                   message=f"{node} back in service")


# -- the service itself dies ---------------------------------------------------------------------------

def test_service_sigkilled_under_load_reattaches_every_session_and_rebuilds_the_map(service_factory, cluster,
                                                                                     tmp_path, drill_record):
    """Fourteen sessions (2 ready, 2 starting, 10 queued) while clients keep creating sessions and reading the API;
    the service is killed with SIGKILL mid-request, its map file is spoilt while it is down, and it is started
    again. Every session comes back attached to its own job, the sessions whose creation was cut off find their
    job by name or end as submit_failed, no job is lost, doubled or orphaned, the map is rebuilt to exactly the
    ready sessions, and the starting ones become ready afterwards."""
    drill_record(drill="service SIGKILLed under load, restarted",
                 recovery="from the restart to every session reattached in its state and the map rebuilt")
    ignore = known_job_ids(cluster)
    blockers = block_gpu_partition(cluster)
    # Unanswered submissions are looked up by name after command_timeout and given up after submit_grace.
    svc, routes = drill_service(service_factory, tmp_path, "sigkill", submit_grace=10,
                                scheduler={**cluster.scheduler_config(), "command_timeout": 10})
    svc.start()
    client = svc.client()
    load = None
    try:
        ready = [client.create("paraview", partition="cpu") for _ in range(2)]
        queued = [client.create("paraview", partition="gpu") for _ in range(10)]
        for s in ready:
            assert client.wait(s["id"], timeout=120)["state"] == "ready"
        starting = [client.create("slow", partition="cpu") for _ in range(2)]   # the last two CPUs
        mine = ready + queued + starting
        wait_until(lambda: Counter(s["state"] for s in client.list(state="live")) ==
                   {"ready": 2, "starting": 2, "queued": 10}, 30, message="2 ready, 2 starting, 10 queued")
        before = {s["id"]: s for s in client.list(state="live")}
        assert set(before) == {s["id"] for s in mine}
        assert routes.read() == ready_targets(before.values())

        create = {"application": "paraview", "partition": "cpu"}   # the CPUs are taken: these queue
        load = RequestLoad(svc.url, timeout=10)
        for _ in range(2):
            load.add("create", "POST", "/api/v1/sessions", create, every=0.2)
        load.add("list", "GET", "/api/v1/sessions", every=0.1)
        load.add("get", "GET", f"/api/v1/sessions/{ready[0]['id']}", every=0.1)
        load.add("health", "GET", "/api/v1/health", every=0.1)
        wait_until(lambda: load.count("create", 201) >= 4, 30, message="the clients' first sessions made")
        # Mid-request: a create that has been in the service for a few milliseconds (recorded, sbatch running).
        wait_until(lambda: load.in_flight("create", since=0.01), 10, interval=0.001, message="a create in flight")
        svc.kill()
        killed = time.monotonic()
        # What an Apache would read stays; spoil it, to see it rebuilt rather than merely left in place.
        routes.path.write_text("stale-session-id 10.255.255.1:1\n")
        time.sleep(1)
        restarted = time.monotonic()
        svc.start()
        back = time.monotonic()

        def problems() -> list[str]:
            now = {s["id"]: s for s in client.list()}
            found = []
            for sid, old in before.items():
                new = now.get(sid)
                allowed = {"ready": ("ready",), "starting": ("starting", "ready"), "queued": ("queued",)}[old["state"]]
                if new is None or new["job_id"] != old["job_id"] or new["state"] not in allowed:
                    found.append(f"{sid[:6]}… was {old['state']} job {old['job_id']}, now {new and new['state']} "
                                 f"job {new and new['job_id']}")
            if routes.read() != ready_targets(now.values()):
                found.append(f"map {routes.read()} is not the ready sessions {ready_targets(now.values())}")
            return found

        settled(problems, 30, "every session reattached in its state, the map rebuilt")
        recover = time.monotonic() - restarted
        answers = load.stop()
        drill_record(recover_s=round(recover, 2))

        created = {a.json["id"] for a in answers if a.name == "create" and a.status == 201}
        cut_off = [a for a in answers if a.status == 0]
        # Sessions whose creation the kill cut off: found by job name after command_timeout, or submit_failed.
        wait_until(lambda: not [s for s in stored_sessions(svc) if s.state == "submitting"], 10 + 10 + TWO_POLLS + 5,
                   message="every cut-off submission settled")
        sessions = {s.id: s for s in stored_sessions(svc)}
        unanswered = set(sessions) - set(before) - created
        wrongly_ended = [sid for sid in set(before) | created if sid not in sessions or sessions[sid].state == "ended"]
        audit = audit_jobs(cluster, svc, ignore)
        drill_record(sessions=len(sessions), lost=len(wrongly_ended) + len(audit.missing),
                     orphaned=len(audit.orphaned),
                     note=f"{len(created)} sessions made by the clients, {len(unanswered)} cut off by the kill"
                          f"{outcomes(sessions[s] for s in unanswered)}; {len(cut_off)} requests got no answer "
                          f"during {back - killed:.1f} s down")

        assert not wrongly_ended, wrongly_ended
        assert audit.ok, str(audit)
        for sid in unanswered:
            s = sessions[sid]
            assert s.state == "queued" or s.end_reason == "submit_failed", (sid, s.state, s.end_reason, s.detail)
        # The clients: every answer clean JSON; no answer only for requests in flight at the kill or sent while down.
        assert not [a for a in answers if a.status and not a.clean], [a for a in answers if a.status and not a.clean]
        assert not [a for a in cut_off if a.started >= back], [a for a in cut_off if a.started >= back]

        # The starting ones report after the restart (their jobs retry) and join the map.
        for s in starting:
            assert client.wait(s["id"], timeout=90)["state"] == "ready"
        live = client.list(state="live")
        assert len(ready_targets(live)) == 4 and routes.read() == ready_targets(live)
        assert all(listening(t) for t in routes.read().values()), routes.read()
        audit = audit_jobs(cluster, svc, ignore)
        assert audit.ok, str(audit)
    finally:
        if load:
            load.stop()
        cancel(cluster, blockers)


# -- Slurm's controller away ---------------------------------------------------------------------------

CTLD_OUTAGE = 60   # seconds


def test_slurmctld_down_for_a_minute_under_load(service_factory, cluster, tmp_path, drill_record):
    """slurmctld is stopped for 60 s with nine sessions (3 ready, 1 starting, 5 queued) while a client polls the
    session list and the health check every 0.5 s and another creates a session. No session ends: they show as
    unknown, the ready ones stay in the map and their servers keep listening, and the API answers every poll
    quickly. When slurmctld is back every session returns to its real state with its own job, the starting one's
    report (refused while Slurm could not confirm it) gets through, and nothing is submitted again."""
    drill_record(drill=f"slurmctld down for {CTLD_OUTAGE} s under load",
                 recovery="from slurmctld's restart to every session back in its real state (none unknown)")
    ignore = known_job_ids(cluster)
    blockers = block_gpu_partition(cluster)
    svc, routes = drill_service(service_factory, tmp_path, "outage")
    svc.start()
    client = svc.client()
    load = None
    restarted = None
    try:
        ready = [client.create("paraview", partition="cpu") for _ in range(3)]
        for _ in range(5):
            client.create("paraview", partition="gpu")   # queued: the blockers hold every GPU
        for s in ready:
            assert client.wait(s["id"], timeout=120)["state"] == "ready"
        starting = client.create("slow", partition="cpu")
        wait_until(lambda: Counter(s["state"] for s in client.list(state="live")) ==
                   {"ready": 3, "starting": 1, "queued": 5}, 30, message="3 ready, 1 starting, 5 queued")
        before = {s["id"]: s for s in client.list(state="live")}
        targets = ready_targets(before.values())
        assert routes.read() == targets

        load = RequestLoad(svc.url, timeout=30)
        load.add("sessions", "GET", "/api/v1/sessions", every=0.5)
        load.add("health", "GET", "/api/v1/health", every=0.5)
        load.add("partitions", "GET", "/api/v1/partitions", every=2)   # asks Slurm: only noted, not judged
        time.sleep(1)
        ctld = next(d for d in cluster.status() if d.name == "slurmctld")
        os.kill(ctld.pid, signal.SIGTERM)
        down = time.monotonic()
        try:
            outcome: dict = {}

            def create_while_away():
                started = time.monotonic()
                try:
                    outcome["session"] = client.create("paraview", partition="cpu")
                except ClientError as e:
                    outcome["error"] = e
                outcome["seconds"] = time.monotonic() - started

            creator = threading.Thread(target=create_while_away, daemon=True)
            creator.start()

            def ended() -> list[str]:
                return [f"{s['id'][:6]}… {s['end_reason']}: {s['detail']}" for s in client.list()
                        if s["id"] in before and s["state"] == "ended"]

            # The first squeue to fail takes about 9 s (Slurm's client retries the controller).
            wait_until(lambda: ended() or all(s["state"] == "unknown" for s in client.list() if s["id"] in before),
                       30, message="every session shown as unknown")
            assert not ended(), f"sessions ended while Slurm was away: {ended()}"
            during = {s["id"]: s for s in client.list()}
            assert all("cannot reach the scheduler" in during[sid]["detail"] for sid in before)
            while time.monotonic() < down + CTLD_OUTAGE:
                assert not ended(), f"sessions ended while Slurm was away: {ended()}"
                assert routes.read() == targets, "the map changed while Slurm was away"
                time.sleep(max(0.0, min(5.0, down + CTLD_OUTAGE - time.monotonic())))
            assert all(listening(t) for t in targets.values()), "a server stopped listening while Slurm was away"
            creator.join(60)
        finally:
            restarted = time.monotonic()
            cluster.start()
            answering = time.monotonic() - restarted
        outage = restarted - down

        def problems() -> list[str]:
            found = []
            jobs = {j.job_id: j.state for j in every_job(cluster)}
            for s in client.list():
                if s["id"] not in before:
                    continue
                real = {JobState.PENDING: ("queued",), JobState.RUNNING: ("starting", "ready")}.get(jobs.get(s["job_id"]), ())
                if s["state"] not in real or s["job_id"] != before[s["id"]]["job_id"]:
                    found.append(f"{s['id'][:6]}… {s['state']} job {s['job_id']}: Slurm says {jobs.get(s['job_id'])}")
            return found

        settled(problems, 60, "every session back in its real state")
        recover = time.monotonic() - restarted
        drill_record(recover_s=round(recover, 2))
        assert client.wait(starting["id"], timeout=60)["state"] == "ready"
        answers = load.stop()
        partitions = [a for a in answers if a.name == "partitions" and down <= a.started <= restarted]
        answers = [a for a in answers if a.name != "partitions"]

        # The session asked for while Slurm was away: nothing could be queued, so it ends as submit_failed once
        # submit_grace has passed with no job of its name, or it attached to the job if one was queued after all.
        made = outcome.get("session")
        if made:
            wait_until(lambda: client.get(made["id"])["state"] != "submitting", 20 + 20 + TWO_POLLS + 5,
                       message="the session asked for during the outage settled")
            made = client.get(made["id"])
        after = {s["id"]: s for s in client.list()}
        audit = audit_jobs(cluster, svc, ignore)
        wrongly_ended = [sid for sid in before if after[sid]["state"] == "ended"]
        slow = sorted(answers, key=lambda a: -a.seconds)[:3]
        drill_record(sessions=len(after), lost=len(wrongly_ended) + len(audit.missing),
                     orphaned=len(audit.orphaned),
                     note=f"outage {outage:.0f} s; slurmctld answering {answering:.1f} s after its restart; "
                          f"{len(answers)} polls answered, slowest {slow[0].seconds:.2f} s; a create during the "
                          f"outage answered after {outcome.get('seconds', 0):.1f} s "
                          f"({made['state'] + ', ' + str(made['end_reason']) if made else outcome.get('error')}); "
                          f"GET /api/v1/partitions during the outage: slowest "
                          f"{max((a.seconds for a in partitions), default=0):.1f} s "
                          f"({sorted({a.status for a in partitions})}); the starting session's report refused "
                          f"{refused_reports(svc)} times before it got through")

        assert outage >= CTLD_OUTAGE
        assert not wrongly_ended, wrongly_ended
        assert audit.ok, str(audit)
        history = [h["state"] for h in client.get(ready[0]["id"])["history"]]
        assert history[-2:] == ["unknown", "ready"], history
        assert routes.read() == ready_targets(after.values()) and len(routes.read()) == 4
        # The polls: answered throughout, every answer a 200 (nothing here needs Slurm), none slow.
        during_outage = [a for a in answers if down <= a.started <= restarted]
        assert len(during_outage) >= CTLD_OUTAGE, len(during_outage)
        assert not [a for a in answers if a.status != 200], [a for a in answers if a.status != 200][:5]
        assert slow[0].seconds <= 2.0, slow
        if made:
            assert made["state"] == "queued" or made["end_reason"] == "submit_failed", made
        else:
            assert outcome["error"].status == 503, outcome
        # The slow job's report came while Slurm was away: refused (503: cannot be checked), retried, taken after.
        assert refused_reports(svc) >= 1
    finally:
        if load:
            load.stop()
        if restarted is None:
            cluster.start()
        cancel(cluster, blockers)


# -- the database ------------------------------------------------------------------------------------------

def create_retrying(client, timeout: float = 30) -> tuple[dict, int]:
    """Create a session as a well-behaved script does: on a 503, wait as Retry-After says and ask again."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        try:
            return client.create("paraview", partition="cpu"), tries
        except ClientError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(min(e.retry_after or 1, 2))


def test_database_locked_fails_requests_cleanly_then_they_succeed(service_factory, cluster, tmp_path, drill_record):
    """Another process holds SQLite's write lock for 13 s, longer than the service's busy timeout (3 s). A session
    asked for meanwhile gets a clean JSON 503 and nothing is written or submitted; asked again after the lock is
    released, it is made once."""
    drill_record(drill="SQLite database locked", sessions=1,
                 recovery="from the lock's release to a retried request succeeding")
    ignore = known_job_ids(cluster)
    svc, _ = drill_service(service_factory, tmp_path)
    svc.start()
    client = svc.client()
    db = svc.dir / "pvhpc.sqlite"
    holder = sqlite3.connect(db, timeout=1, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Event()
    released_at = []

    def release_later():
        time.sleep(13)   # longer than the service's busy timeout (3 s)
        holder.rollback()
        holder.close()
        released_at.append(time.monotonic())
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    load = RequestLoad(svc.url, timeout=30).add("health", "GET", "/api/v1/health", every=0.5)
    try:
        with pytest.raises(ClientError) as e:
            client.create("paraview", partition="cpu")
        assert e.value.status == 503 and "database is busy" in e.value.message
        released.wait(30)
    finally:
        health = load.stop()
    drill_record(note=f"while a request waited on the lock, the slowest health check took "
                      f"{max(a.seconds for a in health):.1f} s ({len(health)} checks)")
    half_written = client.list()
    session, tries = create_retrying(client)
    recover = time.monotonic() - released_at[0]
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=len(half_written), orphaned=len(audit.orphaned), recover_s=round(recover, 2))
    assert half_written == [], "a half-written session was left behind"
    assert session["state"] in ("submitting", "queued")
    assert [s["id"] for s in client.list()] == [session["id"]] and audit.ok, str(audit)
    client.cancel(session["id"])


class FrameStream:
    """A view's frames pulled back to back through a websocket, in a thread of its own; when each arrived."""

    def __init__(self, url: str, secret: str):
        self.url, self.secret = url, secret
        self.arrivals: list[float] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._pull()), daemon=True)
        self._thread.start()

    async def _pull(self) -> None:
        from pvhpc.client.wslink import WslinkClient

        try:
            client = await WslinkClient.connect(self.url, self.secret)
            try:
                await client.create_source("Cone")
                while not self._stop.is_set():
                    await client.render((200, 150), quality=50)
                    self.arrivals.append(time.monotonic())
            finally:
                client.close()
        except BaseException as e:   # told by stop()
            self.error = e

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise AssertionError(f"the view stopped streaming: {self.error!r}") from self.error
        return self.arrivals

    def longest_gap(self, start: float, end: float) -> float:
        """The longest wait for a frame between ``start`` and ``end`` (the ends count as arrivals)."""
        times = [start, *[t for t in self.arrivals if start < t < end], end]
        return max(b - a for a, b in zip(times, times[1:]))


@dataclass
class LockedWhileStreaming:
    """What a drill measured while the database was locked under a streaming view."""

    gap: float                 # the longest wait for a frame
    frames: int
    probes: list               # helpers.Answer of each probe request started while locked
    refused: list              # ClientError of the session asked for meanwhile (none if it was made)

    @property
    def slowest(self) -> float:
        return max(a.seconds for a in self.probes)

    def note(self, probe: str) -> str:
        return (f"while the lock was held: {self.frames} frames, the longest wait {self.gap * 1000:.0f} ms; "
                f"{len(self.probes)} {probe}, the slowest {self.slowest * 1000:.0f} ms; the session asked for "
                f"meanwhile answered {self.refused[0].status if self.refused else 'without error'}")


def stream_while_locked(svc, session: dict, lock, unlock, probe: str, seconds: float = 5) -> LockedWhileStreaming:
    """Stream ``session``'s view through the built-in proxy and ask ``probe`` every 50 ms; meanwhile ``lock()``
    the database for ``seconds`` and ask for a new session (which must write)."""
    client = svc.client()
    stream = FrameStream(f"ws://127.0.0.1:{svc.port}/proxy?sessionId={session['id']}&path=ws", session["secret"])
    load = RequestLoad(svc.url, timeout=30).add("probe", "GET", probe, every=0.05)
    refused = []

    def create_meanwhile():
        try:
            client.create("paraview", partition="cpu")
        except ClientError as e:
            refused.append(e)

    try:
        wait_until(lambda: len(stream.arrivals) > 10, 30, message="the view streaming")
        lock()
        locked = time.monotonic()
        writer = threading.Thread(target=create_meanwhile, daemon=True)
        writer.start()
        time.sleep(seconds)
        unlock()
        released = time.monotonic()
        writer.join(30)
        time.sleep(0.5)
    finally:
        answers = load.stop()
        stream.stop()
    return LockedWhileStreaming(gap=stream.longest_gap(locked, released),
                                frames=sum(1 for t in stream.arrivals if locked < t < released),
                                probes=[a for a in answers if locked <= a.started < released], refused=refused)


def test_database_locked_holds_up_only_the_request_that_writes(service_factory, cluster, tmp_path, drill_record):
    """Another process holds SQLite's write lock for 5 s, longer than the service's busy timeout (3 s), while a
    ready session's view streams frames through the built-in proxy and /api/v1/health is asked every 50 ms. A
    session asked for meanwhile waits on the lock and gets its clean 503; nothing else waits: no gap between
    frames over 0.5 s, every health check answered within 100 ms."""
    drill_record(drill="SQLite locked, a view streaming", sessions=1,
                 recovery="the longest wait for a frame while the lock was held", bound_s=0.5)
    ignore = known_job_ids(cluster)
    svc = service_factory("offloop", frontend={"kind": "builtin"}, limits=DRILL_LIMITS).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    holder = sqlite3.connect(svc.dir / "pvhpc.sqlite", timeout=1)
    try:
        seen = stream_while_locked(svc, session, lambda: holder.execute("BEGIN EXCLUSIVE"), holder.rollback,
                                   "/api/v1/health")
    finally:
        holder.close()
    # The session refused during the lock left no job behind: Slurm's queue and the store agree.
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=0, orphaned=len(audit.orphaned), recover_s=round(seen.gap, 2), note=seen.note("health checks"))
    assert audit.ok, str(audit)
    assert [e.status for e in seen.refused] == [503] and "database is busy" in seen.refused[0].message
    assert seen.gap < 0.5, f"no frame for {seen.gap:.2f} s while the database was locked"
    assert len(seen.probes) > 20 and all(a.status == 200 for a in seen.probes)
    assert seen.slowest < 0.1, f"a health check took {seen.slowest * 1000:.0f} ms while the database was locked"
    assert [s["id"] for s in client.list()] == [session["id"]], "the refused session was half-written"
    client.cancel(session["id"])


@pytest.mark.postgres
def test_postgresql_table_locked_holds_up_only_the_requests_that_need_it(drill_postgres, service_factory, cluster,
                                                                         tmp_path, drill_record):
    """Another client holds PostgreSQL's ACCESS EXCLUSIVE lock on the sessions table for 5 s (it stops reads too,
    unlike SQLite's write lock), longer than the service's lock_timeout (3 s), while a ready session's view streams
    through the built-in proxy and a request that needs no database (the applications) is asked every 50 ms. The
    session asked for meanwhile gets its clean 503; the frames keep coming (no gap over 0.5 s) and every
    other answer comes within 100 ms."""
    from sqlalchemy import text

    drill_record(drill="PostgreSQL table locked, a view streaming", sessions=1,
                 recovery="the longest wait for a frame while the lock was held", bound_s=0.5)
    _, database = drill_postgres
    ignore = known_job_ids(cluster)
    svc = service_factory("offloop-pg", frontend={"kind": "builtin"}, limits=DRILL_LIMITS, database=database).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    engine = Store(database).engine
    holder = engine.connect()

    def lock():
        holder.execute(text("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE"))

    try:
        seen = stream_while_locked(svc, session, lock, holder.rollback, "/api/v1/applications")
    finally:
        holder.close()
        engine.dispose()
    # The session refused during the lock left no job behind: Slurm's queue and the store agree.
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=0, orphaned=len(audit.orphaned), recover_s=round(seen.gap, 2), note=seen.note("requests for the applications"))
    assert audit.ok, str(audit)
    assert [e.status for e in seen.refused] == [503] and "database is busy" in seen.refused[0].message
    assert seen.gap < 0.5, f"no frame for {seen.gap:.2f} s while the sessions table was locked"
    assert len(seen.probes) > 20 and all(a.status == 200 for a in seen.probes)
    assert seen.slowest < 0.1, f"a request took {seen.slowest * 1000:.0f} ms while the sessions table was locked"
    assert [s["id"] for s in client.list()] == [session["id"]], "the refused session was half-written"
    client.cancel(session["id"])


@pytest.fixture
def drill_postgres(postgres_url):
    """The test's PostgreSQL server, to stop and start, and a database of the drill's own on it."""
    pg = PostgresServer(postgres_url)
    with pg.scratch_database() as url:
        yield pg, url


@pytest.mark.postgres
def test_postgresql_down_fails_requests_cleanly_then_they_succeed(drill_postgres, service_factory, cluster, tmp_path,
                                                                   drill_record):
    """The service's PostgreSQL server is stopped for a few poll cycles (a fast shutdown cuts every connection),
    with a ready session and one whose server is starting. Every request meanwhile, native API and launcher alike,
    gets a clean JSON 503 with Retry-After, nothing is written or submitted, and the ready session stays in the map.
    Once the server is back, a retried request succeeds and makes one session, the starting one's report gets
    through, and the tracker follows Slurm again (a job cancelled outside pvhpc ends its session)."""
    drill_record(drill="PostgreSQL down", recovery="from PostgreSQL's restart to the first request answered")
    ignore = known_job_ids(cluster)
    pg, database = drill_postgres   # set up before service_factory: the database outlives the service
    svc, routes = drill_service(service_factory, tmp_path, "pg", database=database)
    svc.start()
    client = svc.client()
    ready = client.launch("paraview", partition="cpu")
    starting = client.create("paraview", partition="gpu")
    wait_until(lambda: client.get(starting["id"])["state"] in ("starting", "ready"), 30, message="second job running")
    load = RequestLoad(svc.url, timeout=30)
    load.add("sessions", "GET", "/api/v1/sessions", every=0.5)
    load.add("health", "GET", "/api/v1/health", every=0.5)
    try:
        pg.stop()
        down = time.monotonic()
        try:
            refused = []
            for method, path, body in (
                    ("GET", "/api/v1/sessions", None), ("GET", f"/api/v1/sessions/{ready['id']}", None),
                    ("POST", "/api/v1/sessions", {"application": "paraview", "partition": "cpu"}),
                    ("POST", "/paraview/", {"application": "paraview", "partition": "cpu"}),
                    ("DELETE", f"/api/v1/sessions/{ready['id']}", None)):
                started = time.monotonic()
                with pytest.raises(ClientError) as e:
                    client.request(method, path, body)
                refused.append((method, path, e.value.status, e.value.retry_after, time.monotonic() - started))
            time.sleep(max(0.0, down + 3 * POLL + SLACK - time.monotonic()))   # a few poll cycles without a database
            mapped = routes.read()
        finally:
            pg.start()
            up = time.monotonic()
        session, tries = create_retrying(client)
        created = time.monotonic()
        wait_until(lambda: [a for a in load.answers if a.status == 200 and a.started > up], 30,
                   message="the polls answered again")
    finally:
        answers = load.stop()
    first = min([a.started + a.seconds for a in answers if a.status == 200 and a.started > up] + [created])
    drill_record(recover_s=round(first - up, 2))
    assert client.wait(starting["id"], timeout=60)["state"] == "ready"

    sessions = stored_sessions(svc)
    audit = audit_jobs(cluster, svc, ignore)
    made = [s for s in sessions if s.id not in (ready["id"], starting["id"])]
    drill_record(sessions=len(sessions), lost=int(client.get(ready["id"])["state"] != "ready") + len(audit.missing),
                 orphaned=len(audit.orphaned),
                 note=f"database down {up - down:.1f} s; the retried create took {tries} tries; job reports "
                      f"refused meanwhile (and retried by the job): {refused_reports(svc)}")
    for method, path, status, retry_after, seconds in refused:
        assert (status, retry_after) == (503, 2) and seconds < 2.0, (method, path, status, retry_after, seconds)
    assert mapped == {ready["id"]: target(ready)}, "the map changed while the database was down"
    during = [a for a in answers if down < a.started and a.started + a.seconds < up]
    assert during and all(a.status == 503 and a.clean and a.seconds < 2.0 for a in during), during[:5]
    assert [s.id for s in made] == [session["id"]], "a refused request left a session behind, or one was doubled"
    assert audit.ok, str(audit)
    # The tracker follows Slurm again.
    client.cancel(session["id"])
    cancel(cluster, [ready["job_id"]])
    ended, lag = ended_after_slurm_knew(client, cluster, routes, ready, EndCause.CANCELLED, timeout=30)
    assert ended["end_reason"] == "cancelled_outside" and lag <= TWO_POLLS, (ended, lag)
