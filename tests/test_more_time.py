"""More time for a running session: the rules (pure logic, with a scheduler that records its calls), what the
service stores and tells after Slurm took it, the commands each backend runs, and the sudo helper's own checks.

On the real cluster: tests/test_more_time_cluster.py (each backend's call, read back from Slurm) and
tests/test_more_time_browser.py (the page's button, in Chromium)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pvhpc import config
from pvhpc.db.store import SessionRecord, Store, utcnow
from pvhpc.jobs.states import SessionState
from pvhpc.scheduler import ChangeRefused
from pvhpc.scheduler.slurm_cli import time_limit_argv
from pvhpc.sessions import more_time
from pvhpc.sessions.events import EventBus, Notice
from pvhpc.sessions.outcomes import JobRefused, NotAllowed, NotRecorded, SchedulerAway, WrongState
from pvhpc.sessions.service import SessionService
from pvhpc.sessions.spec import RequestError
from pvhpc.sessions.walltime_warnings import WalltimeWarnings, ends_at

from tests.fakes import TimeLimitScheduler

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "deploy" / "pvhpc-extend-job"
S = SessionState


def site(tmp_path):
    return config.parse({"partitions": {
        "gpu": {"extend_walltime": "operator", "walltime": {"default": 60, "max": 120}, "extend_walltime_max": 90},
        "fixed": {},
        "viasudo": {"extend_walltime": "sudo"}},
        "applications": {"paraview": {"data_roots": [str(tmp_path)]}}}, "site.yaml")


def record(state=S.READY, partition="gpu", walltime=60, user="alice", job_id="42", i=1) -> SessionRecord:
    return SessionRecord(id=f"s{i}", user=user, application="paraview", partition=partition, gpus=0,
                         walltime_minutes=walltime, request_key="k", state=state.value, detail="ready on n1",
                         job_name=f"pvhpc-{i}", secret="x", report_token_hash="h", job_id=job_id,
                         running_since=utcnow() - timedelta(minutes=5))


# -- the rules ------------------------------------------------------------------------------------------

def test_the_config_says_how_and_how_far_per_partition_none_by_default(tmp_path):
    cfg = site(tmp_path)
    assert (cfg.partitions["gpu"].extend_walltime, cfg.partitions["gpu"].extend_walltime_max) == ("operator", 90)
    # Off unless staff say how; the cap defaults to the partition's own walltime max.
    assert (cfg.partitions["fixed"].extend_walltime, cfg.partitions["fixed"].extend_walltime_max) == ("none", 480)
    with pytest.raises(config.ConfigError, match="extend_walltime: must be one of none, operator, sudo"):
        config.parse({"partitions": {"gpu": {"extend_walltime": "always"}}, "applications": {"paraview": {}}})


@pytest.mark.parametrize("minutes", [0, -5, 1.5, "10", True, None, [10]])
def test_minutes_must_be_a_positive_whole_number(tmp_path, minutes):
    with pytest.raises(RequestError, match="positive whole number of minutes") as refused:
        more_time.check(record(), "alice", minutes, site(tmp_path))
    assert refused.value.field == "minutes" and refused.value.status == 400


def test_each_rule_names_what_was_wrong(tmp_path):
    cfg = site(tmp_path)
    assert more_time.check(record(), "alice", 30, cfg)[:2] == (30, 90)
    # Over the cap: the most that can still be added is said.
    with pytest.raises(RequestError, match="at most 30 more") as over:
        more_time.check(record(), "alice", 31, cfg)
    assert over.value.field == "minutes"
    with pytest.raises(NotAllowed, match="has the most walltime partition gpu allows") as full:
        more_time.check(record(walltime=90), "alice", 1, cfg)
    assert full.value.field == "partition"
    with pytest.raises(NotAllowed, match="partition fixed does not allow more time") as fixed:
        more_time.check(record(partition="fixed"), "alice", 5, cfg)
    assert fixed.value.field == "partition"
    # Another user's session: as the API answers for one that does not exist.
    with pytest.raises(NotAllowed, match="^no session s1$"):
        more_time.check(record(), "bob", 5, cfg)
    for state in (S.QUEUED, S.SUBMITTING, S.UNKNOWN, S.ENDED):
        with pytest.raises(WrongState, match=f"the session is {state.value}"):
            more_time.check(record(state=state), "alice", 5, cfg)


def test_the_offer_says_what_a_request_would_be_answered(tmp_path):
    cfg = site(tmp_path)
    assert more_time.offer(record(), cfg) == {"allowed": True, "most_minutes": 30, "why": None}
    assert more_time.offer(record(partition="fixed"), cfg)["why"].startswith("partition fixed does not allow")
    assert more_time.offer(record(walltime=90), cfg) == {
        "allowed": False, "most_minutes": 0, "why": "this session has the most walltime partition gpu allows (90 min)"}
    assert not more_time.offer(record(state=S.QUEUED), cfg)["allowed"]
    assert more_time.offer(record(state=S.ENDED), cfg) is None


# -- the service: Slurm first, then the store ----------------------------------------------------------

@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def make_world(tmp_path):
    cfg = site(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    sched = TimeLimitScheduler()
    bus = EventBus()
    service = SessionService(cfg, store, sched, bus)
    counted = []
    granting = more_time.MoreTime(cfg, sched, service, lambda p, outcome, minutes=0: counted.append((outcome, minutes)))
    return store, sched, bus, granting, counted


def test_granted_time_is_stored_told_and_in_the_history(world):
    store, sched, bus, granting, counted = world
    store.add(record())
    with bus.subscribe() as events:
        updated = asyncio.run(granting.extend("s1", "alice", 20))
        pushed = events.queue.get_nowait()
    assert sched.calls == [("set_time_limit", "42", 80, "operator")]   # the new total, not an addition
    # Its state and detail stay as they are (the tracker's); the history has a line of its own.
    assert (updated.walltime_minutes, updated.state, updated.detail) == (80, "ready", "ready on n1")
    assert pushed.walltime_minutes == 80                                # the push channel carries it
    assert store.get("s1").walltime_minutes == 80
    assert store.events("s1")[-1].detail == "walltime extended by 20 min, now 80 min"
    assert ends_at(updated) == updated.running_since + timedelta(minutes=80)
    assert counted == [("granted", 20)]


def test_no_slurm_call_for_a_refused_request_and_nothing_stored_when_slurm_refuses(world):
    store, sched, bus, granting, counted = world
    store.add(record())
    store.add(record(partition="fixed", i=2))
    for sid, minutes, error in (("s1", 0, RequestError), ("s1", 31, RequestError), ("s2", 5, NotAllowed)):
        with pytest.raises(error):
            asyncio.run(granting.extend(sid, "alice", minutes))
    with pytest.raises(NotAllowed, match="no session s1"):
        asyncio.run(granting.extend("s1", "bob", 5))
    assert sched.calls == [] and counted == [("refused", 0)] * 4
    # Slurm's own words, and the stored walltime as it was.
    sched.refuse = "scontrol exited 1: Access/permission denied for job 42"
    with pytest.raises(JobRefused, match="Access/permission denied for job 42"):
        asyncio.run(granting.extend("s1", "alice", 10))
    sched.refuse, sched.down = None, True
    with pytest.raises(SchedulerAway, match="asking again is safe"):
        asyncio.run(granting.extend("s1", "alice", 10))
    assert store.get("s1").walltime_minutes == 60
    assert not [e for e in store.events("s1") if "extended" in e.detail]
    assert counted[-2:] == [("slurm_refused", 0), ("unavailable", 0)]


def test_a_database_that_cannot_record_the_time_slurm_took_says_so_and_the_same_request_again_adds_nothing_twice(
        tmp_path, monkeypatch):
    from pvhpc.db import store as store_module

    monkeypatch.setattr(store_module, "LOCK_WAIT_SECONDS", 1)   # read at each connection: the lock fails in 1 s
    store, sched, bus, granting, counted = make_world(tmp_path)
    store.add(record())
    holder = sqlite3.connect(tmp_path / "db.sqlite", timeout=0)
    took = sched.set_time_limit

    async def took_then_locked(job_id, minutes, through):
        await took(job_id, minutes, through)
        holder.execute("BEGIN EXCLUSIVE")   # another writer holds the database once Slurm has taken the change

    sched.set_time_limit = took_then_locked
    try:
        with pytest.raises(NotRecorded, match="Slurm gave job 42 its new walltime of 80 min, but pvhpc could not "
                                              "record it .* ask again for the same 20 min"):
            asyncio.run(granting.extend("s1", "alice", 20))
    finally:
        holder.rollback()
        holder.close()
    assert store.get("s1").walltime_minutes == 60
    sched.set_time_limit = took
    assert asyncio.run(granting.extend("s1", "alice", 20)).walltime_minutes == 80
    assert [c[2] for c in sched.calls] == [80, 80]   # the same total asked twice: nothing added twice
    assert counted == [("unrecorded", 0), ("granted", 20)]   # the minutes counted once, when recorded


def test_a_noted_change_keeps_the_rows_state_and_detail_and_leaves_an_ended_session_alone(world):
    from pvhpc.db.store import Change

    store = world[0]
    store.add(record(state=S.UNKNOWN))   # the tracker's latest word, newer than what the request read
    store.add(record(state=S.ENDED, i=2))
    changed = store.change("s1", Change.noted("walltime extended by 5 min, now 65 min", walltime_minutes=65))
    assert (changed.state, changed.detail, changed.walltime_minutes) == ("unknown", "ready on n1", 65)
    assert [(e.state, e.detail) for e in store.events("s1")][-2:] == [
        ("unknown", "ready on n1"), ("unknown", "walltime extended by 5 min, now 65 min")]
    assert store.change("s2", Change.noted("x", walltime_minutes=65)) is None and store.get("s2").walltime_minutes == 60
    assert store.change("s1", Change.noted("again", walltime_minutes=65)) is None   # no news: no second line
    assert len(store.events("s1")) == 2


def test_two_requests_at_once_each_get_their_minutes(world):
    store, sched, bus, granting, counted = world
    store.add(record())

    async def both():
        return await asyncio.gather(granting.extend("s1", "alice", 10), granting.extend("s1", "alice", 10))

    asyncio.run(both())
    assert [c[2] for c in sched.calls] == [70, 80] and store.get("s1").walltime_minutes == 80


def test_sudo_partitions_go_through_the_helper_way(world):
    store, sched, bus, granting, counted = world
    store.add(record(partition="viasudo", walltime=60))
    asyncio.run(granting.extend("s1", "alice", 15))
    assert sched.calls == [("set_time_limit", "42", 75, "sudo")]


@pytest.mark.parametrize("extended", [True, False])
def test_the_walltime_warnings_are_set_again_for_the_new_end(extended):
    """A session whose warning was due now, extended: no warning until shortly before its new end. Not extended
    (the control): the warning comes, so the silence above is the extension's doing."""
    bus = EventBus()

    async def run():
        warnings = WalltimeWarnings((0.5,), bus)
        near = record(walltime=1)
        near.running_since = utcnow() - timedelta(seconds=59)   # 1 s left: the 0.5 s warning is due soon
        got = []
        with bus.subscribe(notices=True) as events:
            warnings.start([near])
            if extended:
                longer = record(walltime=1)
                longer.running_since = near.running_since
                longer.walltime_minutes = 2
                bus.publish(longer)
            await asyncio.sleep(1.5)
            warnings.stop()
            while not events.queue.empty():
                item = events.queue.get_nowait()
                if isinstance(item, Notice):
                    got.append(item)
        return got

    notices = asyncio.run(run())
    if extended:
        assert notices == []
    else:
        assert [n.reason for n in notices] == ["walltime"], notices


