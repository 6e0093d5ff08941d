"""Issue 15, tried as an attacker would: a real ``pvhpc serve`` on the local cluster, real Unix accounts, real
headers, a real ParaView server. One test per finding (finding 3, data roots, is in tests/test_pvweb_server.py).
docs/security.md is the threat model these tests hold pvhpc to.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pvhpc import config as site_config
from pvhpc.client.api import Client, ClientError
from pvhpc.client.wslink import WslinkClient

from tests.harness.cluster import in_queue, jobs
from tests.harness.daemon import DaemonFailed
from tests.helpers import wait_until

pytestmark = pytest.mark.cluster
HEADER_AUTH = {"kind": "header", "staff": ["carol"]}
EVIL = "http://evil.example"


def http(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30) -> tuple[int, dict, dict]:
    """One request; (status, JSON answer, headers), errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null"), dict(answer.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def job_environment(job_id: str) -> dict[str, str]:
    """The environment of a process of Slurm job ``job_id`` that holds the session's report token."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
        if env.get("SLURM_JOB_ID") == job_id and env.get("PVHPC_REPORT_TOKEN"):
            return env
    raise AssertionError(f"no process of job {job_id} holds a report token")


# -- 1. any local account could be anyone, staff included --------------------------------------------------

def test_another_local_account_is_nobody_to_pvhpc(service_factory):
    svc = service_factory(auth=HEADER_AUTH).start()
    alice = svc.user_client("alice").create("paraview", partition="cpu")
    try:
        # The front end's channel works: staff carol, through it, sees alice's session ...
        assert [s["id"] for s in svc.user_client("carol").list(all_users=True)] == [alice["id"]]
        # ... but the account nobody, on this host, claiming to be carol on pvhpc's TCP port (where jobs
        # report) is nobody to pvhpc,
        curl = subprocess.run(["runuser", "-u", "nobody", "--", "curl", "-s", "-w", "\n%{http_code}",
                               "-H", "X-Remote-User: carol", f"{svc.url}/api/v1/sessions?all=1"],
                              capture_output=True, text=True, timeout=30)
        body, status = curl.stdout.rsplit("\n", 1)
        assert status == "401", curl.stdout
        assert alice["id"] not in body
        # and it cannot open the front end's socket at all (mode 0660, group www-data).
        mode = svc.frontend_socket.stat()
        assert stat.S_IMODE(mode.st_mode) == 0o660 and mode.st_gid == __import__("grp").getgrnam("www-data").gr_gid
        probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                 "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('denied')\n")
        tried = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", probe,
                                str(svc.frontend_socket)], capture_output=True, text=True, timeout=30)
        assert tried.stdout.strip() == "denied", tried.stdout + tried.stderr
    finally:
        svc.user_client("alice").cancel(alice["id"])


# -- 2. one user's code reaches another's job when all run as the service account --------------------------

STATE_SCRIPT = """
import os
found = []
for pid in os.listdir('/proc'):
    try:
        env = open('/proc/%s/environ' % pid, 'rb').read().split(b'\\0')
    except OSError:
        continue
    if any(e.startswith(b'PVHPC_REPORT_TOKEN=') for e in env):
        found += [e.split(b'=', 1)[1].decode() for e in env if e.startswith(b'SLURM_JOB_ID=')]
