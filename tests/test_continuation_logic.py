"""Continuation's timing and rules, and its steps with a scripted scheduler (pure logic; the real path, a real
Slurm job, ParaView and Chromium, is in test_continuation_browser.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from pvhpc import config
from pvhpc.db.store import Change, SessionRecord, Store, utcnow
from pvhpc.jobs.states import SessionState
from pvhpc.scheduler import EndCause, SchedulerUnavailable, SubmitRefused
from pvhpc.sessions import continuation
from pvhpc.sessions.continuation import Continuation
from pvhpc.sessions.events import EventBus, Notice
from pvhpc.sessions.outcomes import NotAllowed, OverLimit, WrongState
from pvhpc.sessions.service import SessionService, token_hash
from pvhpc.sessions.tracker import Tracker

from tests.fakes import SubmittingScheduler, ended, running

S = SessionState
OLD_TOKEN = "old-token"


def site(tmp_path, **service):
    return config.parse({"service": {"continuation": True, "continue_max_total": 6, "job_output_dir": str(tmp_path / "jobs"),
                                     **service},
                         "partitions": {"cpu": {"walltime": {"default": 2, "max": 10}},
                                        "closed": {"continuation": False}},
                         "applications": {"paraview": {"data_roots": [str(tmp_path)], "partitions": ["cpu", "closed"]}}},
                        "site.yaml")


@pytest.fixture
def world(tmp_path):
    cfg = site(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    sched = SubmittingScheduler()
    bus = EventBus()
    service = SessionService(cfg, store, sched, bus)
    tracker = Tracker(cfg, store, sched, service)
    tracker.continuation = Continuation(cfg, service)
    return store, sched, tracker, service, bus


def ready_session(store, sched, seconds_left: float, wanted: bool = True, sid: str = "s1") -> SessionRecord:
    """A ready session of a 2-minute walltime whose job 900 runs, ``seconds_left`` before its walltime."""
    store.add(SessionRecord(id=sid, user="u", application="paraview", partition="cpu", gpus=0, walltime_minutes=2,
                            request_key="k", state=S.SUBMITTING.value, detail="", job_name=f"pvhpc-{sid}",
                            secret="the-secret", report_token_hash=token_hash(OLD_TOKEN), account=None,
                            continue_wanted=wanted))
    started = utcnow() - timedelta(seconds=120 - seconds_left)
    store.change(sid, Change.to(S.READY, "ready", job_id="900", host="10.0.0.1", port=4000, node="cpu01",
                                running_since=started, ready_at=started))
    sched.jobs["900"] = running("900", name=f"pvhpc-{sid}", nodes="cpu01")
    return store.get(sid)


def poll(tracker):
    return asyncio.run(tracker.poll_once())


def history(store, sid="s1"):
    return [e.detail for e in store.events(sid)]


def test_the_lead_scales_with_short_walltimes_and_staff_may_set_it(tmp_path):
    cfg = site(tmp_path)
    assert continuation.lead_seconds(cfg, 2) == 30          # a quarter would be 30 s: the floor
    assert continuation.lead_seconds(cfg, 8) == 120         # a quarter
    assert continuation.lead_seconds(cfg, 60) == 300        # the ceiling
    assert continuation.lead_seconds(cfg, 1) == 30          # at most half the walltime
    staff = site(tmp_path, continue_lead=100)
    assert continuation.lead_seconds(staff, 60) == 100 and continuation.lead_seconds(staff, 2) == 60


def test_the_rules_partition_site_and_total(tmp_path):
    cfg = site(tmp_path)
    assert continuation.allowed_on(cfg, "cpu") and not continuation.allowed_on(cfg, "closed")
    closed = continuation.refusal(cfg, "closed", 2)
    assert isinstance(closed, NotAllowed) and closed.field == "continue" and "closed" in str(closed)
    assert continuation.refusal(cfg, "cpu", 2, continuations=1) is None        # 3 jobs of 2 minutes: 6
    over = continuation.refusal(cfg, "cpu", 2, continuations=2)                 # a 4th would make 8 > 6
    assert isinstance(over, OverLimit) and over.field == "continue" and "continue_max_total" in str(over)
    off = config.parse({"partitions": {"cpu": {}}, "applications": {"paraview": {"data_roots": [str(tmp_path)]}}})
    assert isinstance(continuation.refusal(off, "cpu", 2), NotAllowed)        # off unless staff turn it on


def test_a_successor_is_submitted_within_the_lead_and_takes_over(world):
    store, sched, tracker, service, _ = world
    ready_session(store, sched, seconds_left=60)
    poll(tracker)
    assert sched.submitted == {}, "a minute before a 2-minute walltime is before its 30 s lead"
    store.change("s1", Change.to(S.READY, "ready", running_since=utcnow() - timedelta(seconds=100)))
    poll(tracker)
    assert list(sched.submitted) == ["1001"]
    job = sched.submitted["1001"]
    assert (job.partition, job.time_limit_minutes, job.name) == ("cpu", 2, "pvhpc-s1-c1")
    assert "PVHPC_SECRET=the-secret" in job.script and "CONTINUES=1" in job.script
    assert OLD_TOKEN not in job.script and "the-secret" not in repr(job.name)
    record = store.get("s1")
    assert (record.state, record.job_id, record.successor_job_id) == ("ready", "900", "1001")
    assert "successor submitted as job 1001" in history(store)[-1]
    poll(tracker)
    assert list(sched.submitted) == ["1001"], "one successor"

    sched.start("1001", "cpu02")
    poll(tracker)
    record = store.get("s1")
    assert (record.state, record.job_id, record.predecessor_job_id, record.continuations) == ("starting", "1001",
                                                                                               "900", 1)
    assert (record.host, record.port, record.secret, record.job_name) == (None, None, "the-secret", "pvhpc-s1-c1")
    assert ("cancel", "900") in sched.calls
    assert "taken over by job 1001; job 900 is saving its state" in history(store)[-1]
    # The old job's token is no longer believed.
    with pytest.raises(NotAllowed):
        asyncio.run(service.reporting("s1", OLD_TOKEN))
    poll(tracker)   # job 900 has left the queue (the scripted cancel drops it)
    assert store.get("s1").predecessor_job_id is None
    assert "job 900 has ended, its state saved" in history(store)[-1]


def test_the_handover_waits_for_the_old_job_then_names_the_state(world):
    store, sched, tracker, service, _ = world
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    token = "successor-token"
    store.change("s1", Change.to(S.READY, "ready", successor_token_hash=token_hash(token)))
    sched.start("1001", "cpu02")
    steps = tracker.continuation

    with pytest.raises(NotAllowed):
        asyncio.run(steps.handover("s1", "someone-elses"))
    assert asyncio.run(steps.handover("s1", token)) == {"wait": True}       # its first ask takes over
    assert store.get("s1").job_id == "1001"
    sched.jobs["900"] = running("900", nodes="cpu01")                     # still saving
    assert asyncio.run(steps.handover("s1", token)) == {"wait": True}
    del sched.jobs["900"]
    assert asyncio.run(steps.handover("s1", token)) == {"state": ""}       # no saved-state lister here
    with pytest.raises(NotAllowed):
        asyncio.run(steps.handover("s1", OLD_TOKEN))


def test_a_successor_still_queued_at_the_walltime_is_waited_for(world):
    store, sched, tracker, _, _ = world
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    sched.jobs["900"] = ended("900", EndCause.TIMEOUT)
    poll(tracker)
    record = store.get("s1")
    assert (record.state, record.job_id, record.successor_job_id, record.host) == ("queued", "1001", None, None)
    assert "waiting for its successor job 1001" in record.detail and "saved its state" in record.detail
    sched.start("1001", "cpu02")
    poll(tracker)
    assert store.get("s1").state == "starting"


@pytest.mark.parametrize("how", ["cancelled", "refused"])
def test_a_successor_that_never_starts_takes_no_time_from_the_running_job(world, how):
    """Continuation is an extra: its failure leaves the session its walltime, told so in its history and a Notice."""
    store, sched, tracker, _, bus = world
    ready_session(store, sched, seconds_left=10)

    async def poll_and_listen():
        with bus.subscribe(notices=True) as events:
            await tracker.poll_once()
            return [n for n in [events.queue.get_nowait() for _ in range(events.queue.qsize())]
                    if isinstance(n, Notice)]

    tries = []
    if how == "refused":
        async def refuse(request):
            tries.append(request)
            raise SubmitRefused("sbatch: error: Batch job submission failed: Invalid account")
        sched.submit = refuse
    else:
        poll(tracker)
        sched.jobs["1001"] = ended("1001", EndCause.CANCELLED, said="Slurm state CANCELLED")
    notices = asyncio.run(poll_and_listen())
    record = store.get("s1")
    assert (record.state, record.job_id, record.successor_job_id, record.continue_wanted) == ("ready", "900", None,
                                                                                              False)
    said = "Invalid account" if how == "refused" else "job 1001 (Slurm state CANCELLED)"
    assert said in history(store)[-1] and "goes on until its walltime" in history(store)[-1]
    assert [n.reason for n in notices] == ["successor_failed"] and said in notices[0].message
    assert "900" in sched.jobs and ("cancel", "900") not in sched.calls, "the running job keeps its time"
    submits = len(tries) + len([c for c in sched.calls if c[0] == "submit"])
    poll(tracker)
    assert store.get("s1").state == "ready"
    assert len(tries) + len([c for c in sched.calls if c[0] == "submit"]) == submits == 1, "not submitted again"


def test_a_successor_that_fails_after_the_old_job_ended_ends_the_session(world):
    """The walltime came first and the successor, the session's one hope, fails in the same poll."""
    store, sched, tracker, _, _ = world
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    sched.jobs["900"] = ended("900", EndCause.TIMEOUT)
    sched.jobs["1001"] = ended("1001", EndCause.CANCELLED, said="Slurm state CANCELLED")
    poll(tracker)
    record = store.get("s1")
    assert (record.state, record.end_reason) == ("ended", "successor_failed")
    assert "job 1001 (Slurm state CANCELLED)" in record.detail


