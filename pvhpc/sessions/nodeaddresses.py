"""Which address of a job's node pvhpc dials: the one the job's report names, checked against Slurm's view.

A job reports the address its server listens on (pvhpc/node/supervisor.py: the node's address on its route to
pvhpc). The front end connects wherever a session's route points, so that address must be the node's as Slurm
knows it: one of the addresses its names give (NodeName, NodeAddr, NodeHostname), each resolved here, on the
side that dials (in SSH mode, the login host: ``over_ssh``); an address Slurm gives stays itself. How the node
spells its own name (an FQDN this side does not resolve, a name its hosts file maps to 127.0.1.1) no longer
counts. An address of this host's own that Slurm's names do not give (its loopback, say) is taken only when
the node is this very host (every address Slurm's names give is local here), so that a cluster on one machine
works and a report from elsewhere cannot point the proxy at this host's own loopback services.

Only IPv4: a route's ``host:port`` (pvhpc/frontends/routes.py) and Apache's map have no room for IPv6's colons.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shlex
import socket
from typing import Awaitable, Callable, Iterable

from pvhpc.hostaddresses import addresses_of, is_loopback

# Names (or addresses) -> the IPv4 addresses each gives on the side that dials; empty for one that gives none.
Resolver = Callable[[Iterable[str]], Awaitable[dict[str, set[str]]]]


def is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


async def resolve_here(names: Iterable[str]) -> dict[str, set[str]]:
    """Each name's IPv4 addresses as this host resolves them."""
    names = sorted(set(names))
    found = await asyncio.gather(*(asyncio.to_thread(addresses_of, n, socket.AF_INET) for n in names))
    return dict(zip(names, found))


def over_ssh(link) -> Resolver:
    """A Resolver that asks the login host of SSH mode (``link``: pvhpc.scheduler.ssh.SSHLink), from which the
    tunnels dial, with ``getent ahostsv4``."""

    async def resolve(names: Iterable[str]) -> dict[str, set[str]]:
        names = sorted(set(names))
        found = {n: {n} for n in names if is_ipv4(n)}
        asked = [n for n in names if n not in found]
        if asked:
            # One command for all the names, so one SSH round trip, not one per name; each name's answer follows
            # a line naming it, since getent prints nothing for a name it cannot resolve.
            command = "; ".join(f"echo {shlex.quote('== ' + n)}; getent ahostsv4 {shlex.quote(n)}" for n in asked)
            _, out, _ = await link.run(command)
            found.update(parse_getent(out, asked))
        return found

    return resolve


def parse_getent(out: str, names: list[str]) -> dict[str, set[str]]:
    """``getent ahostsv4`` answers after ``== NAME`` lines (over_ssh's command) as name -> addresses."""
    found: dict[str, set[str]] = {n: set() for n in names}
    current = None
    for line in out.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            continue
        first = line.split(None, 1)[0] if line.strip() else ""
        if current in found and is_ipv4(first):
            found[current].add(first)
    return found


def checked_address(reported: str, reported_gives: set[str], node_view: dict[str, set[str]],
                    node_is_here: Callable[[set[str]], bool], peer: str | None = None) -> str | None:
    """The address to dial for a report that says ``reported`` (which gives ``reported_gives`` here), if it is
    the job's node's; else None.

    ``node_view``: each of Slurm's names and addresses for the job's node(s), with what it gives here.
    ``node_is_here(addresses)``: whether those are all this host's own (hostaddresses.is_local), asked only for
    a report of an address Slurm's names do not give. ``peer``: where the report came from, preferred among
    several addresses a name gives, and the node's address when the name is one this side cannot resolve (behind
    a reverse proxy it is the proxy's, which is none of the node's)."""
    node_addresses = set().union(*node_view.values()) if node_view else set()
    if reported_gives:
        candidates = set(reported_gives)
    elif reported.lower() in {name.lower() for name in node_view}:
        # A name of Slurm's that this side does not resolve (the report of an older job script): Slurm's
        # other names for the node say where it is.
        candidates = node_addresses
    elif peer in node_addresses:
        # A name only the node knows (its own FQDN, in an older job's report), sent from one of the node's
        # addresses: where the report came from says where the node is.
        candidates = {peer}
    else:
        return None
    good = candidates & node_addresses
    others = candidates - good
    if others and node_addresses and node_is_here(node_addresses):
        # The node is this very host (a cluster on one machine): every address of this host's is the node's,
        # its loopback too. From a node elsewhere a loopback report would point the proxy at this host's own.
        good |= {a for a in others if node_is_here({a})}
    if not good:
        return None
    if peer in good:
        return peer
    return sorted(good, key=lambda a: (is_loopback(a), ipaddress.ip_address(a)))[0]


def describe(node_view: dict[str, set[str]], limit: int = 600) -> str:
    """Slurm's names for a node and what each gives here, for a refusal: "cpu02 (10.0.0.2), cpu02.x (none here)"."""
    parts = []
    for name, addresses in sorted(node_view.items()):
        if addresses == {name}:
            parts.append(name)
        else:
            parts.append(f"{name} ({', '.join(sorted(addresses)) if addresses else 'does not resolve here'})")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[:limit] + "…"