open(MARKER, 'w').write(' '.join(sorted(set(found))))
"""


@pytest.mark.paraview
def test_a_state_file_runs_its_users_code_so_many_users_need_jobs_as_their_users(service_factory, tmp_path):
    """ParaView's nature: a .pvsm's ProgrammableSource runs Python when the state is opened. With every job run
    as the service account, alice's state file reads bob's job's environment (his report token; his secret
    likewise). pvhpc's answer: a multi-user site must run jobs as their users, or say its users trust each other."""
    svc = service_factory(auth=HEADER_AUTH).start()   # the harness says users_trust_each_other: true
    data = svc.dir / "data"
    marker = data / "marker.txt"
    maker = tmp_path / "make_state.py"
    # A state as ParaView saves it: a view, and a source whose script runs when the pipeline is set up.
    maker.write_text("import sys\nfrom paraview.simple import CreateRenderView, ProgrammableSource, SaveState\n"
                     "s = ProgrammableSource()\n"
                     "s.ScriptRequestInformation = open(sys.argv[1]).read()\n"
                     "CreateRenderView()\n"
                     "SaveState(sys.argv[2])\n")
    script = tmp_path / "script.py"
    script.write_text(f"MARKER = {str(marker)!r}\n{STATE_SCRIPT}")
    subprocess.run(["pvpython", str(maker), str(script), str(data / "innocent.pvsm")], check=True,
                   capture_output=True, timeout=120)
    assert "ProgrammableSource" in (data / "innocent.pvsm").read_text()

    alice, bob = svc.user_client("alice"), svc.user_client("bob")
    theirs = bob.launch("paraview", partition="cpu")
    mine = alice.launch("paraview", partition="cpu")
    try:
        assert theirs["state"] == mine["state"] == "ready"

        async def open_state():
            client = await WslinkClient.connect(mine["sessionURL"], mine["secret"])
            try:
                return await client.call("pv.proxy.manager.create.reader", ["innocent.pvsm"])
            finally:
                client.close()

        assert asyncio.run(open_state())["success"] is True
        wait_until(marker.exists, 30, message="the state file's script ran")
        assert theirs["job_id"] in marker.read_text().split(), "alice's code did not see bob's job"
    finally:
        alice.cancel(mine["id"])
        bob.cancel(theirs["id"])

    # So with more than one user and jobs as the service account, pvhpc does not start ...
    refused = service_factory("refused", auth={**HEADER_AUTH, "users_trust_each_other": False})
    with pytest.raises(DaemonFailed) as e:
        refused.start()
    assert "auth.kind: 'header' serves many users" in str(e.value) and "scheduler.submit_as: user" in str(e.value)
    # ... and the same rule, read from a file.
    with pytest.raises(site_config.ConfigError) as e:
        site_config.parse({"partitions": {"cpu": {}}, "applications": {"paraview": {"data_roots": [str(data)]}},
                           "service": {"frontend_socket": "/run/pvhpc/frontend.sock"}, "auth": {"kind": "header"}})
    assert e.value.key == "auth.kind" and "auth.users_trust_each_other" in str(e.value)


# -- 4. cross-site requests launched jobs ---------------------------------------------------------------------

def test_cross_site_requests_change_nothing(service_factory, cluster):
    svc = service_factory(auth=HEADER_AUTH, launcher_wait=1).start()
    front = svc.frontend_url
    as_alice = {"X-Remote-User": "alice", "Content-Type": "text/plain"}   # a form's or a simple fetch's type
    launch = json.dumps({"application": "paraview", "partition": "cpu"}).encode()
    attempts = [
        ("POST", "/paraview/", launch, {"Origin": EVIL}),
        ("POST", "/api/v1/sessions", launch, {"Origin": EVIL}),
        ("POST", "/api/v1/sessions", launch, {"Referer": f"{EVIL}/page.html"}),   # no Origin, a foreign page
        ("POST", "/api/v1/sessions", launch, {"Origin": "null"}),                # a sandboxed frame, data: URL
        ("POST", "/api/v1/sessions", launch, {}),                                 # says nothing at all
        ("POST", "/api/v1/tokens", json.dumps({"name": "x", "days": 365}).encode(), {"Origin": EVIL}),
    ]
    for method, path, body, headers in attempts:
        status, answer, _ = http(front + path, method, body, {**as_alice, **headers})
        assert status == 403 and "error" in answer, (path, headers, status, answer)
    alice = svc.user_client("alice")
    assert alice.list() == [] and alice.request("GET", "/api/v1/tokens")["tokens"] == []
    submitted = [j for j in jobs(cluster, check=False) if j.name.startswith("pvhpc-")]
    assert not submitted, "a refused request submitted a job"

    # The site's own pages (Origin, or Referer when a browser leaves Origin out) and scripts with a token work.
    status, made, _ = http(front + "/api/v1/tokens", "POST", json.dumps({"name": "s", "days": 1}).encode(),
                           {**as_alice, "Referer": f"{svc.public_url}/"})
    assert status == 201, made
    session = alice.create("paraview", partition="cpu")          # Origin: the site's own
    script = Client(svc.url, token=made["token"])
    assert script.cancel(session["id"])["state"] == "ended"    # no Origin, a token: a script
    # A single-user install (auth.kind local) takes scripts without Origin, but never a foreign page's request.
    local = service_factory("local").start()
    assert http(local.url + "/api/v1/sessions", "POST", launch, {"Origin": EVIL})[0] == 403
    assert http(local.url + "/paraview/", "POST", launch, {"Referer": EVIL + "/"})[0] == 403
    assert local.client().list() == []


# -- 5. replayed reports re-routed and ended sessions ------------------------------------------------------------

