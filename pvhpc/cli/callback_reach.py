"""Whether jobs on the compute nodes can reach pvhpc at ``service.callback_url``, judged without running a job.

Left out, service.callback_url is public_url, and that is http://127.0.0.1:PORT for a service listening on
0.0.0.0: a loopback address (127.0.0.0/8, ::1, localhost), which reaches pvhpc only from a job on this very host.
Whether that is wrong depends on where the partitions' nodes are, which only Slurm knows. ``pvhpc config check``
asks Slurm already (partitions, ``sbatch --test-only``), so this judgement is one of its checks rather than
doctor's: each node's names and addresses as Slurm gives them (NodeName, NodeAddr, NodeHostname) are resolved
here, and a node is this host when every address they give is one of this host's own (pvhpc/hostaddresses.py).
A loopback callback with any node elsewhere fails, naming the nodes and an address of this host on its route to
them. When Slurm cannot be asked, the config alone still shows a loopback callback: a warning that names the key
to set and says the nodes could not be looked at (it is not a failure: a one-host cluster is a real site).

A host name is resolved by each node for itself, so one that resolves to loopback only here (the 127.0.1.1 line
Debian's installer writes for the host's own name) is a warning, not a failure. Only a job that really calls
back proves the path; ``pvhpc doctor``'s probe job does (pvhpc/cli/probe.py).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from pvhpc.cli.check_report import FAIL, OK, SKIP, WARN, Check
from pvhpc.config import SiteConfig
from pvhpc.hostaddresses import addresses_of, as_address, is_local, is_loopback, route_source
from pvhpc.scheduler import PartitionInfo, Scheduler, SchedulerUnavailable

HERE, ELSEWHERE, UNKNOWN = "here", "elsewhere", "unknown"
WILDCARDS = ("0.0.0.0", "::", "")


def url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def is_loopback_host(host: str) -> bool:
    """A host that is loopback wherever it is resolved: an address of 127.0.0.0/8 or ::1, or localhost (names under
    .localhost are loopback by RFC 6761)."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost") or is_loopback(host)


@dataclass(frozen=True)
class NodePlace:
    node: str
    where: str                      # HERE, ELSEWHERE or UNKNOWN (none of its names resolves here)
    addresses: tuple[str, ...]      # elsewhere: its addresses that are not this host's; here: its addresses


def place_of(node: str, names: set[str], resolve: Callable[[str], set[str]] = addresses_of,
             is_local: Callable[[str], bool] = is_local) -> NodePlace:
    """Where ``node`` is, from what Slurm calls it. Where Slurm gives an address (NodeAddr=10.1.2.3), that is the
    node, and its names are not looked up: the login node may not resolve them, and a site's DNS may be slow."""
    given = {str(a) for a in map(as_address, names) if a is not None}
    addresses = given or set().union(*(resolve(n) for n in sorted(names)))
    if not addresses:
        return NodePlace(node, UNKNOWN, ())
    others = sorted(a for a in addresses if not is_local(a))
    if others:
        return NodePlace(node, ELSEWHERE, tuple(others))
    return NodePlace(node, HERE, tuple(sorted(addresses)))


def suggested_url(places: list[NodePlace], listen_port: int, scheme: str = "http",
                  route_source: Callable[[str], str | None] = route_source) -> tuple[str, str]:
    """A callback URL the nodes elsewhere may reach, and why that one: this host's address on its route to the
    first of them, else this host's fully qualified name."""
    for place in places:
        for address in place.addresses:
            source = route_source(address)
            if source and not is_loopback(source):
                shown = f"[{source}]" if ":" in source else source
                return f"{scheme}://{shown}:{listen_port}", f"this host's address on its route to {place.node}"
    return f"{scheme}://{socket.getfqdn()}:{listen_port}", "this host's name"


def callback_key(index: int, count: int) -> str:
    return "service.callback_url" if count == 1 else f"service.callback_url[{index}]"


def _names(places: list[NodePlace], limit: int = 6) -> str:
    shown = ", ".join(f"{p.node} ({', '.join(p.addresses)})" if p.addresses else p.node for p in places[:limit])
    return shown + (f" and {len(places) - limit} more" if len(places) > limit else "")


