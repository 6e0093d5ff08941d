"""``POST /api/v1/sessions/<id>/extend {"minutes": N}``: more time for a running session (sessions/more_time.py).

Who: the session's owner only, by the front end's login or a personal token (both as for the session's other
requests; a browser's POST must come from one of the site's origins, web/base.py). Anyone else, staff included,
is answered as for a session that does not exist: staff end sessions, they do not hand out walltime. The answer
is the session as the API shows it, with its new walltime, end and time left.
"""

from __future__ import annotations

from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError


class ExtendHandler(JSONHandler):
    async def post(self, session_id: str) -> None:
        user = self.require_user()
        body = self.json_body()
        if not isinstance(body, dict):
            raise APIError("the request body must be a JSON object such as {\"minutes\": 30}")
        unknown = sorted(set(body) - {"minutes"})
        if unknown:
            raise APIError("unknown field (known: minutes)", field=unknown[0])
        if "minutes" not in body:
            raise APIError("how many more minutes is missing", field="minutes")
        record = await self.ctx.service.get(session_id)
        if record is None or record.user != user:
            raise APIError(f"no session {session_id}", status=404)
        record = await self.ctx.more_time.extend(session_id, user, body["minutes"])
        self.send(self.session_view(record))