@pytest.mark.paraview
def test_a_session_takes_one_ready_report_and_an_exit_report_cancels_its_job(service_factory, cluster):
    svc = service_factory().start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    assert session["state"] == "ready"
    token = job_environment(session["job_id"])["PVHPC_REPORT_TOKEN"]
    report = f"{svc.url}/api/v1/sessions/{session['id']}/report"
    job = {"job_id": session["job_id"], "node": session["node"]}

    def send(payload: dict) -> tuple[int, dict]:
        status, answer, _ = http(report, "POST", json.dumps({**job, **payload}).encode(),
                                 {"Authorization": f"token {token}", "Content-Type": "application/json"})
        return status, answer

    status, answer = send({"event": "ready", "host": session["host"], "port": session["port"] + 1})
    assert status == 409 and "one ready report per start" in answer["error"]
    assert client.get(session["id"])["port"] == session["port"], "a replayed ready report re-routed the session"
    assert in_queue(cluster, session["job_id"])

    status, _ = send({"event": "exited", "code": 0})
    assert status == 200 and client.get(session["id"])["state"] == "ended"
    wait_until(lambda: not in_queue(cluster, session["job_id"]), 20,
               message="the job of a session that reported its exit is gone")


# -- 6. tokens minted tokens -------------------------------------------------------------------------------------

def test_a_token_cannot_make_tokens(service_factory):
    svc = service_factory(auth=HEADER_AUTH).start()
    alice = svc.user_client("alice")
    short = alice.request("POST", "/api/v1/tokens", {"name": "one day", "days": 1})
    with pytest.raises(ClientError) as e:
        Client(svc.url, token=short["token"]).request("POST", "/api/v1/tokens", {"name": "heir", "days": 365})
    assert e.value.status == 403 and "a token cannot make tokens" in e.value.message
    assert [t["name"] for t in alice.request("GET", "/api/v1/tokens")["tokens"]] == ["one day"]


# -- 7. staff got a session's secret from the launcher API --------------------------------------------------------

def test_staff_see_a_session_but_not_its_secret(service_factory):
    svc = service_factory(auth=HEADER_AUTH).start()
    alice, carol = svc.user_client("alice"), svc.user_client("carol")
    session = alice.create("paraview", partition="cpu")
    try:
        assert "secret" in alice.request("GET", f"/paraview/{session['id']}")
        seen = carol.request("GET", f"/paraview/{session['id']}")
        assert seen["id"] == session["id"] and seen["user"] == "alice" and "secret" not in seen
        assert "secret" not in carol.get(session["id"])
    finally:
        alice.cancel(session["id"])


# -- 8. the smaller ones ----------------------------------------------------------------------------------------

def test_hostile_shapes_slow_clients_framing_and_job_log_modes(service_factory):
    svc = service_factory(launcher_wait=1).start()
    plain = {"Content-Type": "text/plain"}
    nested = b"[" * 30000 + b"]" * 30000   # 60 KB
    for path in ("/api/v1/sessions", "/paraview/"):
        status, answer, _ = http(svc.url + path, "POST", nested, plain)
        assert status == 400 and "nests" in answer["error"], (path, status, answer)
    for query in ("path=" + "a/" * 2500, "path=" + "a" * 300):   # too long as a whole; one name too long
        status, answer, _ = http(f"{svc.url}/api/v1/applications/paraview/files?{query}")
        assert status == 400 and "error" in answer, (query[:20], status, answer)
    assert http(f"{svc.url}/api/v1/applications/paraview/files?path={'a/' * 2500}")[1]["field"] == "path"
    log = svc.log.read_text()
    assert "Traceback" not in log and "RecursionError" not in log

    # Slow clients that never finish their headers are cut off, not held.
    slow = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(20)]
    for s in slow:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")   # ... and never the blank line
    started = time.monotonic()
    for s in slow:
        s.settimeout(30)
        assert s.recv(100) == b""   # closed by pvhpc
        s.close()
    assert time.monotonic() - started < 20, "slow clients held their connections"

    # No page or answer of pvhpc's may be framed by another site's page.
    for path in ("/", "/api/v1/health"):
        with urllib.request.urlopen(svc.url + path, timeout=10) as answer:
            assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
            assert "frame-ancestors 'self'" in answer.headers["Content-Security-Policy"]

    # Job logs are the service account's alone.
    session = svc.client().create("paraview", partition="cpu")
    jobs = svc.dir / "jobs"
    try:
        logs = wait_until(lambda: list(jobs.glob("*.out")), 60, message="the job's log")
        assert stat.S_IMODE(jobs.stat().st_mode) == 0o700
        assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600, oct(logs[0].stat().st_mode)
    finally:
        svc.client().cancel(session["id"])
