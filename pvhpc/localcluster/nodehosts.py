"""The local cluster's compute nodes as hosts of their own: a network namespace, an address, a host name and a
hosts file for each, all on one machine.

A bridge in this machine's own namespace is the cluster's network, and this machine, the "login side", is on it
at the first address: slurmctld, munged and pvhpc's service run here, as on a login node. Each node gets a
network namespace with one veth link to the bridge, the next addresses in order, and a default route through the
login side (so a node reaches the login side at any of its addresses, and nothing beyond: this machine does not
forward). Its slurmd runs there, in a UTS namespace of its own (its host name is its node name) and a mount
namespace where its own hosts file lies over /etc/hosts; every job it starts inherits all three.

The login side is not told the nodes' names (its /etc/hosts is this machine's, left alone): Slurm knows each node
by its address (NodeAddr), as on many sites, so whatever dials a node by name here fails as it would there.

Everything is named after the cluster's base port, so clusters on different ports (two test runs at once) never
share a name or an address. What can make them: root, and a kernel that allows network namespaces; ``usable()``
says why not, and the cluster then runs on this one host.

Not ``ip netns exec`` to run a node's daemon: it mounts a new /sys, which hides /sys/fs/cgroup, and slurmd
refuses to start without it. The namespace is joined with nsenter and the mount and UTS namespaces made with
unshare instead, which leave /sys as it is.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pvhpc.errors import PvhpcError

NETNS_DIR = Path("/run/netns")        # where ``ip netns add`` pins a namespace
HOSTS_DIR = Path("/etc/netns")        # a namespace's own /etc files, as ``ip netns`` keeps them
FIRST_NODE = 11                       # the nodes' last octets start here; the login side is .1


class NodeNetworkError(PvhpcError):
    """The nodes' network could not be made or taken down."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise NodeNetworkError(f"ip {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc


@dataclass(frozen=True)
class NodeHost:
    name: str
    address: str
    netns: str
    link: str        # the veth's end on the bridge, in this machine's namespace

    @property
    def hosts_file(self) -> Path:
        return HOSTS_DIR / self.netns / "hosts"

    @property
    def resolver_file(self) -> Path:
        return HOSTS_DIR / self.netns / "resolv.conf"


