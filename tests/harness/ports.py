"""Free TCP ports for the daemons a test starts, so runs side by side never collide."""

from __future__ import annotations

import socket


def free_port_block(count: int) -> int:
    """A first port such that it and the next count-1 ports are free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as t:
                try:
                    t.bind(("0.0.0.0", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port now (the readiness probe of a plain TCP server)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False
