"""Jobs run as the users who ask, through sudo, with real Unix users and a service account."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from pvhpc.client.api import ClientError

from tests.harness.cluster import job_owner, jobs, live
from tests.harness.unix_users import shared_dir, shared_site
from tests.helpers import foreground_fraction, render, wait_until

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parent.parent


def render_as(url: str, secret: str, user: str) -> bytes:
    """Connect through the front end as a user (the trusted header a front end would set) and render."""
    return render(url, secret, headers={"X-Remote-User": user}, source="Cone")


def test_jobs_run_as_their_users_and_users_stay_apart(unix_users, service_factory, cluster, runtime_dir):
    shared, node_side = shared_site(runtime_dir)
    try:
        svc = service_factory(
            "multiuser", directory=shared / "service",
            scheduler={**cluster.scheduler_config(), "submit_as": "user"},
            **node_side,
            auth={"kind": "header", "staff": ["pvhpc-staff"]},
            frontend={"kind": "builtin"},
            frontend_socket_group=None,   # the test's service account is not in Apache's group; it keeps its own
        )
        service_uid = pwd.getpwnam(unix_users["service"]).pw_uid
        subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
        svc.start(as_user=unix_users["service"])
        alice = svc.user_client(unix_users["alice"])
        bob = svc.user_client(unix_users["bob"])

        session = alice.launch("paraview", partition="cpu")
        assert session["state"] == "ready", session
        owner = job_owner(cluster, session["job_id"])
        assert owner == (str(pwd.getpwnam(unix_users["alice"]).pw_uid), unix_users["alice"])
        assert [j.job_id for j in jobs(cluster, "-u", unix_users["alice"], check=False)] == [session["job_id"]]
        proxy = f"ws://127.0.0.1:{svc.port + 1}/proxy?sessionId={session['id']}&path=ws"   # the front end
        assert foreground_fraction(render_as(proxy, session["secret"], unix_users["alice"])) > 0.01
        # Bob, with Alice's session id and even her secret, is refused by the front end before any upgrade.
        with pytest.raises(Exception, match="404"):
            render_as(proxy, session["secret"], unix_users["bob"])
        bobs = bob.create("paraview", partition="cpu")
        bob_job = wait_until(lambda: bob.get(bobs["id"])["job_id"], 20, message="bob's job id")
        assert job_owner(cluster, bob_job)[0] == str(pwd.getpwnam(unix_users["bob"]).pw_uid)
        bob.cancel(bobs["id"])

        # The job's log lies in alice's home, readable by her alone; pvhpc reads it back as her.
        logs = Path(pwd.getpwnam(unix_users["alice"]).pw_dir) / ".pvhpc" / "logs"
        assert logs.stat().st_uid == pwd.getpwnam(unix_users["alice"]).pw_uid and logs.stat().st_mode & 0o077 == 0
        assert "starting the session's server" in alice.log(session["id"])
        assert os.stat(svc.dir / "pvhpc.sqlite").st_uid == service_uid

        for call in (lambda: bob.get(session["id"]), lambda: bob.cancel(session["id"]), lambda: bob.log(session["id"])):
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.status == 404

        ended = alice.cancel(session["id"])
        assert ended["state"] == "ended" and ended["end_reason"] == "cancelled"
        wait_until(lambda: not [j for j in jobs(cluster, "-u", unix_users["alice"], check=False) if live(j)], 20,
                   message="alice's job cancelled (by alice, through sudo)")
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_without_a_sudoers_rule_submission_fails_clearly(service_factory, cluster, runtime_dir, tmp_path):
    """A user sudo does not let the service act as: the error names sudo's reason, and no job is left."""
    shared = shared_dir()
    svc = service_factory("nosudo", directory=shared / "service", scheduler={**cluster.scheduler_config(), "submit_as": "user"},
                          auth={"kind": "header"}, frontend_socket_group=None)
    subprocess.run(["chown", "-R", "nobody", str(svc.dir)], check=True)
    svc.start(as_user="nobody")
    client = svc.user_client("root")
    with pytest.raises(ClientError) as e:
        client.create("paraview", partition="cpu")
    assert e.value.status == 400 and "sudo" in e.value.message
    assert client.list()[0]["end_reason"] == "submit_failed"
    shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.sshd
def test_ssh_mode_runs_jobs_as_their_users_too(unix_users, service_factory, cluster, runtime_dir, sshd):
    """Off the cluster: pvhpc logs in to the login host as its service account, which runs each session's job
    through sudo -n -u USER under the shipped sudoers rule."""
    shared, node_side = shared_site(runtime_dir)
    try:
        account = pwd.getpwnam(unix_users["service"])
        ssh_dir = Path(account.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{sshd.client_key}.pub").read_text())
        subprocess.run(["chown", "-R", unix_users["service"], str(ssh_dir)], check=True)
        svc = service_factory(
            "ssh-user", directory=shared / "service", ssh=sshd.ssh_section(user=unix_users["service"]),
            scheduler={**cluster.scheduler_config(), "submit_as": "user"},
            **node_side,
            auth={"kind": "header"}, frontend={"kind": "builtin"},
        ).start()
        alice = svc.user_client(unix_users["alice"])
        session = alice.launch("paraview", partition="cpu")
        assert session["state"] == "ready", session
        assert job_owner(cluster, session["job_id"])[1] == unix_users["alice"]
        assert "starting the session's server" in alice.log(session["id"])
        proxy = f"ws://127.0.0.1:{svc.port + 1}/proxy?sessionId={session['id']}&path=ws"
        assert foreground_fraction(render_as(proxy, session["secret"], unix_users["alice"])) > 0.01
        assert alice.cancel(session["id"])["end_reason"] == "cancelled"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_state_another_user_wrote_is_not_loaded_for_alice(unix_users, service_factory, cluster, runtime_dir):
    """Issue 22: bob puts a state whose ProgrammableSource runs his Python into the shared data root and sends
    alice a link to start from it. It is refused before any job, saying whose it is; nothing is submitted."""
    shared, node_side = shared_site(runtime_dir)
    try:
        svc = service_factory(
            "states", directory=shared / "service",
            scheduler={**cluster.scheduler_config(), "submit_as": "user"}, **node_side,
            auth={"kind": "header"}, frontend={"kind": "builtin"}, frontend_socket_group=None)
        subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
        svc.start(as_user=unix_users["service"])
        alice = svc.user_client(unix_users["alice"])
        scratch = shared / "data" / "scratch"   # a shared directory everyone may write to, as /tmp
        scratch.mkdir()
        scratch.chmod(0o1777)
        bobs_state = scratch / "nice-view.pvsm"
        script = "import os; open(os.path.expanduser('~/.pvhpc-owned'), 'w').write('bob was here')"
        subprocess.run(["runuser", "-u", unix_users["bob"], "--", "sh", "-c", f"cat > {bobs_state}"], check=True,
                       input=("<GenericParaViewApplication><ServerManagerState version=\"5.11.0\">"
                              "<Proxy group=\"sources\" type=\"ProgrammableSource\" id=\"1\" servers=\"1\">"
                              f"<Property name=\"Script\" id=\"1.Script\" number_of_elements=\"1\"><Element "
                              f"index=\"0\" value=\"{script}\"/></Property></Proxy></ServerManagerState>"
                              "</GenericParaViewApplication>"), text=True)
        with pytest.raises(ClientError) as e:
            alice.create("paraview", partition="cpu", saved_state=str(bobs_state))
        assert e.value.status == 403 and e.value.field == "saved_state", e.value
        assert f"belongs to {unix_users['bob']}, not to you" in e.value.message
        assert alice.list() == [], "a refused request left a session"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
