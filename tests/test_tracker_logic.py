"""The tracker's decisions, with a scripted scheduler (pure logic; the real path is in test_launcher_e2e.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pvhpc import config
from pvhpc.sessions.events import EventBus
from pvhpc.scheduler import EndCause, QueueReason
from pvhpc.sessions.service import SessionService
from pvhpc.jobs.states import SessionState
from pvhpc.db.store import Change, SessionRecord, Store, utcnow
from pvhpc.sessions.tracker import Tracker

from tests.fakes import ScriptedScheduler, ended, pending, running

S = SessionState


@pytest.fixture
def world(tmp_path):
    cfg = config.parse({"service": {"submit_grace": 60}, "scheduler": {"command_timeout": 5},
                        "partitions": {"gpu": {}}, "applications": {"paraview": {"data_roots": [str(tmp_path)], "start_timeout": 30}}},
                       "site.yaml")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    sched = ScriptedScheduler()
    service = SessionService(cfg, store, sched, EventBus())
    return store, sched, Tracker(cfg, store, sched, service)


def add(store, i, state=S.QUEUED, job_id=None, **kw):
    store.add(SessionRecord(id=f"s{i}", user="u", application="paraview", partition="gpu", gpus=0,
                            walltime_minutes=60, request_key="k", state=S.SUBMITTING.value, detail="",
                            job_name=f"pvhpc-{i}", secret="x", report_token_hash="h",
                            created_at=kw.pop("created_at", utcnow())))
    if state is not S.SUBMITTING:
        store.change(f"s{i}", Change.to(state, "", job_id=job_id or str(1000 + i), **kw))


def poll(tracker):
    return asyncio.run(tracker.poll_once())


def test_one_query_per_cycle_for_many_sessions(world):
    store, sched, tracker = world
    for i in range(300):
        add(store, i)
        sched.jobs[str(1000 + i)] = pending(str(1000 + i), QueueReason.PRIORITY, name=f"pvhpc-{i}")
    stats = poll(tracker)
    assert stats.scheduler_calls == 1 and [c[0] for c in sched.calls] == ["query"]
    assert len(sched.calls[0][1]) == 300
    assert {r.detail for r in store.live()} == {"waiting behind jobs with higher priority"}


def test_outage_keeps_sessions_as_unknown_and_recovers(world):
    store, sched, tracker = world
    add(store, 1, S.READY, host="n1", port=4000, node="gpu01")
    add(store, 2, S.QUEUED)
    sched.down = True
    poll(tracker)
    assert {r.id: r.state for r in store.live()} == {"s1": "unknown", "s2": "unknown"}
    assert "cannot reach the scheduler" in store.get("s1").detail
    poll(tracker)   # still down: nothing ends, nothing is asked twice
    assert len(store.live()) == 2 and [c[0] for c in sched.calls] == ["query", "query"]
    sched.down = False
    sched.jobs = {"1001": running("1001", nodes="gpu01"), "1002": pending("1002", QueueReason.RESOURCES)}
    poll(tracker)
    assert {r.id: r.state for r in store.live()} == {"s1": "ready", "s2": "queued"}
    assert store.get("s1").port == 4000


def test_gone_job_is_looked_up_once_more_before_it_ends(world):
    store, sched, tracker = world
    add(store, 1, S.READY, host="n1", port=4000)
    add(store, 2, S.QUEUED)
    sched.finished["1001"] = ended("1001", EndCause.TIMEOUT)
    poll(tracker)
    assert ("lookup_finished", "1001") in sched.calls and ("lookup_finished", "1002") in sched.calls
    assert (store.get("s1").state, store.get("s1").end_reason) == ("ended", "walltime")
    assert (store.get("s2").state, store.get("s2").end_reason) == ("ended", "lost")


def test_finished_states_give_reasons(world):
    store, sched, tracker = world
    causes = [EndCause.CANCELLED, EndCause.NODE_FAIL, EndCause.COMPLETED, EndCause.OUT_OF_MEMORY, EndCause.FAILED]
    for i, cause in enumerate(causes):
        add(store, i, S.STARTING)
        sched.jobs[str(1000 + i)] = ended(str(1000 + i), cause)
    poll(tracker)
    assert [store.get(f"s{i}").end_reason for i in range(5)] == [
        "cancelled_outside", "node_failure", "completed", "out_of_memory", "failed"]


def test_start_timeout_cancels_the_job(world):
    store, sched, tracker = world
    add(store, 1, S.STARTING, running_since=utcnow() - timedelta(seconds=31))
    sched.jobs["1001"] = running("1001", nodes="gpu01")
    poll(tracker)
    assert store.get("s1").end_reason == "start_timeout" and ("cancel", "1001") in sched.calls


def test_unanswered_submission_is_found_by_name_or_given_up(world):
    store, sched, tracker = world
    add(store, 1, S.SUBMITTING, created_at=utcnow() - timedelta(seconds=10))
    add(store, 2, S.SUBMITTING, created_at=utcnow() - timedelta(seconds=61))
    add(store, 3, S.SUBMITTING)   # just created: its sbatch may still be running
    sched.jobs["555"] = pending("555", QueueReason.RESOURCES, name="pvhpc-1")
    poll(tracker)
    assert [(c[0], sorted(c[1])) for c in sched.calls] == [("find_by_name", ["pvhpc-1", "pvhpc-2"])]
    assert (store.get("s1").state, store.get("s1").job_id) == ("queued", "555")
    assert store.get("s2").end_reason == "submit_failed"
    assert store.get("s3").state == "submitting"


def test_a_report_must_name_the_jobs_own_node(world):
    from pvhpc.jobs import reports
    from pvhpc.sessions.outcomes import NotAllowed
    from pvhpc.sessions.service import ServiceError, token_hash

    store, sched, tracker = world
    service = tracker.service
    sched.node_addresses = lambda: asyncio.sleep(0, {"gpu01": {"gpu01", "localhost"}})
    add(store, 1, S.STARTING)
    with store.transaction() as db:
        db.get(SessionRecord, "s1").report_token_hash = token_hash("tok")
    sched.jobs["1001"] = running("1001", nodes="gpu01", name="pvhpc-1")

    def report(host, port=40000, job_id="1001"):
        return asyncio.run(service.report("s1", "tok", reports.parse({"event": "ready", "host": host, "port": port,
                                                                      "job_id": job_id})))

    for host in ("evil.example", "10.0.0.1", "login-node"):
        with pytest.raises(ServiceError) as e:
            report(host)
        assert isinstance(e.value, NotAllowed) and "not node gpu01" in e.value.message
    with pytest.raises(ServiceError, match="not this session's job"):
        report("gpu01", job_id="999")
    with pytest.raises(reports.ReportError, match="between 1024 and 65535"):
        report("gpu01", port=22)
    assert report("127.0.0.1").state == "ready"   # an address of the node (localhost here) is the node


def test_a_cycle_in_which_nothing_moved_writes_nothing(world, monkeypatch):
    """At 10,000 sessions a transaction per unmoved session held the event loop for seconds each cycle."""
    store, sched, tracker = world
    for i in range(50):
        add(store, i)
        sched.jobs[str(1000 + i)] = pending(str(1000 + i), QueueReason.RESOURCES, name=f"pvhpc-{i}")
    poll(tracker)                       # the first cycle brings every session to what Slurm says
    writes = []
    original = store.change_in   # every write of a session's change, alone or in a group (pvhpc.db.groupcommit)
    monkeypatch.setattr(store, "change_in", lambda db, *a, **kw: writes.append(a) or original(db, *a, **kw))
    poll(tracker)
    assert writes == []
    sched.jobs["1007"] = running("1007", name="pvhpc-7", nodes="gpu01")
    poll(tracker)
    assert [w[0] for w in writes] == ["s7"] and store.get("s7").state == "starting"


def test_a_submission_that_never_reached_slurm_ends_at_once_with_503(world):
    """sbatch's "connect failure": nothing can be queued, so no look for the job by name, no session left waiting."""
    import getpass

    from pvhpc.scheduler import ControllerDown
    from pvhpc.sessions.outcomes import SchedulerAway
    from pvhpc.sessions.service import ServiceError
    from pvhpc.sessions.spec import parse_spec

    store, sched, tracker = world

    async def down(request):
        sched.calls.append(("submit", request.name))
        raise ControllerDown("sbatch: error: Unable to contact slurm controller (connect failure)")

    sched.submit = down
    with pytest.raises(ServiceError) as refused:
        asyncio.run(tracker.service.create(getpass.getuser(), parse_spec(tracker.config, {"application": "paraview"},
                                                                          True)))
    assert isinstance(refused.value, SchedulerAway) and "nothing was queued" in refused.value.message
    [session] = store.find()
    assert session.state == "ended" and session.end_reason == "submit_failed"
    assert [c[0] for c in sched.calls] == ["submit"]      # not looked for by name


