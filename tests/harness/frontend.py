"""A stand-in for the site's front end after its login: it passes TCP connections on to pvhpc's front-end socket.

pvhpc believes a user header only over ``service.frontend_socket`` (Apache's channel). Tests that act as
several users, from Python clients and from browsers, need a TCP address that reaches that socket: this is
it. It forwards bytes unchanged, websockets included, so the ``X-Remote-User`` a test sends is believed as
the one Apache sets after its login would be. It listens on loopback for the test's own process only, and
exists only in tests: a site's front end authenticates users first (tests/test_frontends.py runs Apache).
"""

from __future__ import annotations

import selectors
import socket
import threading
from pathlib import Path


class TrustedFrontEnd:
    """``url`` (http://127.0.0.1:PORT) leads to pvhpc's front-end socket ``socket_path``."""

    def __init__(self, socket_path: Path, port: int):
        self.socket_path = socket_path
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)   # a burst of 200 at once
        self.listener.settimeout(0.5)   # so that stop() is noticed
        self.url = f"http://127.0.0.1:{port}"
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="trusted-frontend")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(self.socket_path))
        except OSError:
            client.close()
            upstream.close()
            return
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for s in peers:
                selector.register(s, selectors.EVENT_READ)
            open_ends = 2
            while open_ends and not self._stopped.is_set():
                for key, _ in selector.select(timeout=0.5):
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        try:
                            peers[key.fileobj].sendall(data)
                            continue
                        except OSError:
                            pass
                    # One side finished: pass the end on, and stop reading from it.
                    selector.unregister(key.fileobj)
                    open_ends -= 1
                    try:
                        peers[key.fileobj].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
        client.close()
        upstream.close()

    def stop(self) -> None:
        self._stopped.set()
        self.listener.close()