def test_cancelling_a_session_cancels_its_successor_too(world):
    store, sched, tracker, service, _ = world
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    asyncio.run(service.cancel(store.get("s1")))
    assert {"900", "1001"} <= {c[1] for c in sched.calls if c[0] == "cancel"}
    assert sched.jobs == {}


def test_the_owner_switches_it_within_the_rules(world):
    store, sched, tracker, service, _ = world
    ready_session(store, sched, seconds_left=100, wanted=False)
    steps = tracker.continuation
    record = asyncio.run(steps.set_wanted(store.get("s1"), True))
    assert record.continue_wanted and "continuation asked" in history(store)[-1]
    store.change("s1", Change.to(S.READY, "ready", continuations=2))
    with pytest.raises(OverLimit):
        asyncio.run(steps.set_wanted(store.get("s1"), True))
    record = asyncio.run(steps.set_wanted(store.get("s1"), False))
    assert not record.continue_wanted
    asyncio.run(service.cancel(store.get("s1")))
    with pytest.raises(WrongState):
        asyncio.run(steps.set_wanted(store.get("s1"), True))
    assert sched.submitted == {}


def test_the_user_is_told_once_when_a_successor_has_taken_over(world):
    store, sched, tracker, service, bus = world
    ready_session(store, sched, seconds_left=10)
    with bus.subscribe(notices=True) as events:
        poll(tracker)
        sched.start("1001", "cpu02")
        poll(tracker)
        asyncio.run(service.apply("s1", Change.to(S.READY, "ready again", host="10.0.0.2", port=4001,
                                                  node="cpu02")))
        asyncio.run(service.apply("s1", Change.to(S.READY, "still ready", host="10.0.0.2", port=4001,
                                                  node="cpu02")))
        seen = []
        while not events.queue.empty():
            seen.append(events.queue.get_nowait())
    notices = [n for n in seen if getattr(n, "reason", None) == "continued"]
    assert len(notices) == 1 and "job 1001" in notices[0].message


