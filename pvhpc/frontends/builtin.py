"""The built-in front end: pvhpc's own Tornado server proxies session websockets.

(And, for applications whose server serves its own web client, the whole
session at /session/<id>/: served.py.)

For sites without Apache, and the embedded default. It answers at the same URL
as Apache's front end, ``/proxy?sessionId=<id>&path=<path>``, so a client cannot
tell which one it talks to. It checks more than Apache can: the session must be
routable *and* belong to the user making the request (or the user is staff);
any other id is answered 404 before the upgrade, as if it did not exist.
After the upgrade the connection is carried as bytes (relay.py), as fast as
Apache's mod_proxy_wstunnel; when a session stops being routable its open
connections are closed.

How the proxy reaches a server is a Connector: straight over the network by
default, or through an SSH tunnel when pvhpc runs off the cluster (ssh.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Iterable

from urllib.parse import urlsplit

from tornado.routing import HostMatches, Rule
from tornado.web import RequestHandler

from pvhpc.db.store import SessionRecord
from pvhpc.frontends.base import FrontEnd
from pvhpc.frontends.relay import ANSWER_HEADERS, HandshakeError, WebSocketRelay, upgrade_request, why_unreachable
from pvhpc.frontends.routes import Route, RouteTable
from pvhpc.jobs.ids import SESSION_ID, SESSION_ID_TEXT
from pvhpc.web import origins
from pvhpc.web.errors import APIError, ErrorAnswers
from pvhpc.web.ratelimit import HeldAtOnce

log = logging.getLogger("pvhpc.frontends.builtin")

PATH = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")   # no dots: nothing but the server's own paths
CONNECT_TIMEOUT = 15
SESSION_GONE = (1001, "the session ended")
IDLE_CHECK = 30.0   # seconds between looks for websockets that carried nothing for limits.proxy_idle_timeout


class Connector:
    """How the proxy reaches a session's server: the host:port it dials for a route."""

    async def address(self, route: Route) -> str:
        raise NotImplementedError

    def forget(self, session_id: str) -> None:
        """The session's route went away or changed: release what was held for it."""

    async def close(self) -> None:
        pass


class DirectConnector(Connector):
    """pvhpc can reach the nodes itself: dial node:port."""

    async def address(self, route: Route) -> str:
        return route.target


class ProxyTraffic:
    """What the proxy carries, told to whoever counts it (pvhpc.metrics gives its own); by default nobody."""

    def opened(self) -> None:
        """A client's websocket was joined to its session's server."""

    def carried(self, direction: str, nbytes: int) -> None:
        """``nbytes`` more passed "to_server" or "to_client" (websocket frames as they travel, headers and all)."""


class Holding:
    """One connection a user holds through the proxy: whose, and when it last carried a byte."""

    __slots__ = ("user", "at", "frontend")

    def __init__(self, frontend: "BuiltinFrontEnd", user: str):
        self.frontend, self.user, self.at = frontend, user, time.monotonic()

    def carried(self, direction: str, nbytes: int) -> None:
        self.at = time.monotonic()
        self.frontend.traffic.carried(direction, nbytes)


