"""Addresses, not names, on the test cluster made of hosts (issue 23, shapes 1-3): each compute node in a
network namespace of its own, which the login side (this machine, where pvhpc runs) knows only by Slurm's
NodeAddr. A session is reached at the address its job reported and pvhpc checked, whatever the node's name
resolves to, here or on the node. The pure logic of the same is in test_node_addresses.py.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager

import pytest

from tests.helpers import foreground_fraction, render

pytestmark = pytest.mark.cluster
CPU_NODES = ("cpu01", "cpu02")


@pytest.fixture(autouse=True)
def _hosts_only(cluster):
    if not cluster.multi_host:
        pytest.skip(f"the test cluster's nodes are not hosts of their own here: {cluster.describe_shape()}")


def a_session_renders_at_its_nodes_address(svc, cluster, artifacts, name):
    """Through the built-in proxy, which dials what the session's route says; the route names the address."""
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    try:
        assert session["state"] == "ready", session
        assert session["node"] in CPU_NODES, session
        assert session["host"] == cluster.node_address(session["node"]), session
        image = render(session["sessionURL"], session["secret"])
        (artifacts / f"{name}.jpg").write_bytes(image)
        assert foreground_fraction(image) > 0.01
        log = client.log(session["id"])
        assert f"the server listens on {session['host']}, this node's address on its route to pvhpc" in log, log
    finally:
        client.cancel(session["id"])


def test_shape_1_the_login_side_resolves_no_nodes_name(service_factory, cluster, artifacts):
    import socket

    for node in CPU_NODES:
        with pytest.raises(OSError):
            socket.gethostbyname(node)   # else this test shows nothing
    svc = service_factory("shape1", frontend={"kind": "builtin"}).start()
    a_session_renders_at_its_nodes_address(svc, cluster, artifacts, "shape1")


@contextmanager
def hosts_file_first_line(cluster, line_of):
    """Each cpu node's own hosts file with a line of its own first (``line_of(node)``), as long as the block runs."""
    files = {node: cluster.network.host(node).hosts_file for node in CPU_NODES}
    before = {node: path.read_text() for node, path in files.items()}
    try:
        for node, path in files.items():
            with open(path, "r+") as f:   # written in place: the node sees this file through a bind mount
                f.write(f"{line_of(node)}\n{before[node]}")
        yield
    finally:
        for node, path in files.items():
            with open(path, "r+") as f:
                f.truncate(0)
                f.write(before[node])


def node_resolves_its_name(cluster, node) -> str:
    """The address ``node``'s host name has on the node, as its jobs see it (its hosts file, its host name)."""
    argv = ["python3", "-c", "import socket; print(socket.gethostbyname(socket.gethostname()))"]
    return subprocess.run(cluster.network.on_node(node, argv), capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def slurmd_pid(cluster, node) -> int:
    return int((cluster.dir / "run" / f"slurmd-{node}.pid").read_text().split()[0])


def test_shape_2_a_node_whose_name_resolves_to_127_0_1_1(service_factory, cluster, artifacts):
    """The line Debian's installer writes into /etc/hosts: the node's name is 127.0.1.1 on the node itself."""
    with hosts_file_first_line(cluster, lambda node: f"127.0.1.1 {node}"):
        assert node_resolves_its_name(cluster, "cpu01") == "127.0.1.1", "the node does not see its hosts file so"
        svc = service_factory("shape2", frontend={"kind": "builtin"}).start()
        a_session_renders_at_its_nodes_address(svc, cluster, artifacts, "shape2")


def test_shape_3_a_node_whose_host_name_is_an_fqdn_the_login_side_does_not_resolve(service_factory, cluster,
                                                                                   artifacts):
    def set_names(fqdn: bool):
        for node in CPU_NODES:
            name = f"{node}.cluster.test" if fqdn else node
            subprocess.run(["nsenter", "-t", str(slurmd_pid(cluster, node)), "-u", "hostname", name], check=True,
                           timeout=10)

    # The node resolves its own FQDN (its hosts file says so), the login side does not.
    with hosts_file_first_line(cluster, lambda node: f"{cluster.node_address(node)} {node}.cluster.test {node}"):
        set_names(fqdn=True)
        try:
            named = subprocess.run(["nsenter", "-t", str(slurmd_pid(cluster, "cpu01")), "-u", "hostname"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            assert named == "cpu01.cluster.test", named
            svc = service_factory("shape3", frontend={"kind": "builtin"}).start()
            a_session_renders_at_its_nodes_address(svc, cluster, artifacts, "shape3")
        finally:
            set_names(fqdn=False)