def test_a_report_landing_while_squeue_runs_wins_over_the_cycles_stale_decision(world):
    """Read as queued, Slurm says running, and meanwhile the job reported ready: the cycle must not try
    ready -> starting (an illegal move that used to abort the whole cycle), nor end the session, and the
    other sessions of the cycle are still decided."""
    store, sched, tracker = world
    add(store, 1)
    add(store, 2)
    sched.jobs["1001"] = running("1001", name="pvhpc-1", nodes="gpu01")
    sched.finished["1002"] = ended("1002", EndCause.CANCELLED, name="pvhpc-2")
    query = sched.query

    async def report_lands_meanwhile(job_ids):
        answer = await query(job_ids)
        await tracker.service.apply("s1", Change.to(S.READY, "listening", host="gpu01", port=5000, node="gpu01"))
        return answer

    sched.query = report_lands_meanwhile
    poll(tracker)
    assert store.get("s1").state == "ready" and store.get("s1").port == 5000
    assert store.get("s2").end_reason == "cancelled_outside"   # the rest of the cycle went on
    poll(tracker)                                              # the next cycle agrees with the report
    assert store.get("s1").state == "ready"


def test_secrets_and_ids_never_start_with_a_dash(monkeypatch):
    """A server given ``--authKey SECRET`` (the Visualizer) reads a secret such as ``-x3...`` as an option and
    refuses to start: one secret in 64 did. A word that starts with '-' is drawn again."""
    from pvhpc.sessions import service

    drawn = iter(["-starts-with-a-dash", "-again", "fine-word"])
    monkeypatch.setattr(service.secrets, "token_urlsafe", lambda n: next(drawn))
    assert service.new_secret() == "fine-word"


