"""Session writes that wait for the writer thread together, committed in one transaction (pvhpc/db/groupcommit.py):
as few commits as groups, every unit's outcome its own, nothing of a refused unit written, limits checked against
the group's own new sessions, a plain write keeping its place; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select

from pvhpc import config
from pvhpc.db.groupcommit import commit_together
from pvhpc.db.store import Change, SessionEvent, SessionRecord, Store
from pvhpc.jobs.states import SessionState
from pvhpc.sessions.events import EventBus
from pvhpc.sessions.outcomes import OverLimit
from pvhpc.sessions.service import SessionService
from pvhpc.sessions.spec import parse_spec

from tests.fakes import SubmittingScheduler
from tests.helpers import session_record as record

S = SessionState


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres_url")
    s = Store(url)
    s.open()
    yield s
    s.off_loop.close()
    s.engine.dispose()


def commits_of(store: Store) -> list[int]:
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    return commits


async def held_writer(store: Store, asked):
    """Run the coroutines ``asked()`` makes while the writer thread is busy, so that they wait there together;
    return their results (or errors) once it is free again."""
    gate = threading.Event()
    busy = asyncio.ensure_future(store.off_loop.write(gate.wait, 10))
    await asyncio.sleep(0.05)
    tasks = [asyncio.ensure_future(c) for c in asked()]
    await asyncio.sleep(0.05)   # every one of them queued behind the busy writer
    gate.set()
    await busy
    return await asyncio.gather(*tasks, return_exceptions=True)


def ids(store: Store) -> list[str]:
    return sorted(r.id for r in store.find())


def test_writes_that_wait_together_are_one_transaction(store):
    commits = commits_of(store)
    records = asyncio.run(held_writer(store, lambda: [store.off_loop.add(record(i, job_name=f"pvhpc-{i}"))
                                                      for i in range(30)]))
    assert len(commits) == 1
    assert [r.id for r in records] == [f"s{i}" for i in range(30)] and ids(store) == sorted(f"s{i}" for i in range(30))
    assert all(r.created_at is not None for r in records)   # read back whole, as one at a time

    # The changes too, each with its history row; two changes of one session in one group each see the other.
    changes = asyncio.run(held_writer(store, lambda: [
        *(store.off_loop.change(f"s{i}", Change.to(S.QUEUED, f"job {i}", job_id=str(i))) for i in range(30)),
        store.off_loop.change("s0", Change.to(S.ENDED, "cancelled", end_reason="cancelled")),
        store.off_loop.change("s0", Change.to(S.READY, "too late")),
    ]))
    assert len(commits) == 2
    assert [c.state for c in changes[:30]] == ["queued"] * 30 and changes[0].job_id == "0"
    assert changes[30].state == "ended" and changes[31] is None   # ended is final, in the same group too
    assert [e.state for e in store.events("s0")] == ["submitting", "queued", "ended"]
    assert store.get("s1").job_id == "1" and store.get("s1").state == "queued"


def test_a_refused_unit_leaves_nothing_and_the_others_commit(store):
    def refused_after_writing(db):
        store.add_in(db, record(9, job_name="pvhpc-9"))
        raise OverLimit("no more")

    units = [lambda db: store.add_in(db, record(1, job_name="pvhpc-1")),
             refused_after_writing,
             lambda db: store.add_in(db, record(2, job_name="pvhpc-2")),
             lambda db: store.add_in(db, record(3, job_name="pvhpc-1")),   # a job name taken: the database refuses
             lambda db: store.change_in(db, "s1", Change.to(S.QUEUED, "q", job_id="7"))]
    outcomes = commit_together(store.transaction, units)
    assert [type(o.error).__name__ if o.error else o.value.id for o in outcomes] == \
        ["s1", "OverLimit", "s2", "IntegrityError", "s1"]
    assert ids(store) == ["s1", "s2"]
    assert store.get("s1").state == "queued" and store.get("s1").job_id == "7"
    assert [e.state for e in store.events("s1")] == ["submitting", "queued"] and store.events("s9") == []


def test_a_unit_that_lost_a_deadlock_runs_again_once(store):
    """Another instance's group holding rows in the other order: PostgreSQL aborts one statement with 40P01."""
    from sqlalchemy.exc import OperationalError

    class Deadlock(Exception):
        sqlstate = "40P01"

    tries = {"s1": 0, "s2": 0}

    def deadlocked(i, times):
        def unit(db):
            tries[f"s{i}"] += 1
            store.add_in(db, record(i, job_name=f"pvhpc-{i}"))
            if tries[f"s{i}"] <= times:
                raise OperationalError("UPDATE sessions ...", {}, Deadlock("deadlock detected"))
        return unit

    outcomes = commit_together(store.transaction, [deadlocked(1, 1), deadlocked(2, 2)])
    assert outcomes[0].error is None and isinstance(outcomes[1].error, OperationalError)   # retried once, not twice
    assert tries == {"s1": 4, "s2": 2} and ids(store) == ["s1"]   # s1 ran again with each new pass


def test_a_failed_commit_fails_every_unit_and_writes_nothing(store):
    @contextmanager
    def begin_then_fail():
        with store.transaction() as db:
            yield db
            raise ConnectionError("the database went away at commit")   # rolled back: as a commit that failed

    outcomes = commit_together(begin_then_fail, [lambda db, i=i: store.add_in(db, record(i, job_name=f"pvhpc-{i}"))
                                                 for i in range(3)])
    assert [type(o.error) for o in outcomes] == [ConnectionError] * 3 and all(o.value is None for o in outcomes)
    assert ids(store) == []
    with store.transaction() as db:
        assert list(db.scalars(select(SessionEvent))) == []


def test_a_plain_write_keeps_its_place_among_the_units(store):
    """A unit asked for after a plain write is not written before it, though a group was waiting already."""
    seen = []

    def plain(_):
        seen.append(ids(store))

    asyncio.run(held_writer(store, lambda: [store.off_loop.add(record(1, job_name="pvhpc-1")),
                                            store.off_loop.write(plain, None),
                                            store.off_loop.add(record(2, job_name="pvhpc-2"))]))
    assert seen == [["s1"]] and ids(store) == ["s1", "s2"]


def test_limits_count_the_sessions_recorded_ahead_in_the_same_group(store, tmp_path):
    cfg = config.parse({"partitions": {"gpu": {"walltime": {"max": 600}}}, "limits": {"sessions_per_user": 2},
                        "applications": {"paraview": {"data_roots": [str(tmp_path)]}}}, "site.yaml")
    sched = SubmittingScheduler()
    service = SessionService(cfg, store, sched, EventBus())
    user = getpass.getuser()   # build_job needs an account on this host
    # Four requests of one user's, each its own (walltimes differ), all waiting for the writer thread together.
    specs = [parse_spec(cfg, {"application": "paraview", "walltime": 60 + i}, True) for i in range(4)]
    commits = commits_of(store)
    answers = asyncio.run(held_writer(store, lambda: [service.create(user, spec) for spec in specs]))
    assert [type(a).__name__ for a in answers] == ["SessionRecord", "SessionRecord", "OverLimit", "OverLimit"]
    assert "you already have 2 live sessions" in answers[2].message
    assert len(store.sessions_of(user, live=True)) == 2 and len(sched.submitted) == 2
    assert {a.state for a in answers[:2]} == {"queued"} and all(a.job_id for a in answers[:2])
    # One commit for the four records (two refused), then the two queued changes, together or not.
    assert 2 <= len(commits) <= 3
