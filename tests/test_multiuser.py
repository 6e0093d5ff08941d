"""Jobs run as the users who ask, through sudo, with real Unix users and a service account."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pvhpc.client import Client, ClientError
from pvhpc.jobscript import JOB_HELPER, SERVER_SCRIPT

from .helpers import foreground_fraction, wait_until
from .test_launcher_e2e import render

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parent.parent
USERS = {"alice": "pvhpc-t-alice", "bob": "pvhpc-t-bob", "service": "pvhpc-t-svc"}
SUDOERS = Path("/etc/sudoers.d/pvhpc-test")


@pytest.fixture(scope="module")
def unix_users():
    if os.geteuid() != 0:
        pytest.fail("this test makes Unix users and a sudoers rule: run it as root (CI does)")
    for name in USERS.values():
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    # The rule pvhpc ships, for this test's service account.
    rule = []
    for line in (ROOT / "docs" / "sudoers.pvhpc").read_text().splitlines():
        if line.startswith("Defaults:pvhpc "):
            line = line.replace("Defaults:pvhpc ", f"Defaults:{USERS['service']} ", 1)
        elif line.startswith("pvhpc ALL"):
            line = line.replace("pvhpc ALL", f"{USERS['service']} ALL", 1)
        rule.append(line)
    SUDOERS.write_text("\n".join(rule) + "\n")
    SUDOERS.chmod(0o440)
    check = subprocess.run(["visudo", "-cf", str(SUDOERS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    yield USERS
    SUDOERS.unlink()
    for name in USERS.values():
        subprocess.run(["pkill", "-u", name], capture_output=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)


def shared_dir() -> Path:
    """World-readable, as the node-side files and data must be on a real cluster's shared file system."""
    d = Path(tempfile.mkdtemp(prefix="pvhpc-test-shared-"))
    d.chmod(0o755)
    return d


def test_jobs_run_as_their_users_and_users_stay_apart(unix_users, service_factory, cluster, runtime_dir):
    shared = shared_dir()
    try:
        for f in (SERVER_SCRIPT, JOB_HELPER):
            shutil.copy(f, shared / f.name)
        data = shared / "data"
        data.mkdir(mode=0o755)
        svc = service_factory(
            "multiuser", directory=shared / "service",
            scheduler={"environment": cluster.environment(), "submit_as": "user"},
            runtime={"pythonpath": str(runtime_dir), "job_helper": str(shared / JOB_HELPER.name)},
            applications={"paraview": {"data_roots": [str(data)], "server_script": str(shared / SERVER_SCRIPT.name)}},
            auth={"kind": "header", "trusted_proxies": ["127.0.0.1"], "staff": ["pvhpc-staff"]},
        )
        service_uid = pwd.getpwnam(unix_users["service"]).pw_uid
        subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
        svc.start(as_user=unix_users["service"])
        alice = Client(svc.url, headers={"X-Remote-User": unix_users["alice"]})
        bob = Client(svc.url, headers={"X-Remote-User": unix_users["bob"]})

        session = alice.launch("paraview", partition="cpu")
        assert session["state"] == "ready", session
        env = dict(os.environ, **cluster.environment())
        owner = subprocess.run(["squeue", "-h", "-j", session["job_id"], "-o", "%U %u"], env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        assert owner == [str(pwd.getpwnam(unix_users["alice"]).pw_uid), unix_users["alice"]]
        assert subprocess.run(["squeue", "-h", "-u", unix_users["alice"], "-o", "%i"], env=env, capture_output=True,
                              text=True).stdout.split() == [session["job_id"]]
        assert foreground_fraction(render(session["sessionURL"], session["secret"])) > 0.01

        # The job's log lies in alice's home, readable by her alone; pvhpc reads it back as her.
        logs = Path(pwd.getpwnam(unix_users["alice"]).pw_dir) / ".pvhpc" / "logs"
        assert logs.stat().st_uid == pwd.getpwnam(unix_users["alice"]).pw_uid and logs.stat().st_mode & 0o077 == 0
        assert "starting ParaViewWeb" in alice.log(session["id"])
        assert os.stat(svc.dir / "pvhpc.sqlite").st_uid == service_uid

        for call in (lambda: bob.get(session["id"]), lambda: bob.cancel(session["id"]), lambda: bob.log(session["id"])):
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.status == 404

        ended = alice.cancel(session["id"])
        assert ended["state"] == "ended" and ended["end_reason"] == "cancelled"
        wait_until(lambda: not subprocess.run(["squeue", "-h", "-t", "pending,running", "-u", unix_users["alice"]],
                                              env=env, capture_output=True, text=True).stdout.strip(), 20,
                   message="alice's job cancelled (by alice, through sudo)")
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_without_a_sudoers_rule_submission_fails_clearly(service_factory, cluster, runtime_dir, tmp_path):
    """A user sudo does not let the service act as: the error names sudo's reason, and no job is left."""
    shared = shared_dir()
    svc = service_factory("nosudo", directory=shared / "service", scheduler={"environment": cluster.environment(), "submit_as": "user"},
                          auth={"kind": "header", "trusted_proxies": ["127.0.0.1"]})
    subprocess.run(["chown", "-R", "nobody", str(svc.dir)], check=True)
    svc.start(as_user="nobody")
    client = Client(svc.url, headers={"X-Remote-User": "root"})
    with pytest.raises(ClientError) as e:
        client.create("paraview", partition="cpu")
    assert e.value.status == 400 and "sudo" in e.value.message
    assert client.list()[0]["end_reason"] == "submit_failed"
    shutil.rmtree(shared, ignore_errors=True)
