"""Personal API tokens: created by a logged-in user, stored hashed, with an expiry, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from pvhpc.db.store import ApiToken, Store, utcnow

TOKEN_PREFIX = "pvhpc_"
MAX_DAYS = 365


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, store: Store):
        self.store = store

    def create(self, user: str, name: str, days: int) -> tuple[ApiToken, str]:
        """A new token; the plain token is returned this once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = ApiToken(user=user, name=name, token_hash=_hash(token),
                          expires_at=utcnow() + timedelta(days=days))
        with self.store.transaction() as db:
            db.add(record)
        return record, token

    def user_for(self, token: str) -> str | None:
        """The token's user if it is valid now (known, not revoked, not expired)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        now = utcnow()
        with self.store.transaction() as db:
            record = db.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
            if record is None or record.revoked_at is not None or (record.expires_at and record.expires_at <= now):
                return None
            # Written at most once a minute: a busy script must not turn every request into a write.
            if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
                record.last_used_at = now
            return record.user

    def list(self, user: str) -> list[ApiToken]:
        with self.store.transaction() as db:
            return list(db.scalars(select(ApiToken).where(ApiToken.user == user).order_by(ApiToken.id)))

    def revoke(self, user: str, token_id: int) -> ApiToken | None:
        with self.store.transaction() as db:
            record = db.get(ApiToken, token_id)
            if record is None or record.user != user:
                return None
            if record.revoked_at is None:
                record.revoked_at = utcnow()
            return record


def describe(record: ApiToken, now: datetime | None = None) -> dict:
    now = now or utcnow()
    state = "revoked" if record.revoked_at else ("expired" if record.expires_at and record.expires_at <= now
                                                  else "active")
    iso = lambda t: t.isoformat() + "Z" if t else None  # noqa: E731
    return {"id": record.id, "name": record.name, "state": state, "created_at": iso(record.created_at),
            "expires_at": iso(record.expires_at), "last_used_at": iso(record.last_used_at)}
