"""The local cluster commands, against real munged/slurmctld/slurmd."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pvhpc.scheduler import slurm_install
from pvhpc.localcluster.cluster import ClusterError, LocalCluster
from pvhpc.scheduler.slurm_install import SlurmNotFound, SlurmVersion

from tests import backends
from tests.harness import cluster as test_cluster
from tests.harness.cluster import run_slurm

from tests.harness.ports import free_port_block
from tests.helpers import foreground_fraction, wait_until


def pvhpc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pvhpc", *args], capture_output=True, text=True,
                          timeout=180, env=dict(os.environ, **(env or {})))


@pytest.mark.cluster
def test_status_and_idempotent_start_on_running_cluster(cluster):
    before = {d.name: d.pid for d in cluster.status()}
    proc = pvhpc("cluster", "start", "--dir", str(cluster.dir), "--base-port", str(cluster.base_port))
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stdout
    assert {d.name: d.pid for d in cluster.status()} == before
    status = pvhpc("cluster", "status", "--dir", str(cluster.dir))
    assert status.returncode == 0
    for name in ("munged", "slurmctld", "slurmd-gpu01", "slurmd-gpu02", "slurmd-cpu01", "slurmd-cpu02"):
        assert f"{name}" in status.stdout
    assert "stopped" not in status.stdout
    sinfo = run_slurm(cluster, "sinfo", "-h", "-N", "-o", "%N %P %G")
    assert "gpu01 gpu gpu:a100:2" in sinfo and "cpu02 cpu* (null)" in sinfo


@pytest.mark.cluster
def test_second_cluster_starts_and_stops_only_itself(cluster):
    directory = Path(tempfile.mkdtemp(prefix="pvhpc-test-c2-"))
    other = LocalCluster(directory, base_port=free_port_block(5))
    proc = pvhpc("cluster", "start", "--dir", str(directory), "--base-port", str(other.base_port))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "started" in proc.stdout
    restarted_pids = {d.name: d.pid for d in other.status()}
    # Kill one node daemon: start brings back only that one.
    slurmd = next(d for d in other.status() if d.name == "slurmd-cpu02")
    os.kill(slurmd.pid, 9)
    proc = pvhpc("cluster", "start", "--dir", str(directory), "--base-port", str(other.base_port))
    assert proc.returncode == 0, proc.stderr
    after = {d.name: d.pid for d in other.status()}
    assert after["slurmctld"] == restarted_pids["slurmctld"] and after["slurmd-cpu02"] != slurmd.pid
    stop = pvhpc("cluster", "stop", "--dir", str(directory))
    assert stop.returncode == 0
    assert not any(d.running for d in other.status())
    assert pvhpc("cluster", "status", "--dir", str(directory)).returncode == 3
    assert cluster.is_running(), "stopping one cluster stopped another"


@pytest.mark.cluster
def test_the_nodes_are_hosts_of_their_own_that_the_login_side_knows_by_address(cluster):
    """Each node has its own address, host name and hosts file; Slurm knows it by that address; the login side
    (this machine) reaches it there but does not resolve its name, and a job runs inside it."""
    if not cluster.multi_host:
        pytest.skip(f"not here: {cluster.describe_shape()}")
    env = dict(os.environ, **cluster.environment())
    for node in cluster.nodes:
        address = cluster.node_address(node)
        shown = run_slurm(cluster, "scontrol", "show", "node", node, check=False)
        assert f"NodeAddr={address} " in shown and f"NodeHostName={node} " in shown, shown
        inside = subprocess.run(cluster.on_node(node, ["sh", "-c", "hostname; hostname -I; getent hosts cpu02"]),
                                capture_output=True, text=True, timeout=30).stdout.split()
        assert inside[:2] == [node, address] and inside[2:4] == [cluster.node_address("cpu02"), "cpu02"], inside
    # Not in this machine's hosts file, nor anywhere else it looks (a DNS server it cannot reach: given up on).
    assert subprocess.run(["timeout", "3", "getent", "hosts", "cpu01"], capture_output=True).returncode != 0, \
        "this machine resolves the node's name: nothing would catch pvhpc dialling a name"
    job = subprocess.run(["srun", "-p", "cpu", "-w", "cpu02", "sh", "-c", "hostname; hostname -I"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert job.stdout.split() == ["cpu02", cluster.node_address("cpu02")], job.stdout + job.stderr


@pytest.mark.cluster
def test_the_test_cluster_runs_its_own_slurms_tools_and_jobs_see_them(cluster, tmp_path):
    """The test cluster runs the Slurm chosen for it (--slurm, else the newest installed: 25.11 where its source
    is beside the checkout); its environment and its jobs' find that release's tools, not Debian's first."""
    env = dict(os.environ, **cluster.environment())
    said = run_slurm(cluster, "sinfo", "--version")
    assert said.strip().split()[-1] == str(cluster.slurm.version)
    # What pvhpc cluster env prints gets a shell there too.
    line = pvhpc("cluster", "env", "--dir", str(cluster.dir)).stdout.strip()
    shell = subprocess.run(["bash", "-c", f"{line} && sinfo --version"], capture_output=True, text=True)
    assert shell.stdout.split()[-1] == str(cluster.slurm.version), (line, shell.stderr)
    if not os.environ.get(test_cluster.SLURM_VARIABLE):
        built = sorted(backends.VENDOR.glob("slurm-*.tar.gz"))
        newest = built[-1].name[len("slurm-"):-len(".tar.gz")] if built else str(slurm_install.installed()[0].version)
        assert str(cluster.slurm.version) == newest
    # A job's own srun (mpiexec starts its daemons with it) is the cluster's release too.
    out = tmp_path / "srun-version.out"
    job = run_slurm(cluster, "sbatch", "--parsable", "-p", "cpu", "-o", str(out), "--wrap", "srun --version").strip()
    wait_until(lambda: out.exists() and out.read_text().strip(), 30, message=f"job {job} wrote srun's version")
    assert out.read_text().split()[-1] == str(cluster.slurm.version)


