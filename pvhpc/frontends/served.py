"""A session whose server serves its own web client (a trame app), proxied whole at /session/<id>/.

HTTP requests and websocket upgrades under ``/session/<id>/`` go to the same
path on the session's server. Only the session's owner gets through, staff
included in no exception: the client that comes back is the user's own code,
so nobody else may load it; and it is kept off pvhpc's origin, in a sandbox or on
an origin of its own (pvhpc/web/content.py). Any other id, or a session
whose application does not serve its own client, answers 404 as if it did not
exist (the same look as /proxy).

Requests from another site's pages (an Origin that is not this site) are refused.
What the server must not see is left out: the request's credentials
(``Authorization``, ``Cookie``) and the trusted front end's user header; and what
it must not set (``Set-Cookie``) is dropped from its answers.
"""

from __future__ import annotations

import asyncio
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.web import RequestHandler

from pvhpc.errors import PvhpcError
from pvhpc.web import content
from pvhpc.frontends.builtin import CONNECT_TIMEOUT, SessionProxyHandler
from pvhpc.frontends.relay import why_unreachable
from pvhpc.web import origins
from pvhpc.web.errors import ErrorAnswers

log = logging.getLogger("pvhpc.frontends.served")

HTTP_TIMEOUT = 300
# Its own client, not Tornado's shared one (10 requests at once, for every user): one user's server holding its
# requests open must not queue everyone else's. Room for many users' requests under way, each user held to
# limits.proxied_connections_per_user; an answer is buffered whole, so it is bounded too.
MAX_REQUESTS = 256
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_client: AsyncHTTPClient | None = None


def http_client() -> AsyncHTTPClient:
    global _client
    if _client is None:
        _client = AsyncHTTPClient(force_instance=True, max_clients=MAX_REQUESTS, max_body_size=MAX_ANSWER_BYTES)
    return _client
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, never forwarded; Host and Content-Length are
# the client library's to set for the new request; Set-Cookie would land on pvhpc's origin.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailer", "transfer-encoding", "upgrade"}
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length"}
NOT_RETURNED = HOP_BY_HOP | {"content-length", "set-cookie"}
METHODS_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}


class ServedSessionHandler(SessionProxyHandler):
    """``/session/<id>/``, where sessions' content is served: on pvhpc's origin in a sandbox, or on the site's
    session origin (``sandboxed`` false; pvhpc/web/content.py says why and how)."""

    def initialize(self, frontend, auth, allowed_origins=(), private_headers=(), sandboxed=True) -> None:
        super().initialize(frontend, auth)
        self.allowed_origins = tuple(allowed_origins)
        self.private = {name.lower() for name in private_headers}
        self.sandboxed = sandboxed

    def prepare(self) -> None:
        # The app's server may not check where a request comes from: a page of another site must not drive it
        # with the user's login. Reading (a link followed from elsewhere) is fine; a websocket upgrade is held
        # to the same rule by the proxy's own origin check (SessionProxyHandler._cross_site). The rule is
        # pvhpc's own (web/origins.py), and a sibling site the browser calls "same-site" is refused too.
        why = origins.refusal(self.request.method, self.request.headers, self.allowed_origins,
                              self.auth.browser_credentials, by_token=False, fetch_site=True)
        if why:
            self._refuse(403, why if why == origins.CROSS_SITE else f"{origins.CROSS_SITE}: {why}")

    async def get(self, session_id: str, rest: str | None = None) -> None:
        route = await self._served_route(session_id)
        if route is None:
            return self._refuse(404, "no such session")
        if rest is None:
            # The client's relative URLs need the trailing slash.
            query = f"?{self.request.query}" if self.request.query else ""
            return self.redirect(f"{session_id}/{query}")
        if self.wants_websocket():
            return await self.join(route, self._upstream_path(session_id))
        await self._forward(route, session_id)

    async def _any(self, session_id: str, rest: str | None = None) -> None:
        route = await self._served_route(session_id)
        if route is None or rest is None:
            return self._refuse(404, "no such session")
        await self._forward(route, session_id)

    post = put = patch = delete = head = options = _any


    def _cross_site(self) -> bool:
        return origins.cross_site_websocket(self.request.headers, opaque_allowed=self.sandboxed)

    async def _served_route(self, session_id: str):
        route = await self._own_route(session_id)
        return route if route is not None and self.frontend.serves_http(route) else None

    def _upstream_path(self, session_id: str) -> str:
        """The request's path after /session/<id>/, as the client sent it (still percent-encoded), and its query."""
        path = self.request.path[len(f"/session/{session_id}/"):]
        return f"{path}?{self.request.query}" if self.request.query else path

    async def _forward(self, route, session_id: str) -> None:
        # Each request under way counts among the connections the user holds (limits.proxied_connections_per_user).
        if not self.frontend.take(self.user):
            return self._refuse(429, *self.frontend.too_many())
        try:
            await self._pass_on(route, session_id)
        finally:
            self.frontend.release(self.user)

    async def _pass_on(self, route, session_id: str) -> None:
        headers = {name: value for name, value in self.request.headers.get_all()
                   if name.lower() not in NOT_FORWARDED and name.lower() not in self.private}
        method = self.request.method
        try:
            target = await self.frontend.connector.address(route)
            request = HTTPRequest(
                f"http://{target}/{self._upstream_path(session_id)}", method=method, headers=headers,
                body=self.request.body if method in METHODS_WITH_BODY else None, allow_nonstandard_methods=True,
                follow_redirects=False, decompress_response=False,
                connect_timeout=CONNECT_TIMEOUT, request_timeout=HTTP_TIMEOUT)
            answer = await http_client().fetch(request, raise_error=False)
        except (OSError, HTTPClientError, asyncio.TimeoutError) as e:
            why = why_unreachable(e, CONNECT_TIMEOUT)
            log.warning("session %s… does not answer HTTP at %s: %s", session_id[:6], route.target, why)
            return self._refuse(502, f"the session's server does not answer: {why}")
        if answer.code == 599:   # the client library's own "no answer" (timeout, reset)
            why = why_unreachable(answer.error, HTTP_TIMEOUT) if answer.error else "no answer"
            log.warning("session %s… gave no HTTP answer at %s: %s", session_id[:6], route.target, why)
            return self._refuse(502, f"the session's server does not answer: {why}")
        self.clear()
        for name in ("Content-Type", "Server", "Date"):
            self.clear_header(name)   # Tornado's own defaults: the app's answer says these itself
        self.set_status(answer.code, answer.reason)
        for name, value in answer.headers.get_all():
            if name.lower() not in NOT_RETURNED:
                self.add_header(name, value)
        for name, value in content.answer_headers(self.sandboxed):
            # The app's own policy is kept beside pvhpc's (a browser enforces both); the rest are pvhpc's.
            (self.add_header if name == "Content-Security-Policy" else self.set_header)(name, value)
        if method == "HEAD" or answer.code in (204, 304):
            return self.finish()
        self.finish(answer.body or b"")


class SessionOriginRedirect(RequestHandler):
    """``/session/...`` on pvhpc's origin when the site serves sessions' content on an origin of its own: there."""

    def initialize(self, session_origin: str) -> None:
        self.session_origin = session_origin

    def get(self, *args) -> None:
        self.redirect(self.session_origin + self.request.uri)

    head = get


class NotSessionContent(ErrorAnswers, RequestHandler):
    """Anything but ``/session/`` on the session origin: nothing of pvhpc's is served there."""

    def prepare(self) -> None:
        raise PvhpcError("only sessions' own content is served on this host; pvhpc itself is at its public URL",
                         status=404)
