"""Free TCP ports for the daemons a test starts, so runs side by side never collide."""

from __future__ import annotations

import random
import socket


def _below_ephemeral() -> range:
    """The 12,000 ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range, from 32768 on Debian).

    A port picked there and bound by its daemon seconds later cannot meanwhile go to a server listening on port 0
    (a test's ParaView server, a service, an MPI rank, in this lane or the other) or to an outgoing connection.
    Apache given a port so taken exits while the readiness probe finds the other server there: likely the TLS EOF
    seen once in a CI-shaped run (tests/test_frontends.py)."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), max(2048, low))


PICKED_PORTS = _below_ephemeral()


def free_port_block(count: int) -> int:
    """A first port such that it and the next count-1 ports are free now."""
    for _ in range(200):
        base = random.randrange(PICKED_PORTS.start, PICKED_PORTS.stop - count)
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
