"""The test's Slurm cluster (pvhpc's own local cluster on free ports) and the jobs tests put on it.

``pvhpc.localcluster.cluster`` starts, waits for and stops the daemons;
this module only picks where and on which ports, and what tests do with
Slurm's commands around pvhpc: look at the queue and the nodes, fill a partition, take a node out and back,
clean up. It is the one place tests run Slurm's commands; where a test needs a job's state, it reads it in
pvhpc's own words (``pvhpc.scheduler.slurm_states``), never with a list of Slurm's of its own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from pvhpc.paths import JOBSCRIPTS_DIR
from pvhpc.localcluster.cluster import LocalCluster
from pvhpc.scheduler import JobInfo, JobState
from pvhpc.scheduler import slurm_states

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


def run_slurm(cluster: LocalCluster, *argv: str, check: bool = True) -> str:
    """Run one of Slurm's commands against ``cluster``; its standard output."""
    return subprocess.run(list(argv), env=dict(os.environ, **cluster.environment()), capture_output=True, text=True,
                          check=check).stdout


def squeue(cluster, *args, check: bool = True) -> list[list[str]]:
    """squeue's rows: id, name, state, reason, nodes."""
    out = run_slurm(cluster, "squeue", "-h", *args, "-o", "%i|%j|%T|%r|%N", check=check)
    return [line.split("|") for line in out.splitlines() if line.strip()]


def jobs(cluster, *args, check: bool = True) -> list[JobInfo]:
    """squeue's rows (``args`` choose them) in pvhpc's words, as its Slurm backends read them."""
    return [slurm_states.job_info(job_id, state, reason, nodes, name)
            for job_id, name, state, reason, nodes in squeue(cluster, *args, check=check)]


def every_job(cluster) -> list[JobInfo]:
    """Every job Slurm knows of, finished ones included (they stay for MinJobAge)."""
    return jobs(cluster, "-t", "all")


def job(cluster, job_id: str) -> JobInfo | None:
    """One job as Slurm knows it now, finished or not; None once Slurm has forgotten it (squeue refuses an id it
    no longer knows)."""
    found = jobs(cluster, "-t", "all", "-j", job_id, check=False)
    return found[0] if found else None


def live(info: JobInfo | None) -> bool:
    """Whether a job still holds its place: queued or running (a job on its way out is not)."""
    return info is not None and info.state in (JobState.PENDING, JobState.RUNNING)


def in_queue(cluster, job_id: str) -> bool:
    """Whether Slurm still holds the job, not ended: queued, running or on its way out."""
    found = job(cluster, job_id)
    return found is not None and not found.is_finished


def job_owner(cluster, job_id: str) -> tuple[str, str]:
    """Whose the job is, as Slurm says: (uid, user name)."""
    uid, user = run_slurm(cluster, "squeue", "-h", "-j", job_id, "-o", "%U %u").split()
    return uid, user


def known_job_ids(cluster) -> set[str]:
    """Jobs of earlier tests: a test judges only the jobs it made."""
    return {j.job_id for j in every_job(cluster)}


def node_state(cluster, node: str) -> str:
    """sinfo's compact state of ``node`` ("idle", "mix", "alloc", "drng", "drain", "down"), its flags left off."""
    return run_slurm(cluster, "sinfo", "-h", "-n", node, "-o", "%t").strip().rstrip("*~#")


def in_service(cluster, node: str) -> bool:
    return node_state(cluster, node) in ("idle", "mix", "alloc")


def set_node_state(cluster, node: str, state: str, reason: str | None = None) -> None:
    """What staff do with ``scontrol update``: State=DOWN, DRAIN (both need a reason) or RESUME."""
    run_slurm(cluster, "scontrol", "update", f"NodeName={node}", f"State={state}",
              *([f"Reason={reason}"] if reason else []))


def back_in_service(cluster, node: str, timeout: float = 120) -> None:
    """With ReturnToService=2 a node comes back by itself once its slurmd registers; RESUME it if it did not."""

    def back() -> bool:
        if in_service(cluster, node):
            return True
        run_slurm(cluster, "scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
        return False

    wait_until(back, timeout, interval=1, message=f"{node} back in service")


def pvhpc_jobs(cluster, states="pending,running") -> list[JobInfo]:
    """pvhpc's jobs in Slurm's ``states`` (squeue -t; finished ones of earlier tests stay in squeue for MinJobAge)."""
    return [j for j in jobs(cluster, "-t", states) if j.name.startswith("pvhpc-")]


def block_gpu_partition(cluster, ids: list[str] | None = None) -> list[str]:
    """Take every GPU of partition gpu with plain sleep jobs; return their ids (added to ``ids`` as each is
    queued, if given: for a test to cancel them even if this fails half-way)."""
    ids = [] if ids is None else ids
    for node in ("gpu01", "gpu02"):
        out = run_slurm(cluster, "sbatch", "--parsable", "-p", "gpu", "-w", node, "--gres=gpu:2", "-J", "blocker",
                        "-o", "/dev/null", "--wrap", "sleep 600")
        ids.append(out.strip().split(";")[0])
    wait_until(lambda: all(j.is_running for j in jobs(cluster, "-j", ",".join(ids))), 30,
               message="blockers running")
    return ids


def cancel(cluster, ids, check: bool = True) -> None:
    run_slurm(cluster, "scancel", *ids, check=check)


def cancel_every_job(cluster) -> None:
    """No test may leave a job behind for the next one."""
    ids = run_slurm(cluster, "squeue", "-h", "-o", "%i", check=False).split()
    if ids:
        cancel(cluster, ids, check=False)


def slow_start_jobscript(directory) -> str:
    """The real job script with a pause before the server starts: a session that stays 'starting' for a while."""
    text = (JOBSCRIPTS_DIR / "paraview-web.sh").read_text()
    start = '"$HELPER_PYTHON" -S "${parallel[@]}" "$LAUNCHER"'
    assert start in text, "the job script no longer starts its launcher as this stand-in expects"
    text = text.replace(start, "sleep 20\n" + start, 1)
    path = directory / "slow-start.sh"
    path.write_text(text)
    return str(path)