def test_session_ids_survive_a_client_that_lowercases_its_session_url():
    """trame's browser client lowercases the whole sessionURL before it connects: ids are lowercase already,
    32 characters from 36 (165 bits), and different each time."""
    from pvhpc.sessions import service

    ids = {service.new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 32 and i == i.lower() and i.isalnum() and i.isascii() for i in ids)
    assert set("".join(ids)) == set(service.SESSION_ID_ALPHABET)


def test_a_users_cancel_that_slurm_times_out_is_tried_once_more(world, monkeypatch):
    """A busy controller times out a kill (it may have done it): the user's cancel is tried again, and the session
    ends. A controller still away after that: 503, the session stays live, nothing is lost, the user tries again."""
    from pvhpc.scheduler import NoAnswer
    from pvhpc.sessions import service as service_module
    from pvhpc.sessions.outcomes import SchedulerAway

    monkeypatch.setattr(service_module, "CANCEL_RETRY_PAUSE_S", 0)
    store, sched, tracker = world
    add(store, 1)
    add(store, 2)
    timeouts = {"1001": 1, "1002": 2}
    cancel = sched.cancel

    async def busy(job_id, user=None):
        if timeouts[job_id]:
            timeouts[job_id] -= 1
            sched.calls.append(("cancel timed out", job_id))
            raise NoAnswer(f"scancel: error: Kill job error on job id {job_id}: Socket timed out on send/recv "
                           "operation")
        await cancel(job_id, user)

    sched.cancel = busy
    service = tracker.service
    assert asyncio.run(service.cancel(store.get("s1"))).end_reason == "cancelled"
    assert sched.calls == [("cancel timed out", "1001"), ("cancel", "1001")]
    with pytest.raises(SchedulerAway, match="could not reach the scheduler to cancel job 1002: .*Socket timed out"):
        asyncio.run(service.cancel(store.get("s2")))
    assert store.get("s2").state == "queued"
    assert asyncio.run(service.cancel(store.get("s2"))).end_reason == "cancelled"   # the user's second try
    assert sched.calls[2:] == [("cancel timed out", "1002")] * 2 + [("cancel", "1002")]


@pytest.mark.parametrize("away", ["never reached", "hung"])
def test_a_users_cancel_is_not_tried_again_unless_slurm_gave_up_waiting(world, away):
    """"connect failure": slurmctld took no connection and Slurm's client has retried already; a command that hung
    past pvhpc's own timeout would only hang again. The user hears at once, the session stays live."""
    from pvhpc.scheduler import ControllerDown, SchedulerUnavailable
    from pvhpc.sessions.outcomes import SchedulerAway

    store, sched, tracker = world
    add(store, 1)
    error = (ControllerDown("scancel: error: Kill job error on job id 1001: Unable to contact slurm controller "
                            "(connect failure)") if away == "never reached" else
             SchedulerUnavailable("scancel did not finish within 30 s"))

    async def down(job_id, user=None):
        sched.calls.append(("cancel", job_id))
        raise error

    sched.cancel = down
    with pytest.raises(SchedulerAway, match="connect failure|within 30 s"):
        asyncio.run(tracker.service.cancel(store.get("s1")))
    assert sched.calls == [("cancel", "1001")] and store.get("s1").state == "queued"
