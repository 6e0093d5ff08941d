"""The sudo way of raising a session job's time limit, as a site sets it up: a service account that is not root,
the shipped sudoers rule (docs/sudoers.pvhpc, installed by tests/harness/unix_users.py) and the shipped helper
installed where the rule names it. The account can raise a running pvhpc job's limit through the helper, and
cannot run scontrol as root itself."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from pvhpc.scheduler import ChangeRefused, JobRequest
from pvhpc.scheduler.runners import CommandRunner, LocalRunner
from pvhpc.scheduler.slurm_cli import SlurmCLI

from tests.harness.cluster import run_slurm
from tests.helpers import run, wait_until

REPO = Path(__file__).resolve().parent.parent
HELPER = Path("/usr/local/sbin/pvhpc-extend-job")   # where docs/sudoers.pvhpc names it

pytestmark = pytest.mark.cluster


class AsAccount(CommandRunner):
    """Runs each command as ``account`` (as the service itself would run, under its own account)."""

    def __init__(self, inner: LocalRunner, account: str):
        self.inner, self.account = inner, account

    async def run(self, argv, input=None, timeout=30, max_output=None):
        result = await self.inner.run(["runuser", "-u", self.account, "--", *argv], input=input, timeout=timeout,
                                      max_output=max_output)
        result.argv = list(argv)
        return result


@pytest.fixture
def installed_helper(cluster):
    if HELPER.exists():
        pytest.skip(f"{HELPER} is there already: not replaced by a test")
    text = (REPO / "deploy" / "pvhpc-extend-job").read_text()
    text = text.replace('SCONTROL = "/usr/bin/scontrol"', f'SCONTROL = "{cluster.slurm.prefix}/bin/scontrol"')
    HELPER.write_text(text.replace("SLURM_CONF = None", f'SLURM_CONF = "{cluster.conf}"'))
    HELPER.chmod(0o755)
    yield HELPER
    HELPER.unlink(missing_ok=True)


def test_the_service_account_raises_a_time_limit_through_the_shipped_rule_and_helper_only(
        unix_users, cluster, slurm, installed_helper, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("makes Unix users, a sudoers rule and a root helper: root only")
    account = unix_users["service"]
    backend = SlurmCLI(AsAccount(LocalRunner(cluster.environment()), account), prefix=cluster.slurm.prefix,
                       extend_helper=installed_helper)
    name = f"pvhpc-{secrets.token_hex(8)}"
    output = tmp_path / "job.out"
    tmp_path.chmod(0o755)
    job_id = run(slurm.submit(JobRequest(script="#!/bin/bash\nsleep 300\n", name=name, partition="cpu",
                                         time_limit_minutes=5, output=str(output))))
    try:
        wait_until(lambda: run(slurm.query([job_id]))[job_id].is_running, 30, message="job running")
        run(backend.set_time_limit(job_id, 9, "sudo"))
        assert run_slurm(cluster, "squeue", "-h", "-j", job_id, "-o", "%l").strip() == "9:00"
        # The account itself is no Slurm operator, and the rule lets it run no scontrol as root.
        with pytest.raises(ChangeRefused):
            run(backend.set_time_limit(job_id, 12, "operator"))
        denied = subprocess.run(["runuser", "-u", account, "--", "sudo", "-n", "-u", "root", "--",
                                 f"{cluster.slurm.prefix}/bin/scontrol", "update", f"JobId={job_id}", "TimeLimit=20"],
                                capture_output=True, text=True, env=dict(os.environ, **cluster.environment()))
        assert denied.returncode != 0 and "sudo" in denied.stderr, denied
        assert run_slurm(cluster, "squeue", "-h", "-j", job_id, "-o", "%l").strip() == "9:00"
    finally:
        run(slurm.cancel(job_id))
