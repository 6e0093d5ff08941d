"""Instances sharing one real PostgreSQL: one poller at a time, a dead one replaced, each other's changes seen."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from pvhpc.sessions.events import EventBus
from pvhpc.db.leadership import LOCK_KEY, AdvisoryLockLeadership, Leadership, leadership_for
from pvhpc.jobs.states import SessionState
from pvhpc.db.store import Change, Store
from pvhpc.sessions.storefeed import StoreFeed

from tests.helpers import session_record as record

S = SessionState


def hold(leadership: Leadership) -> bool:
    return asyncio.run(leadership.hold())


def test_sqlite_is_one_instance_and_always_leads(tmp_path):
    leadership = leadership_for(Store(f"sqlite:///{tmp_path / 'db.sqlite'}").engine)
    assert not leadership.shared and hold(leadership)


@pytest.mark.postgres
def test_one_leader_at_a_time_and_the_next_takes_over(fresh_postgres_url):
    first, second = (leadership_for(Store(fresh_postgres_url).engine) for _ in range(2))
    assert isinstance(first, AdvisoryLockLeadership) and first.shared
    assert hold(first) and not hold(second)
    assert hold(first) and not hold(second)      # keeps it while its connection lives
    first.release()
    assert hold(second) and not hold(first)


@pytest.mark.postgres
def test_a_leader_whose_connection_dies_loses_the_lead(fresh_postgres_url):
    """What a SIGKILLed leader looks like to PostgreSQL: its backend gone, and the lock with it."""
    first, second = (leadership_for(Store(fresh_postgres_url).engine) for _ in range(2))
    assert hold(first)
    admin = Store(fresh_postgres_url).engine
    with admin.connect() as conn:
        killed = conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :k "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"k": LOCK_KEY}).scalars().all()
    assert killed == [True]
    assert hold(second)
    assert not hold(first)   # notices on its next check instead of polling beside the new leader
    second.release()
    assert hold(first)


def feed_on(url: str) -> tuple[StoreFeed, EventBus, list]:
    """A feed on this instance's own store of the shared database, its bus, and what the bus was given."""
    mine = Store(url)
    mine.open()
    bus = EventBus()
    seen = []
    bus.on_change(seen.append)
    return StoreFeed(mine, bus), bus, seen


@pytest.mark.postgres
def test_feed_publishes_a_peers_changes_once_and_never_its_own_again(fresh_postgres_url):
    feed, bus, seen = feed_on(fresh_postgres_url)
    mine, peers = feed.store, Store(fresh_postgres_url)

    peers.add(record(1))
    peers.change("s1", Change.to(S.QUEUED, "submitted", job_id="11"))
    assert asyncio.run(feed.read_once()) == 1
    assert [(r.id, r.state, r.job_id) for r in seen] == [("s1", "queued", "11")]
    assert asyncio.run(feed.read_once()) == 0                       # nothing new: nothing published

    # A change made here is published by the one who made it; the feed does not echo it.
    bus.publish(mine.change("s1", Change.to(S.STARTING, "running on gpu01", node="gpu01")))
    assert asyncio.run(feed.read_once()) == 0
    peers.change("s1", Change.to(S.ENDED, "cancelled by its user", end_reason="cancelled"))
    assert asyncio.run(feed.read_once()) == 1
    assert [r.state for r in seen] == ["queued", "starting", "ended"]


@pytest.mark.postgres
def test_feed_is_not_led_astray_by_a_peer_whose_clock_runs_ahead(fresh_postgres_url, caplog):
    from datetime import timedelta

    from pvhpc.db.store import utcnow

    feed, _, seen = feed_on(fresh_postgres_url)
    fast_peer, peer = Store(fresh_postgres_url), Store(fresh_postgres_url)
    fast_peer.add(record(1))
    with fast_peer.transaction() as db:   # written by a host whose clock is 5 minutes fast
        db.execute(text("UPDATE sessions SET updated_at = :t WHERE id = 's1'"),
                   {"t": utcnow() + timedelta(minutes=5)})
    assert asyncio.run(feed.read_once()) == 1
    assert "ahead of this host's clock" in caplog.text
    peer.add(record(2))                   # a peer with the right time, afterwards: still seen
    assert asyncio.run(feed.read_once()) == 1
    assert [r.id for r in seen] == ["s1", "s2"]
