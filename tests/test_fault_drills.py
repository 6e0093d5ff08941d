"""Fault drills on the real cluster: each session ends with the right reason, within two poll cycles of Slurm
knowing, and leaves the front end's map; the database locked under a request fails it cleanly."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from pvhpc.client import ClientError

from .helpers import processes_of_job, wait_until

pytestmark = pytest.mark.cluster
POLL = 1   # the test services poll every second


def slurm(cluster, *argv) -> str:
    return subprocess.run(list(argv), env=dict(os.environ, **cluster.environment()), capture_output=True, text=True,
                          check=True).stdout


def job_state(cluster, job_id: str) -> str:
    out = slurm(cluster, "squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T")
    return out.strip()


def ended_after_slurm_knew(client, cluster, session, slurm_states, timeout=120):
    """Wait for Slurm to report one of ``slurm_states``, then for the session to end: return it and the lag."""
    wait_until(lambda: job_state(cluster, session["job_id"]) in slurm_states, timeout,
               message=f"job {session['job_id']} in {slurm_states}")
    known = time.monotonic()
    ended = wait_until(lambda: (lambda s: s if s["state"] == "ended" else None)(client.get(session["id"])), 10,
                       interval=0.1, message="session ended")
    return ended, time.monotonic() - known


def test_node_downed_under_a_session(service_factory, cluster):
    svc = service_factory(frontend={"kind": "builtin"}).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    node = session["node"]
    try:
        slurm(cluster, "scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=pvhpc-drill")
        ended, lag = ended_after_slurm_knew(client, cluster, session, {"NODE_FAIL"})
        assert ended["end_reason"] == "node_failure" and lag <= 2 * POLL + 1, (ended, lag)
        assert not [s for s in client.list(state="live")]
    finally:
        # With ReturnToService=2 the node comes back by itself once it answers; RESUME it if it did not.
        env = dict(os.environ, **cluster.environment())

        def back() -> bool:
            if slurm(cluster, "sinfo", "-h", "-n", node, "-o", "%t").strip().rstrip("*") in ("idle", "mix", "alloc"):
                return True
            subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], env=env, capture_output=True)
            return False

        wait_until(back, 60, interval=1, message=f"{node} back in service")


def test_job_reaches_its_walltime(service_factory, cluster):
    svc = service_factory().start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu", walltime=1)
    ended, lag = ended_after_slurm_knew(client, cluster, session, {"TIMEOUT"}, timeout=180)
    assert ended["end_reason"] == "walltime" and lag <= 2 * POLL + 1, (ended, lag)


def test_server_crash_ends_the_session(service_factory, cluster):
    svc = service_factory().start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    servers = [p for p in processes_of_job(session["job_id"]) if "pvweb_server.py" in p]
    assert len(servers) == 1, servers
    os.kill(int(servers[0].split(":")[0]), signal.SIGKILL)
    killed = time.monotonic()
    # The job says so at once: no waiting for Slurm or for a poll.
    ended = wait_until(lambda: (lambda s: s if s["state"] == "ended" else None)(client.get(session["id"])), 2 * POLL,
                       interval=0.1, message="session ended within two poll cycles of the crash")
    assert (ended["end_reason"], ended["detail"]) == (
        "failed", "the job failed: the ParaView server stopped: killed by signal 9"), (ended, time.monotonic() - killed)
    wait_until(lambda: job_state(cluster, session["job_id"]) == "FAILED", 30, message="Slurm records the failure")


def test_database_locked_fails_requests_cleanly_then_they_succeed(service_factory, cluster):
    svc = service_factory().start()
    client = svc.client()
    db = svc.dir / "pvhpc.sqlite"
    holder = sqlite3.connect(db, timeout=1, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release_later():
        time.sleep(13)   # longer than the service's busy timeout (10 s)
        holder.rollback()
        holder.close()
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    with pytest.raises(ClientError) as e:
        client.create("paraview", partition="cpu")
    assert e.value.status == 503 and "database is busy" in e.value.message
    released.wait(30)
    assert client.list() == [], "a half-written session was left behind"
    session = client.create("paraview", partition="cpu")
    assert session["state"] in ("submitting", "queued")
    client.cancel(session["id"])