def test_an_apps_page_loads_the_reattachment_before_its_own_scripts():
    from pvhpc.web.reattach import with_reattach

    page = b'<!DOCTYPE html>\n<html>\n  <HEAD lang="en">\n<title>V</title></head><body><script src="Visualizer.js">'
    out = with_reattach(page, "../../static/reattach.js?v=abc")
    assert out.index(b'<script src="../../static/reattach.js?v=abc"></script>') < out.index(b"Visualizer.js")
    assert out.startswith(b'<!DOCTYPE html>\n<html>\n  <HEAD lang="en"><script')
    assert with_reattach(b"<p>no head</p>", "r.js").startswith(b'<script src="r.js"></script><p>')


def test_the_api_refuses_another_users_session_an_ended_one_and_a_wrong_handover_token(tmp_path):
    """pvhpc's own routes in-process (tests/harness/inprocess.py): nothing reaches the scheduler."""
    import json

    from tests.harness.inprocess import fetch_all, make_app

    sched = SubmittingScheduler()
    app = make_app(tmp_path, sched, service={"continuation": True}, auth={"kind": "local", "user": "alice"})
    store = app.ctx.store
    for sid, user, state in (("b" * 32, "bob", S.READY), ("a" * 32, "alice", S.ENDED)):
        store.add(SessionRecord(id=sid, user=user, application="paraview", partition="cpu", gpus=0,
                                walltime_minutes=60, request_key="k", state=S.SUBMITTING.value, detail="",
                                job_name=f"pvhpc-{user}", secret="s", report_token_hash=token_hash("t-" + user)))
        store.change(sid, Change.to(state, "", job_id="77", host="h", port=1) if state is S.READY
                     else Change.to(state, "", end_reason="cancelled"))
    on = json.dumps({"continue": True})
    answers = fetch_all(app, [("POST", f"/api/v1/sessions/{'b' * 32}/continue", on),
                              ("POST", f"/api/v1/sessions/{'a' * 32}/continue", on),
                              ("POST", f"/api/v1/sessions/{'a' * 32}/continue", json.dumps({"continue": 1}))])
    # A job's handover ask with another session's report token: refused as an unknown session would be.
    answers += fetch_all(app, [("GET", f"/api/v1/sessions/{'b' * 32}/handover", None)],
                         headers={"Authorization": "token t-alice"})
    assert [a.code for a in answers] == [404, 409, 400, 403]
    assert [json.loads(a.body).get("field") for a in answers[:3]] == [None, "continue", "continue"]
    assert store.get("b" * 32).continue_wanted is False and sched.submitted == {}


