"""Personal API tokens: created by a logged-in user, stored hashed, with an expiry, revocable."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from pvhpc.db.store import ApiToken, Store, utcnow

log = logging.getLogger("pvhpc.db.tokens")
TOKEN_PREFIX = "pvhpc_"
MAX_DAYS = 365
STAMP_EVERY = timedelta(minutes=1)   # last_used_at: a busy script must not turn every request into a write


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, store: Store):
        self.store = store
        self._stamping: set[asyncio.Task] = set()

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
        record = self.valid(token)
        if record is not None and _due_for_stamp(record):
            self.stamp(record.id)
        return record.user if record is not None else None

    async def user_off_loop(self, token: str) -> str | None:
        """``user_for`` for the event loop: the check on a reader thread; the last-used stamp, when due, on
        the writer thread, not waited for (a busy database delays a stamp, never the request)."""
        if not token.startswith(TOKEN_PREFIX):
            # Not a personal token (a job's report token, on every report and watchdog ask): no reader thread.
            return None
        record = await self.store.off_loop.read(self.valid, token)
        if record is None:
            return None
        if _due_for_stamp(record):
            task = asyncio.ensure_future(self.store.off_loop.write(self.stamp, record.id))
            self._stamping.add(task)
            task.add_done_callback(self._stamped)
        return record.user

    def valid(self, token: str) -> ApiToken | None:
        """The token's record if it is valid now (known, not revoked, not expired)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        now = utcnow()
        with self.store.transaction() as db:
            record = db.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(token)))
            if record is None or record.revoked_at is not None or (record.expires_at and record.expires_at <= now):
                return None
            return record

    def stamp(self, token_id: int) -> None:
        """Note that the token was used now."""
        with self.store.transaction() as db:
            record = db.get(ApiToken, token_id)
            if record is not None and _due_for_stamp(record):
                record.last_used_at = utcnow()

    def _stamped(self, task: asyncio.Task) -> None:
        self._stamping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not note a token's last use: %s", str(task.exception()).splitlines()[0][:200])

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


def _due_for_stamp(record: ApiToken) -> bool:
    return record.last_used_at is None or utcnow() - record.last_used_at > STAMP_EVERY


def describe(record: ApiToken, now: datetime | None = None) -> dict:
    now = now or utcnow()
    state = "revoked" if record.revoked_at else ("expired" if record.expires_at and record.expires_at <= now
                                                  else "active")
    iso = lambda t: t.isoformat() + "Z" if t else None  # noqa: E731
    return {"id": record.id, "name": record.name, "state": state, "created_at": iso(record.created_at),
            "expires_at": iso(record.expires_at), "last_used_at": iso(record.last_used_at)}