class BuiltinFrontEnd(FrontEnd):
    """Also bounds what one user holds open through it (``limits``): at most
    ``limits.proxied_connections_per_user`` websockets and HTTP requests under way at once (one more is answered
    429), and a websocket that carries nothing either way for ``limits.proxy_idle_timeout`` seconds is closed.
    Every connection of a session is closed when the session stops being routable (its walltime at the latest)."""

    @classmethod
    def from_config(cls, config, *, served_applications: frozenset[str] = frozenset(), ssh_link=None,
                    traffic: ProxyTraffic | None = None, limits=None) -> "BuiltinFrontEnd":
        connector = None
        if ssh_link is not None:   # SSH mode: the nodes are reached through the login host
            from pvhpc.frontends.tunnel import TunnelConnector

            connector = TunnelConnector(ssh_link)
        return cls(config.session_url, connector, served_applications, traffic, limits)

    def __init__(self, session_url: str, connector: Connector | None = None,
                 served_applications: frozenset[str] = frozenset(), traffic: ProxyTraffic | None = None,
                 limits=None):
        """``connector``: how the proxy reaches a session's server (default: it dials node:port); ``traffic``:
        told what the proxy carries (pvhpc.metrics counts it; default: nobody); ``limits``: the site's limits
        (a Limits), whose bounds on proxied connections it keeps (None: no bounds)."""
        super().__init__(session_url, served_applications)
        self.routes = RouteTable(self.routable)
        self.connections: dict[str, set[WebSocketRelay]] = {}
        self.connector = connector or DirectConnector()
        self.traffic = traffic or ProxyTraffic()
        self.limits = limits
        self.held = HeldAtOnce()   # connections held, by user
        self.holdings: dict[WebSocketRelay, Holding] = {}
        self._idle_watch: asyncio.Task | None = None

    def open_connections(self) -> int:
        return sum(len(relays) for relays in self.connections.values())

    def update(self, record: SessionRecord) -> None:
        # A changed route (ended, or moved after a requeue) leaves the old server: drop its connections.
        if self.routes.apply(record):
            self._close_connections(record.id)
            self.connector.forget(record.id)

    def rebuild(self, records: Iterable[SessionRecord]) -> None:
        before = set(self.routes.targets())
        self.routes.reset(records)
        for session_id in before | set(self.connections):
            if self.routes.get(session_id) is None:
                self._close_connections(session_id)
                self.connector.forget(session_id)

    def handlers(self, ctx) -> list:
        from pvhpc.frontends.served import NotSessionContent, ServedSessionHandler, SessionOriginRedirect

        args = {"frontend": self, "auth": ctx.auth}
        served = {**args, "private_headers": ("Authorization", "Cookie", ctx.auth.config.header)}
        session_path = rf"/session/({SESSION_ID_TEXT})(/.*)?"
        session_origin = ctx.config.frontend.session_origin
        if session_origin is None:
            return [(r"/proxy", SessionProxyHandler, {**args, "sharing": getattr(ctx, "sharing", None)}),
                    (session_path, ServedSessionHandler, {**served, "allowed_origins": ctx.config.service.allowed_origins})]
        # Sessions' content on a host of its own (web/content.py): there, only /session/; here, a redirect there.
        session_host = Rule(HostMatches(re.escape(urlsplit(session_origin).hostname) + "$"), [
            (session_path, ServedSessionHandler, {**served, "allowed_origins": (session_origin,), "sandboxed": False}),
            (r".*", NotSessionContent)])
        return [session_host, (r"/proxy", SessionProxyHandler, {**args, "sharing": getattr(ctx, "sharing", None)}),
                (r"/session/.*", SessionOriginRedirect, {"session_origin": session_origin})]

    async def stop(self) -> None:
        if self._idle_watch is not None:
            self._idle_watch.cancel()
            self._idle_watch = None
        for session_id in list(self.connections):
            self._close_connections(session_id)
        await self.connector.close()

    # -- what each user holds -------------------------------------------------------------------------

    def take(self, user: str) -> bool:
        """Count one more connection of ``user``'s, if the bound allows it (release it with ``release``)."""
        return self.held.take(user, self.limits.proxied_connections_per_user if self.limits is not None else None)

    def release(self, user: str) -> None:
        self.held.release(user)

    def too_many(self) -> tuple[str, dict]:
        """The 429's message and the bound it names."""
        limit = self.limits.proxied_connections_per_user
        return (f"too many connections: this site allows {limit} at once per user through its front end "
                "(limits.proxied_connections_per_user); close some (tabs, clients) and try again",
                {"limit": "limits.proxied_connections_per_user"})

    def holding(self, user: str) -> Holding:
        return Holding(self, user)

    def opened(self, relay: WebSocketRelay, holding: Holding | None = None) -> bool:
        """A joined websocket, kept until it or its session ends; whether it was kept (with its ``holding``, the
        user's count of it: released when it ends)."""
        if relay.done:
            return False   # the client left while joining
        self.connections.setdefault(relay.session_id, set()).add(relay)
        if holding is not None:
            self.holdings[relay] = holding
            self._watch_idle()
        relay.on_done = self.closed
        self.traffic.opened()
        return True

    def closed(self, relay: WebSocketRelay) -> None:
        relays = self.connections.get(relay.session_id)
        if relays is not None:
            relays.discard(relay)
            if not relays:
                del self.connections[relay.session_id]
        holding = self.holdings.pop(relay, None)
        if holding is not None:
            self.release(holding.user)

    def _watch_idle(self) -> None:
        idle = self.limits.proxy_idle_timeout if self.limits is not None else 0
        if idle and (self._idle_watch is None or self._idle_watch.done()):
            self._idle_watch = asyncio.ensure_future(self._end_idle(idle))

    async def _end_idle(self, idle: float) -> None:
        """Close websockets that carried nothing either way for ``idle`` seconds (a live wslink one never: its
        server pings every 30 s); stop looking once none is left."""
        while self.holdings:
            await asyncio.sleep(min(IDLE_CHECK, idle / 2))
            now = time.monotonic()
            for relay, holding in list(self.holdings.items()):
                if now - holding.at >= idle:
                    log.info("session %s…: a websocket that carried nothing for %d s is closed (%s)",
                             relay.session_id[:6], idle, "limits.proxy_idle_timeout")
                    relay.end(1001, f"nothing carried for {idle:g} s (limits.proxy_idle_timeout)")

    def _close_connections(self, session_id: str) -> None:
        for relay in list(self.connections.pop(session_id, ())):
            relay.end(*SESSION_GONE)


