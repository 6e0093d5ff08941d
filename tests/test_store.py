"""The store: transitions checked, history kept, schema versioned; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from pvhpc.jobs.states import EndReason, IllegalTransition, SessionState
from pvhpc.db.store import SCHEMA_VERSION, Change, SchemaError, SessionRecord, Store

from tests.helpers import session_record as record

S = SessionState


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    if request.param == "postgres":
        from pvhpc.db.store import Base

        Base.metadata.drop_all(s.engine)
    s.open()
    return s


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


def test_upgrade_from_schema_1_keeps_every_session(tmp_path):
    """A database as pvhpc's first schema made it: 'pvhpc db upgrade' brings it to now with its data."""
    from pvhpc.db.store import ApiToken, Base, SchemaVersion, SessionEvent
    from pvhpc.db.tokens import TokenStore

    url = f"sqlite:///{tmp_path / 'v1.sqlite'}"
    old = Store(url)
    v1_tables = [SessionRecord.__table__, SessionEvent.__table__, SchemaVersion.__table__]
    Base.metadata.create_all(old.engine, tables=v1_tables)
    with old.transaction() as db:
        db.execute(text("DROP INDEX ix_sessions_updated_at"))   # schema 3 added it
        db.add(SchemaVersion(version=1))
    old.add(record(7))
    old.change("s7", Change.to(S.QUEUED, "q", job_id="77"))
    _drop_nodes_and_ranks(old)   # schema 4 added them
    _drop_version(old)           # schema 5 added it
    _drop_continuation(old)      # schema 7 added them

    with pytest.raises(SchemaError, match="schema version 1 is older"):
        Store(url).open()
    upgraded = Store(url)
    upgraded.open(upgrade=True)
    assert upgraded.schema_version() == SCHEMA_VERSION == 7
    assert [(r.id, r.job_id, r.state, r.nodes, r.ranks) for r in upgraded.live()] == [("s7", "77", "queued", 1, 0)]
    assert [e.state for e in upgraded.events("s7")] == ["submitting", "queued"]
    assert ApiToken.__tablename__ in upgraded.engine.dialect.get_table_names(upgraded.engine.connect())
    assert "ix_sessions_updated_at" in {i["name"] for i in inspect(upgraded.engine).get_indexes("sessions")}
    _, token = TokenStore(upgraded).create("alice", "laptop", 1)
    assert TokenStore(upgraded).user_for(token) == "alice"


def _drop_nodes_and_ranks(store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE sessions DROP COLUMN nodes"))
        conn.execute(text("ALTER TABLE sessions DROP COLUMN ranks"))


def _drop_version(store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE sessions DROP COLUMN version"))
        conn.execute(text("DROP TABLE IF EXISTS share_grants"))   # schema 6 added it


def test_upgrade_from_schema_5_makes_share_grants(store):
    """Schema 6 stores sessions' share grants (pvhpc/sessions/sharing.py): sessions of before are shared with nobody."""
    from pvhpc.db.shares import ShareStore

    store.add(record(5))
    _drop_continuation(store)    # schema 7 added them
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE share_grants"))
        conn.execute(text("UPDATE pvhpc_schema SET version = 5"))
    with pytest.raises(SchemaError, match="schema version 5 is older"):
        Store(store.url).open()
    upgraded = Store(store.url)
    upgraded.open(upgrade=True)
    assert upgraded.schema_version() == 7
    shares = ShareStore(upgraded)
    assert shares.live_of("s5") == []
    made = shares.grant("s5", "user", "bob", "view", "shared with user bob (view)")
    assert [(g.id, g.role) for g in shares.live_of("s5")] == [(made.id, "view")]


CONTINUATION_COLUMNS = ("qos", "data_root", "continue_wanted", "continuations", "successor_job_id",
                        "successor_token_hash", "predecessor_job_id")


def _drop_continuation(store) -> None:
    with store.engine.begin() as conn:
        for column in CONTINUATION_COLUMNS:
            conn.execute(text(f"ALTER TABLE sessions DROP COLUMN {column}"))


def test_upgrade_from_schema_6_records_continuation(store):
    """Schema 7 keeps what a successor job needs: sessions of before asked for no continuation and have no
    successor."""
    store.add(record(5))
    _drop_continuation(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE pvhpc_schema SET version = 6"))
    with pytest.raises(SchemaError, match="schema version 6 is older"):
        Store(store.url).open()
    upgraded = Store(store.url)
    upgraded.open(upgrade=True)
    assert upgraded.schema_version() == 7
    old = upgraded.get("s5")
    assert (old.continue_wanted, old.continuations, old.successor_job_id, old.qos) == (False, 0, None, None)
    upgraded.change("s5", Change.to(S.QUEUED, "asked", continue_wanted=True, successor_job_id="9"))
    assert (Store(store.url).get("s5").continue_wanted, Store(store.url).get("s5").successor_job_id) == (True, "9")


def test_upgrade_from_schema_4_records_versions(store):
    """Schema 5 stores the application's version a session runs: its sessions of before ran none."""
    store.add(record(5))
    _drop_version(store)
    _drop_continuation(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE pvhpc_schema SET version = 4"))
    with pytest.raises(SchemaError, match="schema version 4 is older"):
        Store(store.url).open()
    upgraded = Store(store.url)
    upgraded.open(upgrade=True)
    assert upgraded.schema_version() == 7
    assert upgraded.get("s5").version is None
    upgraded.add(record(6, version="5.11-egl"))
    assert Store(store.url).get("s6").version == "5.11-egl"


def test_upgrade_from_schema_3_records_nodes_and_ranks(store):
    """Schema 4 stores what a session asked for: its sessions of before were one process on one node."""
    store.add(record(3, partition="cpu", gpus=0))
    _drop_nodes_and_ranks(store)
    _drop_version(store)
    _drop_continuation(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE pvhpc_schema SET version = 3"))
    with pytest.raises(SchemaError, match="schema version 3 is older"):
        Store(store.url).open()
    upgraded = Store(store.url)
    upgraded.open(upgrade=True)
    assert upgraded.schema_version() == 7
    assert (upgraded.get("s3").nodes, upgraded.get("s3").ranks) == (1, 0)
    upgraded.add(record(4, partition="cpu", gpus=0, nodes=2, ranks=4))
    assert (Store(store.url).get("s4").nodes, Store(store.url).get("s4").ranks) == (2, 4)


def test_tokens_are_stored_hashed_expire_and_revoke(store):
    from datetime import timedelta

    from sqlalchemy import select

    from pvhpc.db.store import ApiToken
    from pvhpc.db.tokens import TokenStore

    tokens = TokenStore(store)
    record, token = tokens.create("alice", "laptop", 30)
    assert tokens.user_for(token) == "alice" and tokens.user_for(token + "x") is None
    assert tokens.user_for("not-a-token") is None
    with store.transaction() as db:
        stored = db.scalar(select(ApiToken))
        assert token not in (stored.token_hash, stored.name) and len(stored.token_hash) == 64
        stored.expires_at = stored.created_at - timedelta(seconds=1)
    assert tokens.user_for(token) is None   # expired
    _, second = tokens.create("alice", "cron", 30)
    assert tokens.revoke("bob", 2) is None   # not bob's
    assert tokens.revoke("alice", 2).revoked_at is not None
    assert tokens.user_for(second) is None


def test_sqlite_file_is_private_and_fixed_at_start(tmp_path):
    import os

    path = tmp_path / "p.sqlite"
    Store(f"sqlite:///{path}").open()
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    Store(f"sqlite:///{path}").open()
    assert path.stat().st_mode & 0o777 == 0o600