class NodeNetwork:
    """The bridge, namespaces and links of one cluster's nodes, named after its base port."""

    def __init__(self, base_port: int, nodes: tuple[str, ...], login_name: str):
        if not 1024 <= base_port < 65536:
            raise NodeNetworkError(f"base port {base_port} is not between 1024 and 65535")
        # 10.<high byte>.<low byte>.0/24: one subnet per base port.
        self.subnet = ipaddress.ip_network(f"10.{base_port >> 8}.{base_port & 255}.0/24")
        self.bridge = f"pvb{base_port}"
        self.login_name = login_name
        self.login_address = str(self.subnet.network_address + 1)
        self.hosts = tuple(
            NodeHost(name, str(self.subnet.network_address + FIRST_NODE + i), f"pvhpc{base_port}-{name}",
                     f"pv{base_port}{name}"[:15])
            for i, name in enumerate(nodes)
        )

    def host(self, node: str) -> NodeHost:
        for h in self.hosts:
            if h.name == node:
                return h
        raise KeyError(node)

    # -- can it be made here -------------------------------------------------
    @staticmethod
    def usable(try_one: bool = True) -> str | None:
        """None when namespaces can be made here, else why not; ``try_one``: make one to be sure (and remove it)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for tool in ("ip", "nsenter", "unshare"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (Debian's iproute2 and util-linux)"
        if not try_one:
            return None
        probe = f"pvhpc-probe-{os.getpid()}"
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"this machine does not allow network namespaces: {made.stderr.strip()}"
        _ip("netns", "del", probe, check=False)
        return None

    def exists(self) -> bool:
        return _ip("link", "show", self.bridge, check=False).returncode == 0

    # -- make and take down --------------------------------------------------
    def create(self) -> None:
        """Make the bridge and every node's namespace, link and hosts file (anything left of an earlier run of
        the same cluster is taken down first)."""
        self._check_subnet_free()
        self.destroy()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.login_address}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for h in self.hosts:
            _ip("netns", "add", h.netns)
            inner = f"pn{h.link[2:]}"[:15]
            _ip("link", "add", h.link, "type", "veth", "peer", "name", inner)
            _ip("link", "set", h.link, "master", self.bridge, "up")
            _ip("link", "set", inner, "netns", h.netns)
            _ip("-n", h.netns, "link", "set", inner, "name", "eth0")
            _ip("-n", h.netns, "addr", "add", f"{h.address}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", h.netns, "link", "set", "eth0", "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")
            _ip("-n", h.netns, "route", "add", "default", "via", self.login_address)
            h.hosts_file.parent.mkdir(parents=True, exist_ok=True)
            h.hosts_file.write_text(self.hosts_text())
            h.hosts_file.chmod(0o644)
            # No name server: this machine's is not reachable from the nodes' network, and every lookup a hosts
            # file does not answer (getent, glibc's IPv6 try first) would wait for it to time out.
            h.resolver_file.write_text("# Written by pvhpc's local cluster: names come from this node's hosts "
                                       "file alone.\noptions timeout:1 attempts:1\n")
            h.resolver_file.chmod(0o644)

    def hosts_text(self) -> str:
        """A node's /etc/hosts: every node and the login side by name, as where all hosts share one file."""
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback",
                 f"{self.login_address} {self.login_name} login"]
        lines += [f"{h.address} {h.name}" for h in self.hosts]
        return "# Written by pvhpc's local cluster: this node's own hosts file.\n" + "\n".join(lines) + "\n"

    def _check_subnet_free(self) -> None:
        """Another interface of this machine on the same subnet would take the nodes' traffic."""
        shown = _ip("-o", "-4", "addr", "show", check=False).stdout
        for line in shown.splitlines():
            words = line.split()
            if len(words) > 3 and words[1] != self.bridge and "inet" in words:
                address = ipaddress.ip_interface(words[words.index("inet") + 1])
                if address.network.overlaps(self.subnet):
                    raise NodeNetworkError(f"{words[1]} is already on {address.network}, which the cluster's "
                                           f"nodes would use ({self.subnet}): start it on another base port")

    def destroy(self) -> None:
        """End every process left in the nodes' namespaces, then take the namespaces, links and bridge down."""
        for h in self.hosts:
            if (NETNS_DIR / h.netns).exists():
                self._kill_inside(h.netns)
                _ip("netns", "del", h.netns, check=False)
            _ip("link", "del", h.link, check=False)   # gone with its peer, unless the namespace was lost
            shutil.rmtree(HOSTS_DIR / h.netns, ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)

    @staticmethod
    def _kill_inside(netns: str, timeout: float = 5) -> None:
        def pids() -> list[int]:
            out = _ip("netns", "pids", netns, check=False).stdout
            return [int(p) for p in out.split() if p.isdigit()]

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while pids() and time.monotonic() < deadline:
                time.sleep(0.1)

    # -- run on a node --------------------------------------------------------
    def on_node(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` run on ``node``: in its network namespace, with its host name, hosts file and resolver."""
        h = self.host(node)
        setup = (f"mount --bind {shlex.quote(str(h.hosts_file))} /etc/hosts && "
                 f"mount --bind {shlex.quote(str(h.resolver_file))} /etc/resolv.conf && "
                 f"hostname {shlex.quote(h.name)} && exec {shlex.join(argv)}")
        return ["nsenter", f"--net={NETNS_DIR / h.netns}", "--", "unshare", "--mount", "--uts",
                "--propagation", "private", "sh", "-c", setup]

    # -- faults ---------------------------------------------------------------
    def cut(self, node: str) -> None:
        """Cut ``node`` off the network (its link's end on the bridge down): what it sends is lost."""
        _ip("link", "set", self.host(node).link, "down")

    def mend(self, node: str) -> None:
        _ip("link", "set", self.host(node).link, "up")

    def block_port(self, node: str, port: int) -> None:
        """Refuse what ``node`` sends to TCP ``port`` (anywhere), and nothing else: one path cut, the node up."""
        _ip("-n", self.host(node).netns, "rule", "add", "ipproto", "tcp", "dport", str(port), "prohibit")

    def unblock_port(self, node: str, port: int) -> None:
        _ip("-n", self.host(node).netns, "rule", "del", "ipproto", "tcp", "dport", str(port), "prohibit",
            check=False)
