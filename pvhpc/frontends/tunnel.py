"""The built-in proxy's way to sessions' servers in SSH mode: through the shared link to the login host
(pvhpc/scheduler/ssh.py), one loopback forward per session.

paramiko is blocking: each forwarded connection is carried by threads of its own, never on Tornado's loop.
"""

from __future__ import annotations

import logging
import socket
import threading

import paramiko

from pvhpc.frontends.builtin import Connector
from pvhpc.frontends.routes import Route
from pvhpc.scheduler.ssh import CHUNK, SSHError, SSHLink

log = logging.getLogger("pvhpc.frontends.tunnel")


class LoopbackForward:
    """Like ``ssh -L 127.0.0.1:0:host:port``: each connection to a loopback listener is carried over the link.

    Tornado's websocket client can only dial TCP, so the proxy dials this
    listener. Every accepted connection gets its own channel, opened when it
    arrives, so a connection made after the SSH connection dropped uses the
    new one. Anyone on this machine can dial the listener; the session's server
    still wants its secret, as it does when reached directly.
    """

    def __init__(self, link: SSHLink, host: str, port: int):
        self.link, self.host, self.port = link, host, port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.local_port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name=f"pvhpc-forward-{self.local_port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return   # closed
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._open.add(conn)
            threading.Thread(target=self._carry, args=(conn,), daemon=True).start()

    def _carry(self, conn: socket.socket) -> None:
        channel = None
        try:
            channel = self.link.open_tunnel(self.host, self.port)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _pump(conn, channel)
        except SSHError as e:
            log.warning("tunnel to %s:%d: %s", self.host, self.port, e)
        finally:
            if channel is not None:
                channel.close()
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._open = list(self._open), set()
        # shutdown (not just close) wakes the threads blocked in accept/select on these sockets.
        for sock in [self._listener, *conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._listener.close()


def _pump(conn: socket.socket, channel: paramiko.Channel) -> None:
    """Copy bytes both ways until either side closes; a websocket needs no half-closed state.

    One thread per direction: a blocked send one way (a full SSH window) must
    never stop the other way from being read.
    """
    def to_server() -> None:
        try:
            while data := conn.recv(CHUNK):
                channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            try:
                channel.close()   # wakes the other direction
            except (OSError, EOFError, paramiko.SSHException):
                pass   # the SSH connection itself is gone: the other direction has woken already

    upstream = threading.Thread(target=to_server, daemon=True)
    upstream.start()
    try:
        while data := channel.recv(CHUNK):
            conn.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        try:
            conn.shutdown(socket.SHUT_RDWR)   # wakes to_server's recv
        except OSError:
            pass
        upstream.join()


class TunnelConnector(Connector):
    """The built-in proxy's way to a session's server in SSH mode: one loopback forward per session.

    A forward is made when the session is first dialled and closed when its
    route goes away (the session ended or moved), so nothing listens for a
    session that is gone.
    """

    def __init__(self, link: SSHLink):
        self.link = link
        self._forwards: dict[str, tuple[Route, LoopbackForward]] = {}

    async def address(self, route: Route) -> str:
        held = self._forwards.get(route.session_id)
        if held is None or held[0] != route:
            if held is not None:
                held[1].close()
            # Binding a loopback socket does not wait on the network: no thread needed, and no await
            # between the lookup and the store, so two first dials share one forward.
            held = (route, LoopbackForward(self.link, route.host, route.port))
            self._forwards[route.session_id] = held
            log.info("session %s…: tunnel 127.0.0.1:%d -> %s via %s", route.session_id[:6], held[1].local_port,
                     route.target, self.link.name)
        return f"127.0.0.1:{held[1].local_port}"

    def forget(self, session_id: str) -> None:
        held = self._forwards.pop(session_id, None)
        if held is not None:
            held[1].close()

    async def close(self) -> None:
        for session_id in list(self._forwards):
            self.forget(session_id)
