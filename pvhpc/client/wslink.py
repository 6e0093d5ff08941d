"""A minimal wslink 1.x client: enough to authenticate, create a source and fetch a rendered image.

pvhpc uses it to prove that a session answers (demo, doctor, tests, benchmarks).
The users' page speaks the same protocol from its own small JavaScript client
(pvhpc/web/static/wslink.js; see docs/web.md).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from pvhpc.errors import PvhpcError


class WslinkError(PvhpcError):
    """The server answered a call with an error (for example a wrong secret)."""


class WslinkClient:
    def __init__(self, connection: WebSocketClientConnection):
        self._conn = connection
        self._ids = itertools.count()
        self.client_id: str | None = None

    @classmethod
    async def connect(cls, url: str, secret: str, timeout: float = 20, headers: dict | None = None) -> "WslinkClient":
        request = HTTPRequest(url, headers=headers or {}, connect_timeout=timeout, request_timeout=timeout)
        conn = await asyncio.wait_for(websocket_connect(request, max_message_size=64 * 1024 * 1024), timeout)
        client = cls(conn)
        try:
            result = await client.call("wslink.hello", [{"secret": secret}], system=True, timeout=timeout)
        except BaseException:
            client.close()
            raise
        client.client_id = result.get("clientID")
        return client

    async def call(self, method: str, args: list | None = None, system: bool = False, timeout: float = 60) -> Any:
        prefix = "system" if system else "rpc"
        msg_id = f"{prefix}:c0:{next(self._ids)}"
        message = {"wslink": "1.0", "id": msg_id, "method": method, "args": args or [], "kwargs": {}}
        await self._conn.write_message(json.dumps(message))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no answer to {method} within {timeout} s")
            raw = await asyncio.wait_for(self._conn.read_message(), remaining)
            if raw is None:
                raise ConnectionError(f"connection closed while waiting for {method}")
            if isinstance(raw, bytes):
                continue  # binary attachments and publications are not ours to read
            reply = json.loads(raw)
            if reply.get("id") != msg_id:
                continue  # notifications (publish) arrive interleaved
            if "error" in reply:
                err = reply["error"]
                raise WslinkError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
            return reply.get("result")

    async def create_source(self, name: str = "Sphere") -> dict:
        return await self.call("pv.proxy.manager.create", [name, -1])

    async def render(self, size=(400, 300), quality: int = 80) -> bytes:
        """Ask for a still image of the active view; return JPEG bytes."""
        result = await self.call(
            "viewport.image.render", [{"size": list(size), "view": -1, "quality": quality, "mtime": 0}]
        )
        image = result.get("image") if isinstance(result, dict) else None
        if not image:
            raise WslinkError(f"render returned no image: {str(result)[:200]}")
        return base64.b64decode(image)

    async def mouse(self, action: str, x: float, y: float, button: str = "left") -> Any:
        event = {
            "view": -1, "action": action, "x": x, "y": y,
            "buttonLeft": button == "left", "buttonMiddle": button == "middle", "buttonRight": button == "right",
            "shiftKey": False, "ctrlKey": False, "altKey": False, "metaKey": False,
        }
        return await self.call("viewport.mouse.interaction", [event])

    def close(self) -> None:
        self._conn.close()