# -- the commands -----------------------------------------------------------------------------------------

def test_the_commands_each_way_runs():
    assert time_limit_argv("42", 90, "operator", None) == ["scontrol", "update", "JobId=42", "TimeLimit=90"]
    assert time_limit_argv("42", 90, "sudo", "/usr/local/sbin/pvhpc-extend-job") == [
        "/usr/local/sbin/pvhpc-extend-job", "42", "90"]
    for job_id, minutes in (("42 TimeLimit=9", 5), ("42", 0), ("42", "5"), ("-1", 5)):
        with pytest.raises(ValueError):
            time_limit_argv(job_id, minutes, "operator", None)
    with pytest.raises(ChangeRefused, match="scheduler.extend_helper"):
        time_limit_argv("42", 5, "sudo", None)


@pytest.mark.parametrize("argv", [[], ["42"], ["42", "5", "x"], ["42;id", "5"], ["42", "+5"], ["42", "0"],
                                  ["42", "9999999"], ["JobId=42", "5"], ["42", "5 Partition=x"]])
def test_the_sudo_helper_takes_two_plain_numbers_and_nothing_else(argv):
    done = subprocess.run([sys.executable, "-I", str(HELPER), *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("pvhpc-extend-job: "), done.stderr


def test_the_sudo_helper_refuses_a_slurm_conf_others_could_write(tmp_path):
    """The slurm.conf it is installed with must be root's alone: it names the plugins scontrol loads as root."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    conf.chmod(0o666)
    helper = tmp_path / "pvhpc-extend-job"
    helper.write_text(HELPER.read_text().replace("SLURM_CONF = None", f'SLURM_CONF = "{conf}"'))
    done = subprocess.run([sys.executable, "-I", str(helper), "42", "5"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "is not root's alone" in done.stderr


def fake_scontrol_helper(tmp_path, shown: str) -> tuple[Path, Path]:
    """The helper, pointed at a stand-in scontrol that prints ``shown`` for "show job" and records each update."""
    calls = tmp_path / "calls"
    scontrol = tmp_path / "scontrol"
    (tmp_path / "shown").write_text(shown)
    scontrol.write_text(f"#!/bin/sh\nif [ \"$1\" = update ]; then echo \"$@\" >> {calls}; else cat {tmp_path / 'shown'}; fi\n")
    scontrol.chmod(0o755)
    helper = tmp_path / "pvhpc-extend-job"
    helper.write_text(HELPER.read_text().replace('SCONTROL = "/usr/bin/scontrol"', f'SCONTROL = "{scontrol}"'))
    return helper, calls


def run_helper(helper: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", str(helper), *argv], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", ["pvhpc-0123456789abcdef", "pvhpc-0123456789abcdef-c1", "pvhpc-0123456789abcdef-c12"])
def test_the_sudo_helper_lengthens_a_session_job_and_its_successors(tmp_path, name):
    helper, calls = fake_scontrol_helper(tmp_path, f"JobId=42 JobName={name} JobState=RUNNING TimeLimit=01:00:00\n")
    done = run_helper(helper, "42", "90")
    assert done.returncode == 0, done.stderr
    assert calls.read_text() == "update JobId=42 TimeLimit=90\n"


@pytest.mark.parametrize("name", ["pvhpc-0123456789abcdef-x1", "pvhpc-0123456789abcdef-c", "pvhpc-123", "other"])
def test_the_sudo_helper_refuses_other_job_names(tmp_path, name):
    helper, calls = fake_scontrol_helper(tmp_path, f"JobId=42 JobName={name} JobState=RUNNING TimeLimit=01:00:00\n")
    done = run_helper(helper, "42", "90")
    assert done.returncode == 1 and "not a pvhpc session's job" in done.stderr
    assert not calls.exists()


@pytest.mark.parametrize("shown", [
    # the owner's Comment= (after the real fields) spells a session name, a running state, a tiny limit
    "JobId=42 JobName=mine JobState=RUNNING TimeLimit=01:00:00 Comment=x JobName=pvhpc-0123456789abcdef\n",
    "JobId=42 JobName=pvhpc-0123456789abcdef JobState=PENDING TimeLimit=01:00:00 Comment=JobState=RUNNING "
    "JobState=RUNNING\n",
    # an array job's two lines: one named like a session, one running
    "JobId=42 JobName=x JobState=PENDING TimeLimit=01:00:00\n"
    "JobId=43 JobName=pvhpc-0123456789abcdef JobState=RUNNING TimeLimit=01:00:00\n"])
def test_the_sudo_helper_believes_only_the_first_of_each_field_of_one_line(tmp_path, shown):
    helper, calls = fake_scontrol_helper(tmp_path, shown)
    done = run_helper(helper, "42", "90")
    assert done.returncode == 1 and done.stderr.startswith("pvhpc-extend-job: "), done.stderr
    assert not calls.exists()


def test_the_sudo_helper_reads_the_time_limit_before_the_owners_comment(tmp_path):
    helper, calls = fake_scontrol_helper(tmp_path, "JobId=42 JobName=pvhpc-0123456789abcdef JobState=RUNNING "
                                                   "TimeLimit=02:00:00 Comment=x TimeLimit=00:01:00\n")
    done = run_helper(helper, "42", "90")
    assert done.returncode == 1 and "only grows" in done.stderr
    assert not calls.exists()


def test_no_more_time_while_a_successor_is_queued_to_continue_the_session(tmp_path, world):
    """The successor takes over before the walltime and ends this job: minutes granted to it would be lost."""
    cfg = site(tmp_path)
    queued = record()
    queued.successor_job_id = "43"
    offered = more_time.offer(queued, cfg)
    assert not offered["allowed"] and offered["why"].startswith("a successor job is already queued")
    with pytest.raises(NotAllowed, match="a successor job is already queued to continue this session") as refused:
        more_time.check(queued, "alice", 5, cfg)
    assert refused.value.field == "continue"
    store, sched, _, granting, counted = world
    store.add(queued)
    with pytest.raises(NotAllowed, match="successor job is already queued"):
        asyncio.run(granting.extend("s1", "alice", 5))
    assert sched.calls == [] and counted == [("refused", 0)]