def test_a_successor_asks_no_more_than_the_partitions_walltime_max(tmp_path, world):
    """More time may have grown the session past walltime.max (up to extend_walltime_max): sbatch would refuse."""
    store, sched, *_ = world
    record = ready_session(store, sched, seconds_left=100)
    assert continuation.spec_of(site(tmp_path), record).walltime_minutes == 2
    record.walltime_minutes = 15        # cpu's walltime max is 10
    assert continuation.spec_of(site(tmp_path), record).walltime_minutes == 10


def test_turning_it_off_on_a_stale_read_never_cancels_a_successor_that_has_taken_over(world):
    """The owner's "off" read the session with job 1001 queued; the successor took over before the write."""
    store, sched, tracker, _, _ = world
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    stale = store.get("s1")
    assert stale.successor_job_id == "1001"
    sched.start("1001", "cpu02")
    asyncio.run(tracker.continuation.take_over(store.get("s1")))
    record = asyncio.run(tracker.continuation.set_wanted(stale, False))
    assert ("cancel", "1001") not in sched.calls, "the session's own job now"
    assert (record.state, record.job_id, record.continue_wanted) == ("starting", "1001", False)
    assert store.get("s1").job_id == "1001" and "1001" in sched.jobs


def test_turning_it_off_cancels_a_queued_successor_after_the_write(world):
    store, sched, tracker, _, _ = world
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    record = asyncio.run(tracker.continuation.set_wanted(store.get("s1"), False))
    assert (record.successor_job_id, record.continue_wanted, record.job_id) == (None, False, "900")
    assert ("cancel", "1001") in sched.calls and "1001" not in sched.jobs


@pytest.mark.parametrize("how", ["cancel", "end"])
def test_ending_a_session_read_before_its_successor_was_submitted_cancels_that_successor(world, how):
    from pvhpc.jobs.states import EndReason

    store, sched, tracker, service, _ = world
    ready_session(store, sched, seconds_left=10)
    before = store.get("s1")
    poll(tracker)
    assert store.get("s1").successor_job_id == "1001"
    if how == "cancel":
        asyncio.run(service.cancel(before))
    else:
        asyncio.run(service.end(before, EndReason.IDLE))
    assert store.get("s1").state == "ended"
    assert {"900", "1001"} <= {c[1] for c in sched.calls if c[0] == "cancel"} and sched.jobs == {}


class LostAnswers(SubmittingScheduler):
    """Slurm queues each job, but sbatch's answer is lost (it timed out) for the first ``lost`` submissions; with
    ``then_away``, looking jobs up by name fails too from then on (until ``away`` is cleared)."""

    def __init__(self, lost=1, then_away=False):
        super().__init__()
        self.lost, self.then_away, self.away = lost, then_away, False

    async def submit(self, request):
        job_id = await super().submit(request)
        if self.lost:
            self.lost -= 1
            self.away = self.then_away
            raise SchedulerUnavailable("sbatch timed out after 60 s")
        return job_id

    async def find_by_name(self, names):
        if self.away:
            raise SchedulerUnavailable("squeue timed out")
        return await super().find_by_name(names)


@pytest.mark.parametrize("away", [False, True])
def test_a_successor_whose_submission_was_not_answered_is_never_queued_twice(tmp_path, away):
    cfg = site(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    sched = LostAnswers(then_away=away)
    service = SessionService(cfg, store, sched, EventBus())
    tracker = Tracker(cfg, store, sched, service)
    tracker.continuation = Continuation(cfg, service)
    ready_session(store, sched, seconds_left=10)
    poll(tracker)
    if away:
        assert store.get("s1").successor_job_id is None and "1001" in sched.jobs   # queued, its answer lost
        sched.away = False
        poll(tracker)
    queued = [j for j, job in sched.jobs.items() if job.name == "pvhpc-s1-c1"]
    assert queued == [store.get("s1").successor_job_id], (queued, sched.calls)
