"""The built-in front end: pvhpc's own Tornado server proxies session websockets.

(And, for applications whose server serves its own web client, the whole
session at /session/<id>/: served.py.)

For sites without Apache, and the embedded default. It answers at the same URL
as Apache's front end, ``/proxy?sessionId=<id>&path=<path>``, so a client cannot
tell which one it talks to. It checks more than Apache can: the session must be
routable *and* belong to the user making the request (or the user is staff);
any other id is answered 404 before the upgrade, as if it did not exist.
When a session stops being routable its open connections are closed.

How the proxy reaches a server is a Connector: straight over the network by
default, or through an SSH tunnel when pvhpc runs off the cluster (ssh.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Iterable

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import (
    WebSocketClientConnection, WebSocketClosedError, WebSocketError, WebSocketHandler, websocket_connect,
)

from pvhpc.db.store import SessionRecord
from pvhpc.frontends.base import FrontEnd
from pvhpc.frontends.routes import SESSION_ID, Route, RouteTable
from pvhpc.web.errors import ErrorAnswers

log = logging.getLogger("pvhpc.frontends.builtin")

PATH = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")   # no dots: nothing but the server's own paths
MAX_MESSAGE = 64 * 1024 * 1024   # a full-resolution image frame fits with room to spare
CONNECT_TIMEOUT = 15
SESSION_GONE = (1001, "the session ended")


class Connector:
    """How the proxy reaches a session's server: the host:port its websocket client dials for a route."""

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
    """What the proxy carries, told to whoever counts it (pvhpc.metrics sets its own); by default nobody."""

    def opened(self) -> None:
        """A client's websocket was joined to its session's server."""

    def carried(self, direction: str, nbytes: int) -> None:
        """One message of ``nbytes`` passed, "to_server" or "to_client"."""


class BuiltinFrontEnd(FrontEnd):
    def __init__(self, session_url: str, connector: Connector | None = None):
        super().__init__(session_url)
        self.routes = RouteTable(self.routable)
        self.connections: dict[str, set[SessionProxyHandler]] = {}
        self.connector = connector or DirectConnector()
        self.traffic = ProxyTraffic()

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
        from pvhpc.frontends.served import ServedSessionHandler

        args = {"frontend": self, "auth": ctx.auth}
        return [(r"/proxy", SessionProxyHandler, args),
                (r"/session/([A-Za-z0-9_-]{1,128})(/.*)?", ServedSessionHandler,
                 {**args, "private_headers": ("Authorization", "Cookie", ctx.auth.config.header)})]

    async def stop(self) -> None:
        for session_id in list(self.connections):
            self._close_connections(session_id)
        await self.connector.close()

    def opened(self, handler: "SessionProxyHandler") -> None:
        self.connections.setdefault(handler.route.session_id, set()).add(handler)
        self.traffic.opened()

    def closed(self, handler: "SessionProxyHandler") -> None:
        handlers = self.connections.get(handler.route.session_id)
        if handlers is not None:
            handlers.discard(handler)
            if not handlers:
                del self.connections[handler.route.session_id]

    def _close_connections(self, session_id: str) -> None:
        for handler in list(self.connections.pop(session_id, ())):
            handler.close(*SESSION_GONE)


class SessionProxyHandler(ErrorAnswers, WebSocketHandler):
    """One client websocket, joined to one websocket on the session's server; frames pass unchanged.

    Refusals before the upgrade answer JSON as the API does; so does anything unexpected (ErrorAnswers).
    """

    def initialize(self, frontend: BuiltinFrontEnd, auth) -> None:
        self.frontend = frontend
        self.auth = auth
        self.route: Route | None = None
        self.upstream: WebSocketClientConnection | None = None
        self._pump: asyncio.Task | None = None

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE

    async def get(self, *args, **kwargs) -> None:
        session_id = self.get_query_argument("sessionId", "")
        path = self.get_query_argument("path", "ws")
        route = self._own_route(session_id)
        if route is None:
            return self._refuse(404, "no such session")
        if not PATH.match(path):
            return self._refuse(400, f"path {path!r} is not a server path")
        if not self.wants_websocket():
            return self._refuse(400, "this URL takes websocket connections only")
        await self.join(route, path, *args, **kwargs)

    def wants_websocket(self) -> bool:
        return self.request.headers.get("Upgrade", "").lower() == "websocket"

    async def join(self, route: Route, path: str, *args, **kwargs) -> None:
        """Open the server's websocket at ``path`` (and query), then take the client's upgrade."""
        session_id = route.session_id
        try:
            target = await self.frontend.connector.address(route)
            request = HTTPRequest(f"ws://{target}/{path}", connect_timeout=CONNECT_TIMEOUT,
                                  request_timeout=CONNECT_TIMEOUT)
            self.upstream = await websocket_connect(request, max_message_size=MAX_MESSAGE)
        except (OSError, HTTPClientError, WebSocketError, asyncio.TimeoutError) as e:
            log.warning("session %s… does not answer at %s: %s", session_id[:6], route.target, e)
            return self._refuse(502, "the session's server does not answer")
        if self.frontend.routes.get(session_id) != route:
            self.upstream.close(*SESSION_GONE)   # it ended while we connected
            return self._refuse(404, "no such session")
        self.route = route
        await super().get(*args, **kwargs)
        if self.ws_connection is None or self._pump is None:
            self.upstream.close()   # the upgrade itself was refused (bad headers, foreign origin)

    def open(self, *args, **kwargs) -> None:
        self.frontend.opened(self)
        self._pump = asyncio.ensure_future(self._from_server())

    async def on_message(self, message) -> None:
        # Awaited by Tornado before it reads the next frame: a slow server slows the client down.
        try:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            self.close(1011, "the session's server went away")
            return
        self.frontend.traffic.carried("to_server", _size(message))

    async def _from_server(self) -> None:
        while True:
            message = await self.upstream.read_message()
            if message is None:
                break
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                return
            self.frontend.traffic.carried("to_client", _size(message))
        self.close(*_passable(self.upstream.close_code, self.upstream.close_reason))

    def on_close(self) -> None:
        if self.route is not None:
            self.frontend.closed(self)
        if self.upstream is not None:
            self.upstream.close(*_passable(self.close_code, self.close_reason))

    def _own_route(self, session_id: str, staff_too: bool = True) -> Route | None:
        """The session's route if it is routable and the caller's own (or the caller is staff, with ``staff_too``);
        an unknown id and another user's look alike."""
        route = self.frontend.routes.get(session_id) if SESSION_ID.match(session_id) else None
        if route is None:
            return None
        user = self.auth.user(self.request)
        if user is None or (user != route.user and not (staff_too and self.auth.is_staff(user))):
            return None
        return route

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": message}))


def _size(message) -> int:
    return len(message) if isinstance(message, bytes) else len(message.encode())


def _passable(code: int | None, reason: str | None) -> tuple:
    """A close code one side gave, if it may be sent on to the other (1005, 1006, 1015 only describe, never travel)."""
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code, reason
    return (1000, None) if code is None else (1011, "the other side closed abnormally")
