"""ParaView's desktop client to a desktop session (docs/desktop.md): a local ParaView server address,
``cs://localhost:PORT``, whose every connection is carried to the session's pvserver over a websocket.

    from pvhpc.client import Client
    from pvhpc.client.desktop import open_desktop

    async def main():
        connection = await open_desktop(Client(), "Xy3k...")      # a ready desktop session of yours
        print(connection.server_url)                             # cs://localhost:PORT, for paraview --server-url
        await connection.serve()                                 # until closed (or the session's end, by the caller)

The websocket goes where every client of a session goes: the session's ``sessionURL`` through the site's front end,
with the caller's own login (the client's token, or its headers), or, for ``pvhpc connect --ssh``, to the session's
node and port through an SSH tunnel the caller opens (``websocket_url``). Its first message is the session's secret,
``{"secret": ...}``, answered ``{"ok": true}`` by the session's bridge (pvhpc/node/desktop_bridge.py); then binary
frames carry ParaView's TCP stream both ways.

The local listener is on 127.0.0.1, where every user of a shared login node can dial it: on Linux it takes only
connections whose other end is a socket of this process's own user (the socket's owner in /proc/net/tcp, as
pvhpc's pvserver guard checks its port on the node) and closes any other before a byte is carried. Where
/proc/net/tcp cannot be read, that check cannot be made, and ``same_user_only`` says so (``checked`` is False).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
from typing import Callable
from urllib.parse import urlsplit

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from pvhpc.client.api import Client, ClientError, connect_url
from pvhpc.errors import PvhpcError

TCP_TABLE = "/proc/net/tcp"
TCP_TIME_WAIT = "06"
CHUNK = 256 * 1024
CONNECT_TIMEOUT = 20
PING_INTERVAL = 30   # seconds; well under any front end's idle timeout (the built-in proxy's default is 900)
MAX_MESSAGE = 64 * 1024 * 1024


class DesktopError(PvhpcError):
    """A session pvhpc connect cannot lead ParaView to; ``problem`` says which kind: ``not_desktop``, ``not_ready``,
    ``ended``, ``refused`` (the session's bridge closed the websocket, with its reason), ``unreachable``."""

    def __init__(self, message: str, problem: str):
        super().__init__(message)
        self.problem = problem


def _address(hex_text: str) -> tuple[str, int]:
    """/proc/net/tcp's ``0100007F:1F90`` (the address word as it lies in memory, the port big) as ('127.0.0.1', 8080)."""
    host, port = hex_text.split(":")
    return socket.inet_ntoa(struct.pack("=I", int(host, 16))), int(port, 16)


def socket_owner(table: str, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid owning the socket whose own end is ``local`` and whose other end is ``remote``, from the text of
    /proc/net/tcp; None when there is none (sockets in TIME_WAIT belong to nobody any more)."""
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[3] == TCP_TIME_WAIT:
            continue
        try:
            if _address(fields[1]) == local and _address(fields[2]) == remote:
                return int(fields[7])
        except (ValueError, struct.error, OSError):
            continue
    return None


def peer_uid(sock: socket.socket, table_path: str = TCP_TABLE) -> int | None:
    """The uid of the local user whose socket is the other end of ``sock`` (a connection accepted on loopback):
    that socket's own end is our peer's address, its other end ours. None when it is not found (another host's,
    or gone); OSError when the table cannot be read."""
    with open(table_path) as f:
        table = f.read()
    peer, own = sock.getpeername()[:2], sock.getsockname()[:2]
    return socket_owner(table, (peer[0], peer[1]), (own[0], own[1]))


def session_problem(session: dict) -> DesktopError | None:
    """Why ``session`` (as the API shows it to its owner) cannot be connected to now, or None."""
    sid = session.get("id", "?")
    if not session.get("desktop"):
        return DesktopError(f"session {sid} runs {session.get('application')!r}, which is not for ParaView's desktop "
                            "client: connect to a session of a desktop application ('pvhpc applications' says "
                            "which; 'pvhpc connect --new' starts one)", "not_desktop")
    if session.get("state") == "ended":
        return DesktopError(f"session {sid} has ended ({session.get('end_reason')}): {session.get('detail') or ''}"
                            .rstrip(": "), "ended")
    if session.get("state") != "ready" or not session.get("secret"):
        return DesktopError(f"session {sid} is {session.get('state')}, not ready yet ('pvhpc wait {sid}' waits "
                            "for it)", "not_ready")
    return None


class DesktopConnection:
    """A loopback listener whose each connection is one websocket to the session's bridge."""

    def __init__(self, websocket_url: str, secret: str, headers: dict | None = None, port: int = 0,
                 same_user_only: bool = True, log: Callable[[str], None] = lambda line: None):
        self.websocket_url, self._secret = websocket_url, secret
        self.headers = dict(headers or {})
        self.requested_port = port
        self.same_user_only = same_user_only
        self.checked = same_user_only   # False once the peer check turned out impossible here
        self.log = log
        self.port = 0
        self.connections = 0            # ParaView connections carried (or being carried)
        self.last_refusal: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def server_url(self) -> str:
        return f"cs://localhost:{self.port}"

    async def start(self) -> int:
        # 127.0.0.1 alone: ParaView's "localhost" and nothing another host can reach.
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def serve(self) -> None:
        if self._server is None:
            await self.start()
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def allowed(self, sock: socket.socket) -> bool:
        if not self.same_user_only:
            return True
        try:
            uid = peer_uid(sock)
        except OSError:
            if sys.platform.startswith("linux"):
                # Linux has the table: not reading it is a fault here, not a system without one. Refused.
                self.log(f"refused a connection: {TCP_TABLE} cannot be read, so its user cannot be told")
                return False
            if self.checked:
                self.log(f"warning: {TCP_TABLE} cannot be read here, so connections from other local users "
                         "cannot be told apart and are not refused")
            self.checked = False
            return True
        return uid == os.getuid()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            sock = writer.get_extra_info("socket")
            if not self.allowed(sock):
                self.log(f"refused a connection from {sock.getpeername()[0]}:{sock.getpeername()[1]}: not this "
                         "user's")
                return
            self.connections += 1
            await self._carry(reader, writer)
        except DesktopError as e:
            self.last_refusal = str(e)
            self.log(str(e))
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def open_websocket(self):
        """The websocket to the bridge, past its secret check; DesktopError when refused."""
        request = HTTPRequest(self.websocket_url, headers=self.headers, connect_timeout=CONNECT_TIMEOUT,
                              request_timeout=CONNECT_TIMEOUT)
        try:
            # Pings keep the websocket busy while ParaView says nothing (its user thinking): a front end closes an
            # idle one (the built-in proxy after limits.proxy_idle_timeout, Apache after ProxyTimeout), and the
            # session would end with it. The bridge answers them.
            ws = await asyncio.wait_for(websocket_connect(request, max_message_size=MAX_MESSAGE,
                                                          ping_interval=PING_INTERVAL), CONNECT_TIMEOUT)
        except Exception as e:   # tornado's HTTPClientError (403/404 from a front end), OSError, a timeout
            code = getattr(e, "code", None)
            raise DesktopError(f"cannot open the session's websocket ({'HTTP %s' % code if code else e or type(e).__name__})",
                               "unreachable") from None
        try:
            await ws.write_message(json.dumps({"secret": self._secret}))
            answer = await asyncio.wait_for(ws.read_message(), CONNECT_TIMEOUT)
        except (asyncio.TimeoutError, WebSocketClosedError) as e:
            ws.close()
            raise DesktopError(f"the session did not answer its secret ({type(e).__name__})", "unreachable") from None
        if answer is None:
            raise DesktopError(f"the session refused the connection: {ws.close_reason or 'closed'}"
                               + (f" (code {ws.close_code})" if ws.close_code else ""), "refused")
        try:
            ok = json.loads(answer).get("ok") is True
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            ws.close()
            raise DesktopError(f"the session answered {str(answer)[:80]!r}, not {{\"ok\": true}}", "refused")
        return ws

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = await self.open_websocket()
        self.log("ParaView is connected to the session")

        async def to_session() -> None:
            while data := await reader.read(CHUNK):
                await ws.write_message(data, binary=True)

        async def to_paraview() -> None:
            while (message := await ws.read_message()) is not None:
                writer.write(message if isinstance(message, bytes) else message.encode())
                await writer.drain()

        tasks = [asyncio.ensure_future(to_session()), asyncio.ensure_future(to_paraview())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                ws.close()
            except WebSocketClosedError:
                pass
            self.log("ParaView's connection to the session has ended")


def websocket_headers(client: Client, url: str) -> dict:
    """The client's login, exactly as its API calls send it, for a websocket through the service's own front end;
    nothing for one elsewhere (``frontend.kind: direct`` hands out the node's own address and port, which another
    user of that node could hold once the bridge has ended: a token must not go there)."""
    return client.auth_headers() if urlsplit(url).netloc == urlsplit(client.url).netloc else {}


async def open_desktop(client: Client, session_id: str, port: int = 0, websocket_url: str | None = None,
                       same_user_only: bool = True, log: Callable[[str], None] = lambda line: None) -> DesktopConnection:
    """A started DesktopConnection to the ready desktop session ``session_id`` of the client's user.
    ``websocket_url``: where the session's bridge answers, when not through the front end (an SSH tunnel's end; no
    login is sent there). ClientError from the API (404: no such session of yours), DesktopError otherwise."""
    session = await asyncio.get_running_loop().run_in_executor(None, client.get, session_id)
    problem = session_problem(session)
    if problem:
        raise problem
    url = websocket_url or connect_url(session.get("sessionURL"), client.url)
    if not url:
        raise DesktopError(f"session {session_id} has no URL to connect to", "not_ready")
    headers = {} if websocket_url else websocket_headers(client, url)
    connection = DesktopConnection(url, session["secret"], headers, port, same_user_only, log)
    await connection.start()
    return connection


__all__ = ["ClientError", "DesktopConnection", "DesktopError", "connect_url", "open_desktop", "peer_uid",
           "session_problem", "socket_owner"]
