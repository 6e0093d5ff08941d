"""Network-fault drills: the test cluster's nodes are hosts of their own (pvhpc/localcluster/nodehosts.py), and the
drills cut what joins them to the login side, each recorded as a row of the drill table (tests/drill_report.py).

- A ready session's node loses its link for 90 s: Slurm marks the node down and fails the job, pvhpc ends the
  session (node_failure) and says so, and once the link is back the node's watchdog learns the session is over
  and ends what the job left there, before Slurm takes the node back.
- The callback path alone is cut while a session starts (the node up, slurmd fine): the job's report waits, and
  the session becomes ready once it gets through.
- A ready session's link flaps: short blips end nothing, and the view still renders afterwards.
- A parallel session over two nodes loses its second node: the session ends, and nothing of it is left on either
  node once the link is back.

Lost 0 and orphaned 0 in each. Run once (not again on the second Slurm release: nothing here is Slurm's release).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from tests.harness.cluster import back_in_service, known_job_ids
from tests.harness.drills import audit_jobs, drill_service
from tests.helpers import processes_of_cluster_job, render, wait_until

pytestmark = pytest.mark.cluster
LINK_CUT_S = 90
# The node's watchdog asks pvhpc every 15 s (runtime.watchdog_interval): the job's processes end within this
# of the link coming back, whatever Slurm does.
GONE_AFTER_LINK_S = 60


@pytest.fixture(autouse=True)
def _hosts_only(cluster):
    if not cluster.multi_host:
        pytest.skip(f"the test cluster's nodes are not hosts of their own here: {cluster.describe_shape()}")


def ended(client, session_id: str):
    s = client.get(session_id)
    return s if s["state"] == "ended" else None


@dataclass
class LinkCut:
    told_s: float          # from the cut to the session ended
    ended: dict            # the session as it ended
    gone_s: float          # from the link back to nothing of the job left on the cluster


def cut_under_session(cluster, client, session: dict, node: str, seconds: float | None = LINK_CUT_S) -> LinkCut:
    """Cut ``node``'s link under ``session`` for ``seconds`` (None: until the session has ended): wait for the
    session to end meanwhile, mend the link, and wait for the job's processes to be gone."""
    # Found before the cut, or the wait for them to be gone below would be met at once, whatever the drill did.
    assert processes_of_cluster_job(cluster, session["job_id"]), f"no process of job {session['job_id']} found"
    cut = time.monotonic()
    cluster.network.cut(node)
    try:
        over = wait_until(lambda: ended(client, session["id"]), seconds or LINK_CUT_S, interval=0.5,
                          message=f"the session ended while {node} was cut off")
        told = time.monotonic() - cut
        time.sleep(max(0.0, (seconds or 0) - (time.monotonic() - cut)))
    finally:
        cluster.network.mend(node)
    mended = time.monotonic()
    wait_until(lambda: not processes_of_cluster_job(cluster, session["job_id"]), GONE_AFTER_LINK_S + 30,
               interval=0.5, message="the job's processes gone")
    return LinkCut(told, over, time.monotonic() - mended)


def test_a_nodes_link_cut_for_90_s_under_a_ready_session(service_factory, cluster, tmp_path, drill_record):
    """A ready session's node loses its link for 90 s (its veth down). Slurm stops hearing from it, marks it
    down and fails the job; pvhpc ends the session as node_failure. When the link is back, the node's watchdog
    asks pvhpc, learns the session is over, and ends the job's processes: none is left 60 s after the link
    returns (Slurm alone takes 20 s to minutes to kill them)."""
    drill_record(drill=f"node's link cut for {LINK_CUT_S} s under a ready session", sessions=1,
                 recovery="from the link back to nothing of the job left on the node", bound_s=GONE_AFTER_LINK_S)
    ignore = known_job_ids(cluster)
    svc, routes = drill_service(service_factory, tmp_path)
    svc.start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    node = session["node"]
    cut = cut_under_session(cluster, client, session, node)
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=int(cut.ended["end_reason"] != "node_failure"), orphaned=len(audit.orphaned),
                 recover_s=round(cut.gone_s, 1),
                 note=f"the user was told {cut.told_s:.0f} s after the cut: ended {cut.ended['end_reason']} "
                      f"({cut.ended.get('detail') or 'no detail'})")
    assert cut.ended["end_reason"] == "node_failure", cut.ended
    assert session["id"] not in routes.read()
    assert cut.gone_s <= GONE_AFTER_LINK_S, f"the job's processes lived {cut.gone_s:.0f} s after the link came back"
    assert audit.ok, str(audit)
    back_in_service(cluster, node)


