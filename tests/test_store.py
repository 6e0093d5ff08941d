"""The store: transitions checked, history kept, schema versioned; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from pvhpc.states import EndReason, IllegalTransition, SessionState
from pvhpc.store import SCHEMA_VERSION, Change, SchemaError, SessionRecord, Store

S = SessionState


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    if request.param == "postgres":
        from pvhpc.store import Base

        Base.metadata.drop_all(s.engine)
    s.open()
    return s


def record(i: int = 0, **kw) -> SessionRecord:
    fields = dict(id=f"s{i}", user="alice", application="paraview", partition="gpu", gpus=1, walltime_minutes=60,
                  request_key="k", state=S.SUBMITTING.value, detail="", job_name=f"pvhpc-{i}", secret="x",
                  report_token_hash="h")
    fields.update(kw)
    return SessionRecord(**fields)


def test_moves_are_checked_and_recorded(store):
    store.add(record())
    assert store.change("s0", Change.to(S.QUEUED, "submitted", job_id="7")).job_id == "7"
    assert store.change("s0", Change.to(S.QUEUED, "submitted", job_id="7")) is None   # no news, no write
    store.change("s0", Change.to(S.READY, "listening", host="n1", port=1234))
    with pytest.raises(IllegalTransition):
        store.change("s0", Change.to(S.SUBMITTING, "again"))
    ended = store.change("s0", Change.to(S.ENDED, "cancelled", end_reason=EndReason.CANCELLED))
    assert ended.end_reason == "cancelled" and ended.ended_at is not None
    assert store.change("s0", Change.to(S.READY, "late report")) is None   # ended is final
    assert [e.state for e in store.events("s0")] == ["submitting", "queued", "ready", "ended"]
    assert store.live() == []
    store.add(record(1))
    with pytest.raises(ValueError, match="cannot set secret"):
        store.change("s1", Change(S.QUEUED, "", None, (("secret", "y"),)))


def test_live_sessions_survive_reopening(store):
    store.add(record(1))
    store.change("s1", Change.to(S.QUEUED, "q", job_id="9"))
    again = Store(store.url)
    again.open()
    assert [(r.id, r.state, r.job_id) for r in again.live()] == [("s1", "queued", "9")]


def test_schema_version_is_checked(store):
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE pvhpc_schema SET version = 99"))
    with pytest.raises(SchemaError, match="schema version 99 is newer than this pvhpc knows"):
        Store(store.url).open()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE pvhpc_schema SET version = 0"))
    with pytest.raises(SchemaError, match="run 'pvhpc db upgrade'"):
        Store(store.url).open()


def test_sqlite_uses_wal(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'w.sqlite'}")
    s.open()
    with s.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