class SessionProxyHandler(ErrorAnswers, RequestHandler):
    """One client websocket, joined to one websocket on the session's server; frames pass unchanged.

    Everything is checked before the upgrade (owner, path, origin, that the server takes the upgrade);
    after it the connection is carried as bytes (relay.py) until either side closes or the session stops
    being routable. Refusals answer JSON as the API does; so does anything unexpected (ErrorAnswers).
    """

    def initialize(self, frontend: BuiltinFrontEnd, auth, sharing=None) -> None:
        self.frontend = frontend
        self.auth = auth
        self.sharing = sharing   # sessions/sharing.py: who else the owner let in
        self.grant = None        # the caller's share of the session, where they are not its owner

    async def get(self) -> None:
        # Either case of the key: trame's client lowercases the whole URL it is given (?sessionid=...).
        session_id = self.get_query_argument("sessionId", "") or self.get_query_argument("sessionid", "")
        path = self.get_query_argument("path", "ws")
        route = await self._own_route(session_id)
        if route is None:
            return self._refuse(404, "no such session")
        if not PATH.match(path):
            return self._refuse(400, f"path {path!r} is not a server path")
        await self.join(route, path)

    def wants_websocket(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"

    async def join(self, route: Route, path: str) -> None:
        """Pass the client's upgrade on to the server at ``path`` (and query); on its 101, join the two."""
        if not self.wants_websocket():
            return self._refuse(400, "this URL takes websocket connections only")
        tokens = {t.strip().lower() for t in self.request.headers.get("Connection", "").split(",")}
        if "upgrade" not in tokens or "Sec-WebSocket-Key" not in self.request.headers:
            return self._refuse(400, "not a websocket upgrade (Connection: Upgrade and Sec-WebSocket-Key needed)")
        if self._cross_site():
            return self._refuse(403, "websockets from another site's pages are refused")
        if not self.frontend.take(self.user):
            return self._refuse(429, *self.frontend.too_many())
        holding = self.frontend.holding(self.user)
        kept = False
        try:
            kept = await self._join(route, path, holding)
        finally:
            if not kept:
                self.frontend.release(self.user)

    async def _join(self, route: Route, path: str, holding: Holding) -> bool:
        """Dial, pass on the upgrade, join; whether the joined websocket is kept (and ``holding`` with it)."""
        session_id = route.session_id
        relay = WebSocketRelay(session_id, holding.carried)
        try:
            target = await self.frontend.connector.address(route)
            host, _, port = target.rpartition(":")
            answer, headers = await relay.dial(host, int(port), upgrade_request(path, target, self.request.headers),
                                               CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, HandshakeError) as e:
            why = why_unreachable(e, CONNECT_TIMEOUT)
            log.warning("session %s… does not answer at %s: %s", session_id[:6], route.target, why)
            self._refuse(502, f"the session's server does not answer: {why}")
            return False
        if answer.code != 101:
            relay.abandon()
            log.warning("session %s…: its server answered the upgrade with %d %s", session_id[:6], answer.code,
                        answer.reason)
            self._refuse(502, f"the session's server refused the websocket ({answer.code})")
            return False
        if self.frontend.routes.get(session_id) != route:
            relay.abandon()   # it ended while we connected
            self._refuse(404, "no such session")
            return False
        self.set_status(101)
        self.clear_header("Content-Type")
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        for name in ANSWER_HEADERS:
            if name in headers:
                self.set_header(name, headers[name])
        self.finish()   # the 101, logged as any answer
        await relay.join(self.detach())
        kept = self.frontend.opened(relay, holding)
        if self.grant is not None:
            # A sharee: said in the history now the connection stands, not at an attempt the server refused.
            try:
                await self.sharing.connected(session_id, self.user, self.grant)
            except Exception:   # the history line is not worth the joined connection
                log.exception("session %s…: %s's connection could not be noted in its history", session_id[:6],
                              self.user)
        if self.frontend.routes.get(session_id) != route:
            relay.end(*SESSION_GONE)   # it ended while the client's connection changed hands
        return kept

    def _cross_site(self) -> bool:
        return origins.cross_site_websocket(self.request.headers)

    async def _own_route(self, session_id: str) -> Route | None:
        """The session's route if it is routable and the caller's own; an unknown id and another user's look
        alike. Staff included: a session's server is its user's code, and whatever it sends a client that
        joined it (a trame client takes templates from it) would run with the joiner's login; staff, who never
        get another's secret, have no business there."""
        route = self.frontend.routes.get(session_id) if SESSION_ID.match(session_id) else None
        if route is None:
            return None
        user = await self.auth.user_off_loop(self.request)
        if user is None:
            return None
        if user != route.user:
            # A sharee: the session's server still wants their own key (share_gate.py), and holds a view-only
            # one to the picture; here only whether the owner let them in at all, and the history says they came.
            grant = await self.sharing.grant_of(session_id, user) if self.sharing is not None else None
            if grant is None:
                return None
            self.grant = grant   # the history says they came once the connection is joined (_join)
        self.user = user   # whose connection this is, in the front end's count
        return route

    def _refuse(self, status: int, message: str, extra: dict | None = None) -> None:
        """Answer as every pvhpc error does (web/errors.py), without raising: a refusal here may come after the
        request was partly handled (a dial that failed), where there is nothing to unwind."""
        self.write_error(status, exc_info=(APIError, APIError(message, status=status, extra=extra), None))
