"""The built-in proxy alone in this process (no pvhpc application, no cluster), in front of a small Tornado
websocket server that stands for a session's server and can be told to misbehave on demand.

``run(test)`` builds a ``Rig``, awaits ``test(rig)`` and stops it; ``record`` makes the store row of a session
the rig's front end is told to route (``rig.frontend.rebuild([...])``).
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import tornado.web
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketHandler, websocket_connect

from pvhpc.config import AuthConfig
from pvhpc.db.store import SessionRecord
from pvhpc.frontends.builtin import BuiltinFrontEnd
from pvhpc.web.auth import make_authenticator


class Upstream(WebSocketHandler):
    """Echoes every frame as it came (text or binary); "close:<code>" makes it close with that code,
    "big:<MiB>" answers that many MiB in one frame, "drop" drops the connection without a close frame,
    "halfdrop" writes the header of a 1000-byte frame and drops the connection before its payload,
    "bigdrop" writes 100 KiB of a 1 MiB frame, then 10 KiB more, then drops the connection,
    "split:<bytes>" answers a text frame of that many bytes with its header written 50 ms before its payload
    (as aiohttp, wslink's server, writes frames over 16 KiB: header and payload apart).
    At /greet it speaks first, in the same breath as its handshake answer."""

    closed: list = []

    def open(self):
        if self.request.path == "/greet":
            self.write_message("hello first")

    async def on_message(self, message):
        if isinstance(message, str) and message.startswith("split:"):
            size = int(message[6:])
            header = bytes((0x81, 126)) + size.to_bytes(2, "big") if size < 65536 else \
                bytes((0x81, 127)) + size.to_bytes(8, "big")
            stream = self.ws_connection.stream
            await stream.write(header)
            await asyncio.sleep(0.05)
            await stream.write(b"s" * size)
        elif isinstance(message, str) and message.startswith("close:"):
            self.close(int(message[6:]), "asked to")
        elif isinstance(message, str) and message.startswith("big:"):
            self.write_message(b"\x07" * (int(message[4:]) << 20), binary=True)
        elif message == "drop":
            self.request.connection.stream.close()
        elif message == "bigdrop":
            stream = self.ws_connection.stream
            await stream.write(bytes((0x82, 127)) + (1 << 20).to_bytes(8, "big") + b"b" * (100 << 10))
            await asyncio.sleep(0.05)
            await stream.write(b"b" * (10 << 10))
            await asyncio.sleep(0.05)
            stream.close()
        elif message == "halfdrop":
            stream = self.ws_connection.stream
            await stream.write(bytes((0x81, 126)) + (1000).to_bytes(2, "big"))
            await asyncio.sleep(0.05)
            stream.close()
        else:
            self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        Upstream.closed.append(self.close_code)


def record(sid, port, state="ready", user="alice") -> SessionRecord:
    return SessionRecord(id=sid, user=user, state=state, host="127.0.0.1", port=port)


class Rig:
    def __init__(self, staff=(), session_origin=None, sharing=None):
        self.frontend = BuiltinFrontEnd("unused")
        auth = make_authenticator(AuthConfig(kind="local", user="alice", header="X-Remote-User", staff=tuple(staff),
                                                  users_trust_each_other=False))
        upstream_sockets = bind_sockets(0, "127.0.0.1")
        proxy_sockets = bind_sockets(0, "127.0.0.1")
        self.upstream_port = upstream_sockets[0].getsockname()[1]
        self.port = proxy_sockets[0].getsockname()[1]
        # The site's own pages are the proxy's own origin (service.allowed_origins).
        service = SimpleNamespace(allowed_origins=(f"http://127.0.0.1:{self.port}",))
        if session_origin:
            session_origin = f"{session_origin}:{self.port}"
        ctx = SimpleNamespace(auth=auth, config=SimpleNamespace(service=service, frontend=SimpleNamespace(
            session_origin=session_origin)), sharing=sharing)
        self.servers = [HTTPServer(tornado.web.Application([(r"/(?:ws|greet)", Upstream)])),
                        HTTPServer(tornado.web.Application(self.frontend.handlers(ctx)))]
        self.servers[0].add_sockets(upstream_sockets)
        self.servers[1].add_sockets(proxy_sockets)
        Upstream.closed = []

    def url(self, sid, path="ws"):
        return f"ws://127.0.0.1:{self.port}/proxy?sessionId={sid}&path={path}"

    async def refused(self, sid, path="ws"):
        try:
            conn = await websocket_connect(self.url(sid, path))
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)["error"] if e.response and e.response.body else ""
        conn.close()
        return 101, ""

    def stop(self):
        for s in self.servers:
            s.stop()


def run(coro_fn, **kwargs):
    async def go():
        rig = Rig(**kwargs)
        try:
            return await coro_fn(rig)
        finally:
            rig.stop()
    return asyncio.run(go())