def test_the_callback_path_cut_while_a_session_starts(service_factory, cluster, tmp_path, drill_record):
    """While a session starts, what its node sends to pvhpc's port is refused for 20 s (the node otherwise up:
    slurmd, the job and its server are fine). The job's report is retried until it gets through, and the session
    becomes ready; nothing ends it meanwhile."""
    drill_record(drill="callback path cut for 20 s while a session starts", sessions=1,
                 recovery="from the path back to the session ready")
    ignore = known_job_ids(cluster)
    svc, routes = drill_service(service_factory, tmp_path)
    nodes = ("cpu01", "cpu02")
    for node in nodes:
        cluster.network.block_port(node, svc.port)
    try:
        svc.start()
        client = svc.client()
        session = client.create("paraview", partition="cpu")
        wait_until(lambda: client.get(session["id"])["state"] == "starting", 60, message="the job running")
        time.sleep(20)
        assert client.get(session["id"])["state"] == "starting"
    finally:
        for node in nodes:
            cluster.network.unblock_port(node, svc.port)
    opened = time.monotonic()
    ready = wait_until(lambda: (lambda s: s if s["state"] in ("ready", "ended") else None)(client.get(session["id"])),
                       90, interval=0.2, message="the session ready once its report got through")
    late = time.monotonic() - opened
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=int(ready["state"] != "ready"), orphaned=len(audit.orphaned), recover_s=round(late, 1))
    assert ready["state"] == "ready", ready
    client.cancel(session["id"])
    assert audit.ok, str(audit)


def test_a_flapping_link_ends_nothing(service_factory, cluster, tmp_path, drill_record):
    """A ready session's node link goes down for 2 s and up for 2 s, ten times. Short blips are not a node
    failure: the session stays ready throughout, its job runs on, and its view renders afterwards."""
    drill_record(drill="node's link flapping (2 s down, 2 s up, 10 times) under a ready session", sessions=1,
                 recovery="from the last blip to a rendered image")
    ignore = known_job_ids(cluster)
    svc = service_factory(frontend={"kind": "builtin"}).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    node = session["node"]
    for _ in range(10):
        cluster.network.cut(node)
        time.sleep(2)
        cluster.network.mend(node)
        time.sleep(2)
        assert client.get(session["id"])["state"] == "ready"
    settled = time.monotonic()
    image = render(f"ws://127.0.0.1:{svc.port}/proxy?sessionId={session['id']}&path=ws", session["secret"])
    recovered = time.monotonic() - settled
    audit = audit_jobs(cluster, svc, ignore)
    still = client.get(session["id"])
    drill_record(lost=int(still["state"] != "ready"), orphaned=len(audit.orphaned), recover_s=round(recovered, 1))
    assert still["state"] == "ready" and image, still
    client.cancel(session["id"])
    assert audit.ok, str(audit)
    # Slurm may mark a flapping node not responding, or down, after the session's end: the next drill needs it.
    back_in_service(cluster, node)


def test_a_parallel_session_loses_one_of_its_nodes(service_factory, cluster, tmp_path, drill_record):
    """A parallel session (2 ranks over cpu01 and cpu02) loses the link of the node its web server does not run
    on, until the session has ended. Slurm fails the job, pvhpc ends the session (node_failure); once the link is
    back nothing of the job is left on either node within 60 s."""
    drill_record(drill="parallel session loses one of its 2 nodes until the session has ended", sessions=1,
                 recovery="from the link back to nothing of the job left on either node", bound_s=GONE_AFTER_LINK_S)
    ignore = known_job_ids(cluster)
    cpu = {"walltime": {"default": 30, "max": 120}, "max_nodes": 2, "max_ranks": 4, "max_ranks_per_node": 2}
    data = tmp_path / "data"
    data.mkdir()
    apps = {"paraview": {"data_roots": [str(data)], "start_timeout": 120,
                         "pvserver": ["/usr/bin/pvserver", "--force-offscreen-rendering"]}}
    svc, routes = drill_service(service_factory, tmp_path, partitions={"cpu": cpu}, applications=apps)
    for node in ("cpu01", "cpu02"):   # both in service: an earlier cut may have left one down for a while
        back_in_service(cluster, node)
    svc.start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu", nodes=2, ranks=2)
    other = "cpu02" if session["node"] == "cpu01" else "cpu01"
    cut = cut_under_session(cluster, client, session, other, seconds=None)
    audit = audit_jobs(cluster, svc, ignore)
    drill_record(lost=int(cut.ended["end_reason"] != "node_failure"), orphaned=len(audit.orphaned),
                 recover_s=round(cut.gone_s, 1),
                 note=f"the user was told {cut.told_s:.0f} s after the cut: {cut.ended['end_reason']}")
    assert cut.ended["end_reason"] == "node_failure", cut.ended
    assert cut.gone_s <= GONE_AFTER_LINK_S, f"the job's processes lived {cut.gone_s:.0f} s after the link came back"
    assert audit.ok, str(audit)
    back_in_service(cluster, other)
