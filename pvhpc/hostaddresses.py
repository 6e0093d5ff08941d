"""This host's addresses: whether an address is one of its own or loopback, its address on its route to another,
and the addresses a name has here.

Shared by what judges a job's report (pvhpc/sessions/nodeaddresses.py) and what judges the callback URL
(pvhpc/cli/callback_reach.py). The node's side has its own route look-up (pvhpc/node/supervisor.py): it runs
under the node's python and imports nothing from pvhpc.
"""

from __future__ import annotations

import ipaddress
import socket


def as_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` spells, or None for a name. URL brackets and an IPv6 zone are dropped, and an
    IPv4-mapped IPv6 address is its IPv4 one: ::ffff:127.0.0.1 is IPv4's loopback."""
    try:
        found = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return getattr(found, "ipv4_mapped", None) or found


def is_loopback(address: str) -> bool:
    """Whether ``address`` is a loopback address (127.0.0.0/8, ::1); a name is not."""
    found = as_address(address)
    return found is not None and found.is_loopback


def route_source(address: str) -> str | None:
    """This host's address on its route to ``address``, or None (a name, or no route). A UDP socket's connect
    sends no packet: it only looks up the route."""
    found = as_address(address)
    if found is None:
        return None
    family = socket.AF_INET6 if found.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((str(found), 9))
            return s.getsockname()[0]
    except OSError:
        return None


def is_local(address: str) -> bool:
    """Whether ``address`` is one of this host's own: loopback, or the kernel routes to it through its local
    table (the source address it picks for it is the address itself). Not by bind(), which
    net.ipv4.ip_nonlocal_bind lets succeed for any address."""
    found = as_address(address)
    if found is None:
        return False
    return found.is_loopback or route_source(str(found)) == str(found)


def addresses_of(host: str, family: int = socket.AF_UNSPEC) -> set[str]:
    """The addresses ``host`` has here, of ``family`` (an address is its own); none when it gives none. It may
    block on a site's DNS: call it off the event loop."""
    found = as_address(host)
    if found is not None:
        wanted = {socket.AF_UNSPEC, socket.AF_INET6 if found.version == 6 else socket.AF_INET}
        return {str(found)} if family in wanted else set()
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, family=family, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()
