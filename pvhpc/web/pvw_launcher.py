"""The ParaViewWeb launcher REST API, so unchanged ParaViewWeb clients (wslink SmartConnect) work.

POST /paraview/ (or /paraview) with {"application": ...} answers 200 with the
session (id, sessionURL, secret, ...) once it is ready, within
service.launcher_wait seconds. A session still queued then is kept and the
client gets 503; its retry of the same request attaches to that session
instead of submitting a second job. GET and DELETE /paraview/<id> return the
session (DELETE ends it first).

A body with ``"attach": "<id>"`` launches nothing: it answers the caller's own
ready session. That is how pvhpc's page opens a session in an application's
own client without putting its secret in a URL: it opens
``/apps/<name>/?attach=<id>``, the unmodified client POSTs its URL query here
(as SmartConnect does), and the secret comes back in this answer only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pvhpc.jobs.ids import SESSION_ID
from pvhpc.sessions.spec import parse_spec
from pvhpc.jobs.states import SessionState
from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError

S = SessionState


class LaunchHandler(JSONHandler):
    async def post(self) -> None:
        user = self.require_user()
        body = self.json_body()
        if isinstance(body, dict) and body.get("attach") is not None:
            return await self._attach(user, body)
        spec = parse_spec(self.ctx.config, body, strict=False, user=user)
        service = self.ctx.service
        record = await service.create(user, spec, attach=True)
        record = await service.wait_for(record.id, [S.READY], self.ctx.config.service.launcher_wait)
        if record.state == S.READY.value:
            await service.hand_out(record)
            return self.send(self.for_page(self.session_view(record)))
        about = {"id": record.id, "state": record.state, "detail": record.detail}
        if record.state == S.ENDED.value:
            raise APIError(f"the session ended before it was ready: {record.detail}", status=503, extra=about)
        raise APIError(
            f"the session is {record.state} ({record.detail}) after "
            f"{self.ctx.config.service.launcher_wait:.0f} s; it is kept: repeat the same request to attach to it",
            status=503, extra=about,
        )


    async def _attach(self, user: str, body: dict) -> None:
        session_id = body["attach"]
        if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
            raise APIError("must be the id of one of your sessions", field="attach")
        record = await self.ctx.service.get(session_id)
        # Not the owner (staff included: attaching hands out the secret): a user it is shared with gets their own key
        # instead, where their role lets them use the application's own client; anyone else, no such session.
        grant = await self.grant_for(record)
        if record is None or (record.user != user and grant is None):
            raise APIError(f"no session {session_id}", status=404, field="attach")
        wanted = body.get("application")
        if wanted is not None and wanted != record.application:
            raise APIError(f"session {session_id} runs {record.application}, not {wanted}: open it with "
                           f"{record.application}'s own client", field="application")
        if record.state != S.READY.value:
            raise APIError(f"session {session_id} is {record.state}, not ready"
                           + (f" ({record.detail})" if record.detail else ""), status=409, field="attach",
                           extra={"id": record.id, "state": record.state})
        if grant is not None:
            return self.send(self.for_page(self._for_sharee(record, grant)))
        await self.ctx.service.hand_out(record)
        self.send(self.for_page(self.session_view(record)))

    def _for_sharee(self, record, grant) -> dict:
        """The session as its sharee attaches to it: their own key as its secret (sessions/sharing.py), never the
        owner's; view grants only in pvhpc's quick view, as the application's own client would change the view for
        everyone as it starts (docs/sharing.md)."""
        from pvhpc.sessions.sharing import opens_own_client

        if not opens_own_client(self.ctx.config.applications.get(record.application), grant.role):
            raise APIError(f"session {record.id} is shared with you to view only: open it from pvhpc's page, in its "
                           f"quick view ({record.application}'s own client would change the view for everyone)",
                           status=403, field="attach")
        return self.ctx.sharing.view_for_sharee(self.session_view(record, with_secret=False), record, grant)

    def for_page(self, session: dict) -> dict:
        """The session with USE_HOST / USE_HOSTNAME in its URL already filled in with the page's host, as newer
        SmartConnects do themselves: the Visualizer's own (older) SmartConnect connects to the URL as given.
        The page's host is the request's Origin (a launch POST from a browser always has one, and only the
        site's own origins get this far); without one the URL is left for the client."""
        origin = self.request.headers.get("Origin")
        url = session.get("sessionURL")
        if not (origin and url and "USE_HOST" in url):
            return session
        page = urlsplit(origin)
        if page.hostname:
            host = page.netloc.rsplit("@", 1)[-1]
            url = url.replace("USE_HOSTNAME", page.hostname).replace("USE_HOST", host)
        return {**session, "sessionURL": url}


class LaunchedSessionHandler(JSONHandler):
    async def get(self, session_id: str) -> None:
        record = await self.own_session(session_id)
        # Staff see every session, but its secret only its owner: it is the key to the user's server.
        self.send(self.session_view(record, with_secret=record.user == self.current_user))

    async def delete(self, session_id: str) -> None:
        record = await self.ctx.service.cancel(await self.own_session(session_id))
        self.send(self.session_view(record))
