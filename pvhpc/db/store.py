"""The store: sessions and their state history, in SQLAlchemy 2 (SQLite with WAL by default).

Every change of a session's state goes through ``Store.change``, which checks
the move against states.TRANSITIONS and writes the new state and a history row
in one transaction. The schema carries a version number; ``upgrade`` applies
the migrations in MIGRATIONS in order, so an upgrade keeps the data.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cached_property
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlalchemy import (
    ForeignKey, Index, Integer, String, Text, create_engine, event, func, inspect, select, text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from pvhpc.db.offloop import OffLoopStore
from pvhpc.errors import PvhpcError
from pvhpc.jobs.states import SessionState, check_transition

SCHEMA_VERSION = 7
# A lock held elsewhere (a staff command, another instance, a migration) is waited for at most this long per
# statement: then the call fails, and the request that made it gets a clean 503 ("retry shortly") rather than
# hanging. The service makes its calls in threads (``Store.off_loop``): only that request waits, not the
# service's event loop.
LOCK_WAIT_SECONDS = 3


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SessionRecord(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    application: Mapped[str] = mapped_column(String(64))
    partition: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    # What a parallel session asked for (pvhpc/sessions/parallel_request.py): its nodes and MPI ranks; ranks 0 is one
    # process, as every session was before schema 4.
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    ranks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    walltime_minutes: Mapped[int] = mapped_column(Integer)
    # The application's version it runs (its environment modules: pvhpc/jobs/modules.py); None: no versions.
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Same user + same request: a launcher retry attaches here instead of submitting again.
    request_key: Mapped[str] = mapped_column(String(64), index=True)
    handed_out: Mapped[bool] = mapped_column(default=False)

    state: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")          # queue reason, last news
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)

    job_name: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    node: Mapped[str | None] = mapped_column(String(255), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    secret: Mapped[str] = mapped_column(String(128))
    report_token_hash: Mapped[str] = mapped_column(String(64))
    expected_start: Mapped[datetime | None] = mapped_column(nullable=True)
    # What a successor job needs to be submitted as the first was (schema 7): the QoS and the data root the
    # request named (None for sessions made before: no QoS, the application's first data root).
    qos: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data_root: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Continuation (pvhpc/sessions/continuation.py): the owner asked for it; how many successors have taken
    # over; the successor submitted and the hash of its report token, until it takes over; the job it took over
    # from, while that one saves its state.
    continue_wanted: Mapped[bool] = mapped_column(default=False, server_default="0")
    continuations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    successor_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    successor_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    predecessor_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Indexed: instances sharing a database follow each other's changes by it (pvhpc/sessions/storefeed.py).
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    running_since: Mapped[datetime | None] = mapped_column(nullable=True)
    ready_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)

    events: Mapped[list["SessionEvent"]] = relationship(
        back_populates="session", order_by="SessionEvent.id", cascade="all, delete-orphan"
    )

    @property
    def session_state(self) -> SessionState:
        return SessionState(self.state)


class SessionEvent(Base):
    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_session", "session_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")

    session: Mapped[SessionRecord] = relationship(back_populates="events")


class ApiToken(Base):
    """A personal API token for scripts. Only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ShareGrant(Base):
    """A session shared by its owner with a user or a Unix group (pvhpc/sessions/sharing.py). The sharee's key to
    the session's server is derived from the session's secret and this grant's id (pvhpc/sessions/share_keys.py),
    so nothing secret is stored here; a revoked grant stays, for the session's history."""

    __tablename__ = "share_grants"
    __table_args__ = (Index("ix_share_grants_session", "session_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))        # "user" or "group"
    name: Mapped[str] = mapped_column(String(64))       # the user's or the group's name
    role: Mapped[str] = mapped_column(String(8))        # "view" or "control"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SchemaVersion(Base):
    __tablename__ = "pvhpc_schema"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)


def _add_api_tokens(conn) -> None:
    ApiToken.__table__.create(conn)


def _index_updated_at(conn) -> None:
    next(i for i in SessionRecord.__table__.indexes if i.name == "ix_sessions_updated_at").create(conn)


def _add_nodes_and_ranks(conn) -> None:
    # Sessions made before were one process on one node: the defaults say so.
    for column, default in (("nodes", 1), ("ranks", 0)):
        conn.execute(text(f"ALTER TABLE sessions ADD COLUMN {column} INTEGER NOT NULL DEFAULT {default}"))


def _add_version(conn) -> None:
    # Sessions made before ran an application without versions.
    conn.execute(text("ALTER TABLE sessions ADD COLUMN version VARCHAR(64)"))


def _add_share_grants(conn) -> None:
    ShareGrant.__table__.create(conn)


def _add_continuation(conn) -> None:
    # Sessions made before asked for no continuation and kept no QoS or data root (they need none: they have no
    # successor to submit).
    for column in ("qos VARCHAR(64)", "data_root TEXT", "continue_wanted BOOLEAN NOT NULL DEFAULT FALSE",
                   "continuations INTEGER NOT NULL DEFAULT 0", "successor_job_id VARCHAR(32)",
                   "successor_token_hash VARCHAR(64)", "predecessor_job_id VARCHAR(32)"):
        conn.execute(text(f"ALTER TABLE sessions ADD COLUMN {column}"))


# version -> function that brings a database from version-1 to version, inside one transaction.
MIGRATIONS = {
    2: _add_api_tokens,
    3: _index_updated_at,
    4: _add_nodes_and_ranks,
    5: _add_version,
    6: _add_share_grants,
    7: _add_continuation,
}


class SchemaError(PvhpcError):
    """The database's schema is not the one this pvhpc uses; the message says which command fixes it."""


@dataclass(frozen=True)
class Change:
    """One move of a session: its new state and the fields that move sets."""

    state: SessionState
    detail: str = ""
    end_reason: str | None = None
    fields: tuple[tuple[str, object], ...] = ()
    # A line of the session's history for a change of fields only (more time): the session keeps the state and
    # detail it has when the change is written, which may be newer than the caller's.
    note: str = ""

    @classmethod
    def to(cls, state: SessionState, detail: str = "", end_reason=None, **fields) -> "Change":
        reason = end_reason.value if hasattr(end_reason, "value") else end_reason
        return cls(state, detail, reason, tuple(sorted(fields.items())))

    @classmethod
    def noted(cls, note: str, **fields) -> "Change":
        """Set ``fields`` of a live session and say so in its history (``note``), its state and detail as they are
        when it is written (change_in takes them from the row; the state given here is never used)."""
        return cls(SessionState.UNKNOWN, "", None, tuple(sorted(fields.items())), note)

    def is_news_for(self, record: "SessionRecord") -> bool:
        """Whether applying this to ``record`` as it stands would change anything."""
        if self.note:
            return not all(getattr(record, k) == v for k, v in self.fields)
        return not (self.state.value == record.state and self.detail == record.detail
                    and all(getattr(record, k) == v for k, v in self.fields))


SETTABLE = frozenset({"job_id", "node", "host", "port", "expected_start", "running_since", "ready_at",
                      "handed_out", "walltime_minutes",   # walltime_minutes: more time (sessions/more_time.py)
                      # continuation (pvhpc/sessions/continuation.py): a successor's token becomes the session's
                      "continue_wanted", "continuations", "successor_job_id", "successor_token_hash",
                      "predecessor_job_id", "report_token_hash", "job_name"})


class Store:
    def __init__(self, url: str, echo: bool = False):
        self.url = url
        backend = make_url(url).get_backend_name()
        kwargs: dict = {"echo": echo, "future": True}
        if backend == "sqlite":
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": LOCK_WAIT_SECONDS}
        else:
            # A database server restarted under us leaves dead pooled connections: test each before use.
            kwargs["pool_pre_ping"] = True
        if backend == "postgresql":
            kwargs["connect_args"] = {
                "connect_timeout": 5,
                "options": f"-c lock_timeout={LOCK_WAIT_SECONDS * 1000} -c statement_timeout={LOCK_WAIT_SECONDS * 5000}",
                # The server's timeouts do not help when the database host drops off the network: then only
                # TCP notices, and without these it would take the kernel's default of many minutes.
                "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                "tcp_user_timeout": 10_000,
            }
        self.engine: Engine = create_engine(url, **kwargs)
        if backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    # -- schema -----------------------------------------------------------
    def schema_version(self) -> int | None:
        if not inspect(self.engine).has_table(SchemaVersion.__tablename__):
            return None
        with self._sessions() as db:
            return db.scalar(select(SchemaVersion.version))

    def open(self, upgrade: bool = False) -> None:
        """Create a new database, or check that an existing one is current (or upgrade it when asked)."""
        version = self.schema_version()
        self._narrow_permissions()
        if version is None:
            if inspect(self.engine).has_table(SessionRecord.__tablename__):
                raise SchemaError(f"{self.safe_url}: has pvhpc tables but no schema version; refusing to touch it")
            Base.metadata.create_all(self.engine)
            with self._sessions.begin() as db:
                db.add(SchemaVersion(version=SCHEMA_VERSION))
            return
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.safe_url}: schema version {version} is newer than this pvhpc knows ({SCHEMA_VERSION}); "
                "upgrade pvhpc"
            )
        if version < SCHEMA_VERSION:
            if not upgrade:
                raise SchemaError(
                    f"{self.safe_url}: schema version {version} is older than this pvhpc's ({SCHEMA_VERSION}); "
                    "back it up, then run 'pvhpc db upgrade'"
                )
            self.upgrade(version)

    def _narrow_permissions(self) -> None:
        """A SQLite file holds session secrets: readable by the service account alone, checked at every start."""
        if self.engine.url.get_backend_name() != "sqlite" or not self.engine.url.database:
            return
        for suffix in ("", "-wal", "-shm"):
            path = Path(self.engine.url.database + suffix)
            if path.exists() and path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)

    def upgrade(self, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.engine.begin() as conn:
                MIGRATIONS[target](conn)
                conn.execute(text("UPDATE pvhpc_schema SET version = :v"), {"v": target})

    @cached_property
    def off_loop(self) -> OffLoopStore:
        """This store's calls for the event loop (pvhpc.db.offloop): one writer thread for every caller."""
        return OffLoopStore(self)

    @property
    def threads_share_data(self) -> bool:
        """Whether connections made in different threads see the same database (not so an in-memory SQLite)."""
        return not (self.engine.url.get_backend_name() == "sqlite"
                    and self.engine.url.database in (None, "", ":memory:"))

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # -- access ------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as db:
            yield db

    def add(self, record: SessionRecord) -> SessionRecord:
        with self.transaction() as db:
            return self.add_in(db, record)

    @staticmethod
    def add_in(db: Session, record: SessionRecord) -> SessionRecord:
        """``add`` inside the open transaction ``db`` (pvhpc.db.groupcommit's unit; run again after a rollback, it
        adds the record anew: the rollback made it new again, expunged or not)."""
        db.add(record)
        db.add(SessionEvent(session_id=record.id, state=record.state, detail=record.detail))
        db.flush()
        db.expunge(record)   # its own from here on: a later write to the same session in the group reads it anew
        return record

    def get(self, session_id: str) -> SessionRecord | None:
        with self._sessions() as db:
            return db.get(SessionRecord, session_id)

    def find(self, *where, order_newest_first: bool = True, limit: int | None = None,
             db: Session | None = None) -> list[SessionRecord]:
        """Sessions matching ``where``; with ``db``, read inside that open transaction (its own writes seen)."""
        query = select(SessionRecord).where(*where)
        query = query.order_by(SessionRecord.created_at.desc() if order_newest_first else SessionRecord.created_at)
        if limit:
            query = query.limit(limit)
        if db is not None:
            return list(db.scalars(query))
        with self._sessions() as db:
            return list(db.scalars(query))

    def live(self) -> list[SessionRecord]:
        return self.find(SessionRecord.state != SessionState.ENDED.value, order_newest_first=False)

    def sessions_of(self, user: str | None, state: SessionState | None = None, live: bool = False,
                    limit: int | None = None, db: Session | None = None) -> list[SessionRecord]:
        """``user``'s sessions (everyone's for None), newest first: those in ``state``, or with ``live`` every
        one that has not ended. With ``db``, read inside that open transaction."""
        where = [] if user is None else [SessionRecord.user == user]
        if live:
            where.append(SessionRecord.state != SessionState.ENDED.value)
        if state is not None:
            where.append(SessionRecord.state == state.value)
        return self.find(*where, limit=limit, db=db)

    def not_handed_out(self, user: str, request_key: str, db: Session | None = None) -> SessionRecord | None:
        """A live session of ``user``'s made for ``request_key`` that no launcher answer has handed out yet."""
        found = self.find(SessionRecord.user == user, SessionRecord.request_key == request_key,
                          SessionRecord.state != SessionState.ENDED.value, SessionRecord.handed_out.is_(False),
                          limit=1, db=db)
        return found[0] if found else None

    def count_live(self) -> int:
        with self._sessions() as db:
            return db.scalar(select(func.count()).select_from(SessionRecord)
                             .where(SessionRecord.state != SessionState.ENDED.value))

    def versions_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """(id, updated_at) of the sessions written at or after ``since``, by any instance sharing this database."""
        query = select(SessionRecord.id, SessionRecord.updated_at).where(SessionRecord.updated_at >= since)
        with self._sessions() as db:
            return [(row.id, row.updated_at) for row in db.execute(query)]

    def get_many(self, session_ids: list[str]) -> list[SessionRecord]:
        with self._sessions() as db:
            return list(db.scalars(select(SessionRecord).where(SessionRecord.id.in_(session_ids))))

    def events(self, session_id: str) -> list[SessionEvent]:
        with self._sessions() as db:
            return list(db.scalars(select(SessionEvent).where(SessionEvent.session_id == session_id)
                                   .order_by(SessionEvent.id)))

    def change(self, session_id: str, change: Change, decided_on: datetime | None = None) -> SessionRecord | None:
        """Apply one move; return the updated record, or None when it changed nothing.

        The record is read again inside the transaction, so a move decided on
        stale data (the tracker's poll racing a user's cancel) is checked
        against the state as it is now. With ``decided_on`` (the ``updated_at``
        of the version the move was decided on) a session written since is left
        alone: the decision is stale (a job's report landed while the tracker
        waited for squeue) and the next poll cycle decides again.
        """
        with self.transaction() as db:
            return self.change_in(db, session_id, change, decided_on)

    @staticmethod
    def change_in(db: Session, session_id: str, change: Change,
                  decided_on: datetime | None = None) -> SessionRecord | None:
        """``change`` inside the open transaction ``db`` (pvhpc.db.groupcommit's unit)."""
        # populate_existing: in a group of writes an earlier unit may have loaded the row; read it afresh, locked.
        record = db.get(SessionRecord, session_id, with_for_update=True, populate_existing=True)
        if record is None:
            return None
        old = record.session_state
        new = old if change.note else change.state
        if change.note:   # the fields only, with a history line of its own: the state and detail stay as they are
            change = Change(old, record.detail, None, change.fields, change.note)
        fields = dict(change.fields)
        unknown = fields.keys() - SETTABLE
        if unknown:
            raise ValueError(f"cannot set {', '.join(sorted(unknown))} through a change")
        if old is SessionState.ENDED or (decided_on is not None and record.updated_at != decided_on):
            return None
        check_transition(old, new)
        if not change.is_news_for(record):
            return None
        now = utcnow()
        for key, value in fields.items():
            setattr(record, key, value)
        if new is not old or change.detail != record.detail:
            db.add(SessionEvent(session_id=record.id, state=new.value, detail=change.detail, at=now))
        elif change.note:
            db.add(SessionEvent(session_id=record.id, state=new.value, detail=change.note, at=now))
        record.state = new.value
        record.detail = change.detail
        record.updated_at = now
        if new is SessionState.ENDED:
            record.end_reason = change.end_reason
            record.ended_at = now
        db.flush()
        db.expunge(record)   # the caller's from here on, whatever a later write in the group does to the row
        return record


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={LOCK_WAIT_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
