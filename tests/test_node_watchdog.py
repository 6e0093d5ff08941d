"""The node's watchdog on the real cluster (pvhpc/node/watchdog.py): a session's job learns that its session is
over, or that pvhpc has been away too long, and ends everything it runs, without Slurm's help.

- pvhpc ends a ready session while its job runs on (written to the store as another instance would, and as
  pvhpc does when Slurm cannot reach the node to end the job): the job's processes are gone within a bound.
- pvhpc goes away: a restart shorter than the grace ends nothing; staying away longer than the grace ends the
  job, and its log says why.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from pvhpc.db.store import Store
from pvhpc.sessions import lifecycle
from pvhpc.jobs.states import EndReason

from tests.helpers import processes_of_cluster_job, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.paraview]
INTERVAL = 2
# From pvhpc's word to nothing of the job left: one interval, one ask, the launcher's stop grace (1.5 s), the job
# script's own clean-up (2 s at most) and room for a 2-core machine shared with other tests.
GONE_WITHIN = INTERVAL + 1 + 1.5 + 2 + 5
ASK = re.compile(r"\b200 GET /api/v1/sessions/\S+/report\b")


def watchdog_service(service_factory, runtime_dir, **runtime):
    return service_factory(runtime={"pythonpath": str(runtime_dir), "watchdog_interval": INTERVAL, **runtime})


def end_in_the_store_only(svc, session_id: str) -> None:
    """The session ended as pvhpc ends it, and its job left alone (no scancel), as when Slurm cannot reach the
    node: what the watchdog must make up for."""
    store = Store(yaml.safe_load(svc.config_path.read_text())["service"]["database"])
    try:
        assert store.change(session_id, lifecycle.ended(EndReason.NODE_FAILURE, "its node stopped answering"))
    finally:
        store.engine.dispose()


def test_a_session_pvhpc_ended_without_slurm_ends_on_its_node(service_factory, runtime_dir, cluster):
    svc = watchdog_service(service_factory, runtime_dir).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    job = session["job_id"]
    assert processes_of_cluster_job(cluster, job)
    # The job asks through the network pvhpc's callback URL crosses, and a live session's answer ends nothing.
    wait_until(lambda: len(ASK.findall(svc.log.read_text())) >= 2, 4 * INTERVAL + 10, interval=0.5,
               message="two asks of the node's watchdog in the service's log")
    assert client.get(session["id"])["state"] == "ready" and processes_of_cluster_job(cluster, job)

    end_in_the_store_only(svc, session["id"])
    ended = time.monotonic()
    wait_until(lambda: not processes_of_cluster_job(cluster, job), GONE_WITHIN + 20, interval=0.2,
               message="the job's processes gone from the node")
    gone = time.monotonic() - ended
    assert gone <= GONE_WITHIN, f"the job's processes lived {gone:.1f} s after pvhpc ended the session"
    log = client.log(session["id"])
    assert "pvhpc says this session has ended (node_failure): stopping the session's server" in log, log
    assert "/api/v1/sessions/" not in log, "the watchdog wrote a callback URL (it names the session) to the log"


def test_pvhpc_away_past_the_grace_ends_the_job_and_a_restart_ends_nothing(service_factory, runtime_dir, cluster):
    grace = 10 * INTERVAL
    svc = watchdog_service(service_factory, runtime_dir, watchdog_grace=grace).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    job = session["job_id"]

    # A crash and a restart: the service away for a few seconds, well under the grace, and long enough for the
    # watchdog to miss at least one answer (a restart quicker than an interval would go unnoticed: nothing to test).
    svc.kill()
    time.sleep(2 * INTERVAL + 1)
    svc.start()
    wait_until(lambda: "pvhpc answers again" in client.log(session["id"]), 4 * INTERVAL + 10, interval=0.5,
               message="the watchdog reaching pvhpc again after its restart")
    time.sleep(2 * INTERVAL)
    assert client.get(session["id"])["state"] == "ready" and processes_of_cluster_job(cluster, job)

    svc.stop()
    away = time.monotonic()
    wait_until(lambda: not processes_of_cluster_job(cluster, job), grace + GONE_WITHIN + 20, interval=0.2,
               message="the job's processes gone from the node")
    gone = time.monotonic() - away
    # The grace counts from the last answer, at most an interval before pvhpc went away.
    assert grace - INTERVAL < gone <= grace + GONE_WITHIN, f"the job ended {gone:.1f} s after pvhpc went away"
    svc.start()
    log = client.log(session["id"])
    assert f"longer than runtime.watchdog_grace ({grace} s): stopping the session's server" in log, log
    # Back, pvhpc finds the job gone and ends the session (Slurm's word on the job, as for any job that ended).
    over = client.wait(session["id"], until=("ended",), timeout=60)
    assert over["state"] == "ended", over
