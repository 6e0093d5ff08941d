"""The local cluster commands, against real munged/slurmctld/slurmd."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pvhpc.scheduler.localcluster import ClusterError, LocalCluster

from tests.harness.ports import free_port_block
from tests.helpers import foreground_fraction


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
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %P %G"], env=dict(os.environ, **cluster.environment()),
                           capture_output=True, text=True, check=True).stdout
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
    assert "ready in" in proc.stdout and "ended (cancelled by its user)" in proc.stdout
    assert foreground_fraction(image.read_bytes()) > 0.02
