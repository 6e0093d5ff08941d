"""A small real HTTP + websocket server in place of a trame app: a server that serves its own web client.

``/`` is its page; ``/echo/...`` answers what it was sent (method, path as sent, query, headers, body) and
tries to set a cookie; ``/ws`` echoes websocket frames. Run it in the test's own event loop
(``listen``) or on a thread of its own (``ServedAppThread``, for tests that block, e.g. against Apache).
"""

from __future__ import annotations

import asyncio
import json
import threading

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketHandler

PAGE = b"<!doctype html><title>served app</title><p>the session's own client</p>"


class Page(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/html")
        self.finish(PAGE)


class Echo(tornado.web.RequestHandler):
    def _echo(self):
        self.set_header("Content-Type", "application/json")
        self.set_cookie("app_cookie", "from-the-app")
        self.finish(json.dumps({
            "method": self.request.method, "path": self.request.path, "query": self.request.query,
            "headers": {k.lower(): v for k, v in self.request.headers.get_all()},
            "body": self.request.body.decode(errors="replace"),
        }))

    get = post = put = delete = _echo


class Frames(WebSocketHandler):
    def check_origin(self, origin):
        return True   # as a trame app's server: it checks no Origin, so a refusal seen in a test is the front end's

    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


def application() -> tornado.web.Application:
    return tornado.web.Application([(r"/", Page), (r"/echo/.*", Echo), (r"/ws", Frames)])


def listen() -> tuple[HTTPServer, int]:
    """Serve in the running event loop on a free loopback port."""
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(application())
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


class ServedAppThread:
    """The same server on a thread with its own event loop."""

    def __init__(self):
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server, self.port = listen()
            self._started.set()
            await self._stop.wait()
            server.stop()

        asyncio.run(main())

    def start(self) -> "ServedAppThread":
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the served app did not start in 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
