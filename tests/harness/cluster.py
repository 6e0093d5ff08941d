"""The test's Slurm cluster (pvhpc's own local cluster on free ports) and the jobs tests put on it.

``pvhpc.localcluster.cluster`` starts, waits for and stops the daemons;
this module only picks where and on which ports, and what tests do with
Slurm's commands around pvhpc: look at the queue, fill a partition, clean up.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from pvhpc.paths import JOBSCRIPTS_DIR
from pvhpc.localcluster.cluster import LocalCluster

from tests.harness.ports import free_port_block
from tests.helpers import wait_until

REUSE_VARIABLE = "PVHPC_TEST_SLURM_CONF"   # names the slurm.conf of a cluster you already run while you work
SLURM_VARIABLE = "PVHPC_TEST_SLURM"   # which Slurm the test cluster runs: a release (25.11, 22.05) or a prefix
# Set to 1 to run the tests on nodes that are processes of this host (the default: hosts of their own, as root).
SINGLE_HOST_VARIABLE = "PVHPC_TEST_SINGLE_HOST"


def reused_cluster() -> LocalCluster | None:
    """The running cluster PVHPC_TEST_SLURM_CONF names, if it names one."""
    conf = os.environ.get(REUSE_VARIABLE)
    if not conf:
        return None
    cluster = LocalCluster(Path(conf).parent.parent)
    assert cluster.is_running(), f"{REUSE_VARIABLE}={conf} names a cluster that is not running"
    return cluster


def start_cluster(slurm: str | None = None) -> LocalCluster:
    """A new cluster in a new temporary directory, on five free ports, every node idle, on the Slurm
    ``slurm`` names (else $PVHPC_TEST_SLURM, else the newest installed, as ``pvhpc cluster start``), its nodes
    hosts of their own where this machine allows."""
    # A short path: munge and slurm sockets have length limits.
    directory = Path(tempfile.mkdtemp(prefix="pvhpc-test-cluster-"))
    directory.chmod(0o755)   # every user's Slurm commands read its slurm.conf and use its munge socket
    single = os.environ.get(SINGLE_HOST_VARIABLE) == "1"
    cluster = LocalCluster(directory, base_port=free_port_block(5),
                           slurm=slurm or os.environ.get(SLURM_VARIABLE) or None, hosts=False if single else None)
    if cluster.shape_note and os.environ.get("PVHPC_TESTS_AFTER_INSTALL"):
        # tests/run.sh runs as root: every real-component test is meant to cross the nodes' network.
        raise AssertionError(f"the test cluster could not be made of hosts: {cluster.shape_note}")
    cluster.start()
    return cluster


def _slurm(cluster: LocalCluster, argv: list[str], check: bool = True) -> str:
    return subprocess.run(argv, env=dict(os.environ, **cluster.environment()), capture_output=True, text=True,
                          check=check).stdout


def squeue(cluster, *args) -> list[list[str]]:
    """squeue's rows: id, name, state, reason, nodes."""
    out = _slurm(cluster, ["squeue", "-h", *args, "-o", "%i|%j|%T|%r|%N"])
    return [line.split("|") for line in out.splitlines() if line.strip()]


def pvhpc_jobs(cluster, states="pending,running") -> list[list[str]]:
    """pvhpc's live jobs (finished ones of earlier tests stay in squeue for MinJobAge)."""
    return [j for j in squeue(cluster, "-t", states) if j[1].startswith("pvhpc-")]


def block_gpu_partition(cluster) -> list[str]:
    """Take every GPU of partition gpu with plain sleep jobs; return their ids."""
    ids = []
    for node in ("gpu01", "gpu02"):
        out = _slurm(cluster, ["sbatch", "--parsable", "-p", "gpu", "-w", node, "--gres=gpu:2", "-J", "blocker",
                               "-o", "/dev/null", "--wrap", "sleep 600"])
        ids.append(out.strip().split(";")[0])
    wait_until(lambda: all(j[2] == "RUNNING" for j in squeue(cluster, "-j", ",".join(ids))), 30,
               message="blockers running")
    return ids


def cancel(cluster, ids) -> None:
    subprocess.run(["scancel", *ids], env=dict(os.environ, **cluster.environment()), check=True)


def cancel_every_job(cluster) -> None:
    """No test may leave a job behind for the next one."""
    jobs = _slurm(cluster, ["squeue", "-h", "-o", "%i"], check=False).split()
    if jobs:
        subprocess.run(["scancel", *jobs], env=dict(os.environ, **cluster.environment()))


def slow_start_jobscript(directory) -> str:
    """The real job script with a pause before the server starts: a session that stays 'starting' for a while."""
    text = (JOBSCRIPTS_DIR / "paraview-web.sh").read_text()
    start = '"$HELPER_PYTHON" "${parallel[@]}" "$LAUNCHER"'
    assert start in text, "the job script no longer starts its launcher as this stand-in expects"
    text = text.replace(start, "sleep 20\n" + start, 1)
    path = directory / "slow-start.sh"
    path.write_text(text)
    return str(path)
