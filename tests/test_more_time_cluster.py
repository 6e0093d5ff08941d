"""Each backend's set_time_limit on the real cluster, read back from Slurm itself (squeue's %l).

The test cluster's services run as root, which Slurm counts as an administrator: exactly the rights a site gives
pvhpc's account for extend_walltime: operator (``sacctmgr modify user pvhpc set adminlevel=operator``), so
root stands for that account here. The sudo way runs the shipped helper (deploy/pvhpc-extend-job, installed
root-owned as docs/sudoers.pvhpc says, its scontrol line set to the cluster's Slurm) through a real
``sudo -n -u root``; the sudoers rule that lets a non-root account do so is tests/test_more_time_sudo.py's.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from pvhpc.scheduler import ChangeRefused, JobRequest, make_scheduler
from pvhpc.scheduler.runners import LocalRunner

from tests import backends
from tests.harness.cluster import run_slurm
from tests.helpers import run, wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=backends.BACKENDS)
def backend(request, cluster):
    scheduler = backends.make(request.param, cluster)
    yield scheduler
    scheduler.close()


def submit(slurm, tmp_path, minutes: int = 5, suffix: str = "") -> tuple[str, str]:
    """A running job named as a session's (``suffix`` "-c1": as its first successor's)."""
    name = f"pvhpc-{secrets.token_hex(8)}{suffix}"
    job_id = run(slurm.submit(JobRequest(script="#!/bin/bash\nsleep 300\n", name=name, partition="cpu",
                                         time_limit_minutes=minutes, output=str(tmp_path / f"{name}.out"))))
    wait_until(lambda: run(slurm.query([job_id]))[job_id].is_running, 30, message=f"job {job_id} running")
    return job_id, name


def time_limit(cluster, job_id: str) -> str:
    return run_slurm(cluster, "squeue", "-h", "-j", job_id, "-o", "%l").strip()


@pytest.mark.cluster
def test_each_backend_raises_a_running_jobs_time_limit_as_an_operator(backend, slurm, cluster, tmp_path):
    job_id, _ = submit(slurm, tmp_path)
    try:
        assert time_limit(cluster, job_id) == "5:00"
        run(backend.set_time_limit(job_id, 8, "operator"))
        assert time_limit(cluster, job_id) == "8:00"
        run(backend.set_time_limit(job_id, 8, "operator"))   # the total again: nothing added twice
        assert time_limit(cluster, job_id) == "8:00"
        assert run(slurm.query([job_id]))[job_id].is_running
    finally:
        run(slurm.cancel(job_id))
    # Slurm's refusal, in Slurm's words.
    with pytest.raises(ChangeRefused, match=re.compile("invalid job id", re.I)):
        run(backend.set_time_limit("999999", 8, "operator"))


def installed_helper(cluster, where: Path) -> Path:
    """The helper as a site installs it: root's, 0755, its scontrol and slurm.conf lines naming the cluster's."""
    text = (REPO / "deploy" / "pvhpc-extend-job").read_text()
    text = text.replace('SCONTROL = "/usr/bin/scontrol"', f'SCONTROL = "{cluster.slurm.prefix}/bin/scontrol"')
    text = text.replace("SLURM_CONF = None", f'SLURM_CONF = "{cluster.conf}"')
    helper = where / "pvhpc-extend-job"
    helper.write_text(text)
    helper.chmod(0o755)
    for d in (where, *where.parents):
        assert d.stat().st_uid == 0 and (not d.stat().st_mode & 0o022 or d.stat().st_mode & stat.S_ISVTX), d
    return helper


@pytest.mark.cluster
@pytest.mark.parametrize("name", backends.BACKENDS)
def test_the_sudo_way_runs_the_helper_which_raises_only_a_running_pvhpc_job(name, slurm, cluster, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the helper is installed root's and run through sudo as root")
    helper = installed_helper(cluster, tmp_path)
    section = SimpleNamespace(submit_as="service", extend_helper=helper, **backends.scheduler_section(cluster, name))
    backend = make_scheduler(section, LocalRunner(section.environment))
    try:
        sudo_way(backend, slurm, cluster, tmp_path)
    finally:
        backend.close()


def sudo_way(backend, slurm, cluster, tmp_path):
    job_id, _ = submit(slurm, tmp_path)
    other = run(slurm.submit(JobRequest(script="#!/bin/bash\nsleep 300\n", name="not-a-session", partition="cpu",
                                        time_limit_minutes=5, output=str(tmp_path / "other.out"))))
    try:
        run(backend.set_time_limit(job_id, 7, "sudo"))
        assert time_limit(cluster, job_id) == "7:00"
        with pytest.raises(ChangeRefused, match="only grows here"):
            run(backend.set_time_limit(job_id, 6, "sudo"))
        with pytest.raises(ChangeRefused, match="is not a pvhpc session's job"):
            run(backend.set_time_limit(other, 9, "sudo"))
        assert time_limit(cluster, job_id) == "7:00" and time_limit(cluster, other) == "5:00"
    finally:
        run(slurm.cancel(job_id))
        run(slurm.cancel(other))
    # A continued session's job is its successor's, named pvhpc-<hex>-c1: More time works on it too.
    successor, _ = submit(slurm, tmp_path, suffix="-c1")
    try:
        run(backend.set_time_limit(successor, 7, "sudo"))
        assert time_limit(cluster, successor) == "7:00"
    finally:
        run(slurm.cancel(successor))
