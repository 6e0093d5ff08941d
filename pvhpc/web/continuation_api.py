"""Continuation over HTTP (pvhpc/sessions/continuation.py): the owner's ``continue`` switch, at launch and later, and
a successor job's handover ask.

- ``POST /api/v1/sessions/<id>/continue {"continue": true|false}``: the session's owner only (staff see sessions,
  they do not prolong them); an ended session, a partition staff keep continuation off on, or a total past
  ``service.continue_max_total`` answer an error naming ``continue``, and nothing is submitted.
- ``GET /api/v1/sessions/<id>/handover``: a successor job, authenticated by its own report token like any job's
  report (and refused alike, 403, for an unknown session or a wrong token); the answer is what the job may load,
  a path in the user's own state directory, nothing else of the session.
"""

from __future__ import annotations

from pvhpc.web.api import report_token
from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError


def wanted(body) -> bool:
    """The ``continue`` field of a request body, which must be true or false."""
    value = body.get("continue") if isinstance(body, dict) else None
    if not isinstance(value, bool):
        raise APIError("must be true or false", field="continue")
    return value


class ContinueHandler(JSONHandler):
    async def post(self, session_id: str) -> None:
        record = await self.own_session(session_id)
        if record.user != self.current_user:
            raise APIError(f"session {session_id} is {record.user}'s: only its owner decides whether it continues",
                           status=403, field="continue")
        asked = wanted(self.json_body())
        if self.ctx.continuation is None:
            raise APIError("this service does not continue sessions", status=403, field="continue")
        record = await self.ctx.continuation.set_wanted(record, asked)
        self.send(self.session_view(record))


class HandoverHandler(JSONHandler):
    # A successor asks every second while its predecessor saves its state: logged at DEBUG, as the watchdog's asks.
    routine_methods = frozenset({"GET"})

    async def get(self, session_id: str) -> None:
        if self.ctx.continuation is None:
            raise APIError("this service does not continue sessions", status=404)
        self.send(await self.ctx.continuation.handover(session_id, report_token(self.request)))