def judge(cfg: SiteConfig, places: list[NodePlace] | None, unknown_why: str = "",
          resolve: Callable[[str], set[str]] = addresses_of, is_local: Callable[[str], bool] = is_local,
          route_source: Callable[[str], str | None] = route_source) -> list[Check]:
    """Each callback URL against where the partitions' nodes are (``places``, from Slurm), or, with ``places``
    None (Slurm could not be asked: ``unknown_why``), against the config alone. Pure but for the look-ups given."""
    service = cfg.service
    listen = f"{service.listen_host}:{service.listen_port}"
    listen_loopback = is_loopback_host(service.listen_host)
    # What public_url, and so callback_url, is when left out (pvhpc/config/keys.py).
    default_host = "127.0.0.1" if service.listen_host in WILDCARDS else service.listen_host
    default_url = f"http://{default_host}:{service.listen_port}"
    elsewhere = [p for p in places or () if p.where == ELSEWHERE]
    unknown = [p for p in places or () if p.where == UNKNOWN]
    out = []
    for i, url in enumerate(service.callback_urls):
        key = callback_key(i, len(service.callback_urls))
        host = url_host(url)
        loopback = is_loopback_host(host)
        here = [] if loopback else sorted(resolve(host))
        named_loopback = bool(here) and all(is_loopback(a) for a in here)
        said = (f"{url} (what {key} is when left out: public_url, from service.listen {listen})"
                if len(service.callback_urls) == 1 and url == default_url else url)
        suggestion, reason = suggested_url(elsewhere, service.listen_port, urlsplit(url).scheme or "http",
                                           route_source)
        fix = (f"set {key} to an address of this host the nodes reach, e.g. {suggestion} ({reason})"
               + (f", and service.listen to that address or 0.0.0.0:{service.listen_port} (it is {listen}: only "
                  "this host reaches it)" if listen_loopback else ""))
        if not loopback and not named_loopback:
            if elsewhere and listen_loopback and here and all(is_local(a) for a in here):
                out.append(Check(key, WARN, f"{url} is this host, but pvhpc listens on {listen} (service.listen), "
                                            f"which nodes elsewhere ({_names(elsewhere, 3)}) cannot reach",
                                 f"set service.listen to 0.0.0.0:{service.listen_port} or this host's address "
                                 "the nodes reach (unless something else on this host passes it on)"))
            else:
                out.append(Check(key, OK, f"{url} is not a loopback address (pvhpc doctor's probe job shows "
                                          "whether the nodes reach it)"))
        elif places and not elsewhere and not unknown:
            out.append(Check(key, OK, f"{url} is loopback, and every node of the partitions is this host "
                                      f"({len(places)} nodes): their jobs reach it"))
        elif named_loopback:
            out.append(Check(key, WARN, f"{url}: {host} resolves to {', '.join(here)} on this host (loopback); "
                                        "the nodes resolve the name themselves and reach pvhpc only if they get an "
                                        "address of this host",
                             "run pvhpc doctor, whose probe job calls it from a node; or " + fix))
        elif elsewhere:
            out.append(Check(key, FAIL, f"{said} is a loopback address, but nodes of the partitions are other "
                                        f"hosts: {_names(elsewhere)}; their jobs cannot report to pvhpc, so every "
                                        "session there would end start_timeout", fix))
        elif cfg.ssh is not None:
            out.append(Check(key, FAIL, f"{said} is a loopback address, and in SSH mode pvhpc runs apart from the "
                                        "cluster: no job can report to it", fix))
        elif places is None:
            out.append(Check(key, WARN, f"{said} is a loopback address: only a job on this host reaches it, and "
                                        f"where the partitions' nodes are could not be asked ({unknown_why})",
                             fix + "; or, if every node is this host, leave it"))
        else:
            which = f"where nodes {_names(unknown)} are cannot be told: none of their names (NodeName, NodeAddr, " \
                    "NodeHostname) resolves here" if unknown else "Slurm lists no nodes in the partitions"
            out.append(Check(key, WARN, f"{said} is a loopback address, and {which}",
                             fix + "; or, if the nodes are this host, leave it"))
    return out


def partition_nodes(cfg: SiteConfig, live: dict[str, PartitionInfo]) -> list[str]:
    """The nodes of the Slurm partitions the site config names (those Slurm has)."""
    found: dict[str, None] = {}
    for p in cfg.partitions.values():
        info = live.get(p.slurm_partition)
        for node in info.nodes if info else ():
            found[node] = None
    return list(found)


async def check_callbacks(cfg: SiteConfig, scheduler: Scheduler,
                          live: dict[str, PartitionInfo] | None, unknown_why: str = "") -> list[Check]:
    """For ``pvhpc config check``: ``live`` is Slurm's partitions (None when Slurm could not be asked, and why)."""
    places = None
    if live is not None:
        try:
            addresses = await scheduler.node_addresses()
        except SchedulerUnavailable as e:
            unknown_why = f"Slurm did not list its nodes' addresses: {e}"
        else:
            nodes = partition_nodes(cfg, live)
            # Name look-ups may block (a site's DNS): off the event loop.
            places = await asyncio.to_thread(
                lambda: [place_of(node, addresses.get(node, {node})) for node in nodes])
    return await asyncio.to_thread(judge, cfg, places, unknown_why)


def skipped(cfg: SiteConfig, why: str, fix: str = "") -> list[Check]:
    """Each callback URL, not checked, and why."""
    urls = cfg.service.callback_urls
    return [Check(callback_key(i, len(urls)), SKIP, f"{url}: {why}", fix) for i, url in enumerate(urls)]
