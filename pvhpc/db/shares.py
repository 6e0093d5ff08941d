"""Share grants in the database: made, revoked and looked up, each grant and revoke written with a line in its
session's history in the same transaction (pvhpc/sessions/sharing.py holds the rules; this only stores)."""

from __future__ import annotations

import secrets
from typing import Iterable

from sqlalchemy import select

from pvhpc.db.store import SessionEvent, SessionRecord, ShareGrant, Store, utcnow
from pvhpc.jobs.states import SessionState


class ShareStore:
    def __init__(self, store: Store):
        self.store = store

    def live_of(self, session_id: str) -> list[ShareGrant]:
        """The session's grants that stand, oldest first."""
        with self.store.transaction() as db:
            return list(db.scalars(select(ShareGrant).where(ShareGrant.session_id == session_id,
                                                            ShareGrant.revoked_at.is_(None))
                                   .order_by(ShareGrant.created_at)))

    def all_live(self) -> list[ShareGrant]:
        """Every grant that stands, of sessions not ended."""
        with self.store.transaction() as db:
            return list(db.scalars(select(ShareGrant).join(SessionRecord, SessionRecord.id == ShareGrant.session_id)
                                   .where(ShareGrant.revoked_at.is_(None),
                                          SessionRecord.state != SessionState.ENDED.value)))

    def grant(self, session_id: str, kind: str, name: str, role: str, detail: str) -> ShareGrant | None:
        """A new grant (replacing a standing one for the same sharee), with ``detail`` in the history; None when
        the session has ended meanwhile."""
        with self.store.transaction() as db:
            record = db.get(SessionRecord, session_id, with_for_update=True)
            if record is None or record.state == SessionState.ENDED.value:
                return None
            now = utcnow()
            for old in self._standing(db, session_id, kind, name):
                old.revoked_at = now
            made = ShareGrant(id=secrets.token_urlsafe(12), session_id=session_id, kind=kind, name=name, role=role,
                              created_at=now)
            db.add(made)
            db.add(SessionEvent(session_id=session_id, state=record.state, detail=detail, at=now))
            db.flush()
            db.expunge(made)
            return made

    def revoke(self, session_id: str, kind: str, name: str, detail: str) -> list[ShareGrant]:
        """Revoke the sharee's standing grants (none: nothing written); ``detail`` goes in the history."""
        with self.store.transaction() as db:
            record = db.get(SessionRecord, session_id, with_for_update=True)
            found = self._standing(db, session_id, kind, name) if record is not None else []
            if not found:
                return []
            now = utcnow()
            for grant in found:
                grant.revoked_at = now
            db.add(SessionEvent(session_id=session_id, state=record.state, detail=detail, at=now))
            db.flush()
            for grant in found:
                db.expunge(grant)
            return found

    def note(self, session_id: str, detail: str) -> None:
        """A line in a live session's history (a sharee's connection)."""
        with self.store.transaction() as db:
            record = db.get(SessionRecord, session_id)
            if record is not None and record.state != SessionState.ENDED.value:
                db.add(SessionEvent(session_id=session_id, state=record.state, detail=detail, at=utcnow()))

    def shared_with(self, user: str, groups: Iterable[str]) -> list[tuple[SessionRecord, ShareGrant]]:
        """The live sessions shared with ``user`` or one of ``groups``, each with the grant that lets them in."""
        groups = list(groups)
        with self.store.transaction() as db:
            rows = db.execute(
                select(SessionRecord, ShareGrant).join(ShareGrant, ShareGrant.session_id == SessionRecord.id)
                .where(ShareGrant.revoked_at.is_(None), SessionRecord.state != SessionState.ENDED.value,
                       ((ShareGrant.kind == "user") & (ShareGrant.name == user))
                       | ((ShareGrant.kind == "group") & ShareGrant.name.in_(groups or [""])))
                .order_by(SessionRecord.created_at.desc())).all()
            db.expunge_all()   # a session shared with the user and with a group of theirs comes twice
            return [(record, grant) for record, grant in rows]

    @staticmethod
    def _standing(db, session_id: str, kind: str, name: str) -> list[ShareGrant]:
        return list(db.scalars(select(ShareGrant).where(
            ShareGrant.session_id == session_id, ShareGrant.kind == kind, ShareGrant.name == name,
            ShareGrant.revoked_at.is_(None))))
