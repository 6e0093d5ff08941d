"""The service's commands through its command spawner, on the real cluster: many users at once, each session its
own job, and a spawner that dies costs no session."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.cluster import block_gpu_partition, cancel, pvhpc_jobs
from tests.helpers import wait_until

pytestmark = pytest.mark.cluster

STAFF = "spawner-staff"


def spawners_of(pid: int) -> list[int]:
    """The service's children that are its command spawner."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"pvhpc.scheduler.spawner" in cmdline:
                found.append(int(child))
    return found


def test_users_at_once_each_get_their_own_job_and_a_dead_spawner_loses_none(service_factory, cluster):
    blockers: list[str] = []
    block_gpu_partition(cluster, blockers)   # the sessions' jobs queue behind these: nothing starts
    svc = service_factory(auth={"kind": "header", "header": "X-Remote-User", "staff": [STAFF]}).start()
    users = [f"crowd{i:02d}" for i in range(30)]
    try:
        with ThreadPoolExecutor(len(users)) as pool:
            created = list(pool.map(lambda u: svc.user_client(u).create("paraview", partition="gpu"), users))
        assert [s["state"] for s in created] == ["queued"] * len(users)
        job_ids = [s["job_id"] for s in created]
        assert len(set(job_ids)) == len(users)
        assert sorted(j.job_id for j in pvhpc_jobs(cluster)) == sorted(job_ids)
        [spawner] = spawners_of(svc.proc.pid)   # the sbatch were started by it, not by the service

        os.kill(spawner, signal.SIGKILL)
        wait_until(lambda: not spawners_of(svc.proc.pid), 10, message="the killed spawner reaped")
        late = svc.user_client("latecomer").create("paraview", partition="gpu")
        assert late["state"] == "queued" and late["job_id"] not in job_ids
        assert len(pvhpc_jobs(cluster)) == len(users) + 1
        [again] = spawners_of(svc.proc.pid)
        assert again != spawner

        with ThreadPoolExecutor(len(users)) as pool:
            ended = list(pool.map(lambda s: svc.user_client(s["user"]).cancel(s["id"]), created + [late]))
        assert {s["state"] for s in ended} == {"ended"}
        wait_until(lambda: not pvhpc_jobs(cluster), 30, message="every session's job gone from the queue")
        assert not svc.user_client(STAFF).list(state="live", all_users=True)
        service_pid = svc.proc.pid
        svc.stop()
        assert not spawners_of(service_pid)
        wait_until(lambda: not Path(f"/proc/{again}").exists()
                   or "Z" in Path(f"/proc/{again}/stat").read_text().rsplit(")", 1)[1].split()[:1], 10,
                   message="the spawner ended with the service")
    finally:
        cancel(cluster, blockers)