@pytest.mark.cluster
def test_a_running_cluster_is_not_mixed_with_another_slurm(cluster):
    others = [s for s in slurm_install.installed() if s.prefix != cluster.slurm.prefix]
    if not others:
        pytest.skip("only one Slurm is installed here")
    with pytest.raises(ClusterError, match=f"runs the Slurm in {cluster.slurm.prefix}; stop it first to start it on "
                                           f"Slurm {others[0].version}"):
        LocalCluster(cluster.dir, base_port=cluster.base_port, slurm=others[0]).start()
    assert cluster.is_running()


def test_slurm_is_chosen_by_release_or_prefix_and_a_wrong_choice_is_a_clear_error(tmp_path):
    assert SlurmVersion.parse("slurm 25.11.7") == SlurmVersion(25, 11, 7)
    assert SlurmVersion.parse("slurm-wlm 22.05.8\n").release == "22.05" and str(SlurmVersion(22, 5, 8)) == "22.05.8"
    with pytest.raises(ValueError, match="not a Slurm version"):
        SlurmVersion.parse("sinfo: fatal: Could not establish a configuration source")
    installed = slurm_install.installed()
    assert installed and installed == sorted(installed, key=lambda s: s.version, reverse=True)
    for found in installed:
        assert slurm_install.choose(found.version.release) == found == slurm_install.choose(str(found.prefix))
    assert slurm_install.choose() == installed[0]
    with pytest.raises(SlurmNotFound, match=r"Slurm 24\.05 is not installed here \(installed: Slurm "):
        slurm_install.choose("24.05")
    with pytest.raises(SlurmNotFound, match=f"no Slurm in {tmp_path}"):
        slurm_install.choose(str(tmp_path))
    proc = pvhpc("cluster", "start", "--dir", str(tmp_path / "c"), "--slurm", "24.05")
    assert proc.returncode == 1 and "Slurm 24.05 is not installed here" in proc.stderr, proc.stderr


def test_refuses_directory_it_cannot_write(tmp_path):
    with pytest.raises(ClusterError, match="cannot create cluster directory /proc/pvhpc"):
        LocalCluster("/proc/pvhpc-cluster").start()
    proc = pvhpc("cluster", "start", "--dir", "/proc/pvhpc-cluster")
    assert proc.returncode == 1
    assert "cannot create cluster directory /proc/pvhpc-cluster" in proc.stderr
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ClusterError, match="not writable"):
            LocalCluster(locked).start()


@pytest.mark.cluster
def test_demo_runs_the_whole_path(cluster, runtime_dir, tmp_path):
    image = tmp_path / "demo.jpg"
    proc = pvhpc("demo", "--cluster-dir", str(cluster.dir), "--port", str(free_port_block(1)), "--image", str(image),
                 env={"PVHPC_STATE_DIR": str(tmp_path / "state"), "PVHPC_RUNTIME_DIR": str(runtime_dir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"on Slurm {cluster.slurm.version} ({cluster.slurm.prefix})" in proc.stdout
    assert "ready in" in proc.stdout and "ended (cancelled by its user)" in proc.stdout
    assert foreground_fraction(image.read_bytes()) > 0.02


def test_each_clusters_nodes_get_names_and_addresses_of_their_own():
    """Named after the base port: two clusters never share a namespace, link or subnet, and every link name fits
    the kernel's 15 characters."""
    from pvhpc.localcluster.nodehosts import NodeNetwork

    nodes = ("gpu01", "gpu02", "cpu01", "cpu02")
    one, two = NodeNetwork(17000, nodes, "login"), NodeNetwork(17005, nodes, "login")
    assert not one.subnet.overlaps(two.subnet)
    assert not {h.netns for h in one.hosts} & {h.netns for h in two.hosts}
    assert len({h.address for h in one.hosts} | {one.login_address}) == 5
    for net in (one, two, NodeNetwork(65535, nodes, "login")):
        assert all(len(name) <= 15 for name in [net.bridge, *(h.link for h in net.hosts)])
    hosts = one.hosts_text()
    assert f"{one.login_address} login" in hosts and "127.0.1.1" not in hosts
    with pytest.raises(Exception, match="base port 80"):
        NodeNetwork(80, nodes, "login")
