"""A minimal wslink 1.x client: enough to authenticate, create a source and fetch a rendered image (asked for,
or pushed as the Visualizer's server delivers them).

pvhpc uses it to prove that a session answers (demo, doctor, tests, benchmarks).
The users' page speaks the same protocol through wslink's own browser client (npm wslink 1.x, installed by
``pvhpc runtime install`` and served at /static/vendor/wslink.js; see docs/web.md).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from pvhpc.errors import PvhpcError


class WslinkError(PvhpcError):
    """The server answered a call with an error (for example a wrong secret)."""


class WslinkClient:
    def __init__(self, connection: WebSocketClientConnection):
        self._conn = connection
        self._ids = itertools.count()
        self.client_id: str | None = None
        # Pushed images (viewport.image.push) come as a publication naming a binary attachment that arrives
        # just before it, announced by name: kept here while a call waits for its own answer.
        self._announced: list[str] = []
        self._attachments: dict[str, bytes] = {}
        self._publications: list[tuple[str, Any]] = []

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
        try:
            await self._conn.write_message(json.dumps(message))
        except WebSocketClosedError:   # closed before the call could be sent: the same as closed while waiting
            raise ConnectionError(f"connection closed before {method} could be sent") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no answer to {method} within {timeout} s")
            raw = await asyncio.wait_for(self._conn.read_message(), remaining)
            if raw is None:
                raise ConnectionError(f"connection closed while waiting for {method}")
            reply = self._keep(raw)
            if reply is None or reply.get("id") != msg_id:
                continue  # attachments and publications arrive interleaved
            if "error" in reply:
                err = reply["error"]
                raise WslinkError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
            return reply.get("result")

    def _keep(self, raw: str | bytes) -> dict | None:
        """A message that is not an attachment or a publication, else None (the others are kept)."""
        if isinstance(raw, bytes):
            if self._announced:
                self._attachments[self._announced.pop(0)] = raw
            return None
        message = json.loads(raw)
        if message.get("method") == "wslink.binary.attachment":
            self._announced.extend(message.get("args") or [])
            return None
        if str(message.get("id", "")).startswith("publish:"):
            self._publications.append((message["id"].split(":")[1], message.get("result")))
            del self._publications[:-64]   # a client that never asks for them keeps only the latest
            return None
        return message

    async def push_image(self, size=(400, 300), view: str = "-1", timeout: float = 60) -> bytes:
        """One image of the view, as servers that push frames deliver it (ParaView's viewport.image.push, the
        only image delivery the Visualizer's server offers): JPEG or PNG bytes."""
        # Only what arrives after this push is asked for shows the view as it is now.
        self._publications.clear()
        self._attachments.clear()
        await self.call("viewport.image.push.observer.add", [view])
        await self.call("viewport.image.push", [{"view": view, "size": list(size)}])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for topic, result in self._publications:
                pushed = topic == "viewport.image.push.subscription" and isinstance(result, dict)
                key = result.get("image") if pushed else None
                if key in self._attachments:
                    self._publications.clear()
                    return self._attachments.pop(key)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no pushed image within {timeout} s")
            raw = await asyncio.wait_for(self._conn.read_message(), remaining)
            if raw is None:
                raise ConnectionError("connection closed while waiting for a pushed image")
            self._keep(raw)

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
