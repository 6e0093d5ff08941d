"""The API of sharing a session (pvhpc/sessions/sharing.py holds the rules; docs/sharing.md):

- ``GET /api/v1/sessions/<id>/shares``: the grants that stand, for the session's owner;
- ``POST /api/v1/sessions/<id>/shares`` ``{"user": NAME | "group": NAME, "role": "view" | "control"}``: share it
  (a new grant for the same sharee replaces theirs);
- ``DELETE /api/v1/sessions/<id>/shares/<name>`` (``?kind=group`` for a group): revoke.

Only the owner shares (staff neither: a grant hands out a key to the session). A session the caller can neither
own nor see as a sharee answers 404, exactly like an unknown id; a sharee who tries to share answers 403.
"""

from __future__ import annotations

from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError
from pvhpc.sessions.sharing import describe


class SharesBase(JSONHandler):
    async def session_for_owner(self, session_id: str):
        user = self.require_user()
        record = await self.ctx.service.get(session_id)
        if record is None:
            raise APIError(f"no session {session_id}", status=404)
        if record.user != user and not self.ctx.auth.is_staff(user) \
                and await self.ctx.sharing.grant_of(session_id, user) is None:
            raise APIError(f"no session {session_id}", status=404)
        return record, user

    async def answer(self, record, status: int = 200) -> None:
        grants = await self.ctx.sharing.grants(record)
        self.send({"id": record.id, "shares": [describe(g) for g in grants]}, status=status)


class SharesHandler(SharesBase):
    async def get(self, session_id: str) -> None:
        record, user = await self.session_for_owner(session_id)
        self.ctx.sharing.check_owner(record, user)
        await self.answer(record)

    async def post(self, session_id: str) -> None:
        record, user = await self.session_for_owner(session_id)
        await self.ctx.sharing.share(record, user, self.json_body())
        await self.answer(record, status=201)


class ShareHandler(SharesBase):
    async def delete(self, session_id: str, name: str) -> None:
        record, user = await self.session_for_owner(session_id)
        await self.ctx.sharing.unshare(record, user, name, self.get_query_argument("kind", "user"))
        await self.answer(record)
