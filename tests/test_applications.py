"""Applications on the real cluster: a site-defined command launches as a Slurm job, keeps its secret off every
command line, and each way a session ends has its own reason (issue 13)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import textwrap

import pytest

from pvhpc.client.wslink import WslinkClient

from tests.helpers import foreground_fraction, processes_of_cluster_job, wait_until

pytestmark = pytest.mark.cluster

# A site's own server, not wslink: it prints where it listens (the port the kernel gave it) and answers each
# connection with its greeting and a digest of the secret it got in its argv.
DEMO_SERVER = textwrap.dedent('''
    import argparse, hashlib, os, socket
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--authKey", required=True)
    parser.add_argument("--greeting", required=True)
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("0.0.0.0", args.port))
    listener.listen()
    print("loading the demo ...", flush=True)
    print(f"demo server listening on port {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        digest = hashlib.sha256(args.authKey.encode()).hexdigest()
        conn.sendall(f"{args.greeting} {digest} env-secret={'PVHPC_SECRET' in os.environ}\\n".encode())
        conn.close()
''')
BROKEN_SERVER = textwrap.dedent('''
    import sys
    print("reading the site licence ...", flush=True)
    print("ERROR: cannot open licence file /opt/site/licence.dat", file=sys.stderr, flush=True)
    sys.exit(3)
''')


def ask(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=10) as s:
        return s.makefile().readline().strip()


def listening_addresses(cluster, node: str, port: int) -> set[str]:
    """The local addresses a TCP port listens on, as the node's ss shows them."""
    out = subprocess.run(cluster.on_node(node, ["ss", "-ltnH", f"sport = :{port}"]), capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def ended(client, session_id: str, timeout: float) -> dict:
    session = client.wait(session_id, until=("ended",), timeout=timeout)
    assert session["state"] == "ended", session
    return session


async def exit_from_the_client(url: str, secret: str) -> bytes:
    """What SmartConnect does when its page closes: render once, then application.exit.later."""
    client = await WslinkClient.connect(url, secret)
    try:
        await client.create_source("Cone")
        image = await client.render((320, 240))
        await client.call("application.exit.later", [1])
        return image
    finally:
        client.close()


def test_a_site_application_launches_and_every_ending_has_its_own_reason(service_factory, cluster, tmp_path):
    node_files = tmp_path / "site-apps"
    node_files.mkdir()
    (node_files / "demo.py").write_text(DEMO_SERVER)
    (node_files / "broken.py").write_text(BROKEN_SERVER)
    data = tmp_path / "svc" / "data"
    common = {"data_roots": [str(data)], "start_timeout": 60}
    data.mkdir(parents=True)
    svc = service_factory(limits={"sessions_per_user": 8}, applications={
        "paraview": {**common, "idle_timeout": 600},
        "paraview-idle": {**common, "idle_timeout": 10},
        "demo": {**common, "partitions": ["cpu"], "description": "a site's own server",
                 "command": ["${python}", str(node_files / "demo.py"), "--port", "${port}",
                             "--authKey", "${secret}", "--greeting", "hello from $(hostname) 'quoted'"],
                 "ready": {"line": r"demo server listening on port (?P<port>\d+)"}},
        "broken": {**common, "partitions": ["cpu"],
                   "command": ["${python}", str(node_files / "broken.py"), "--port", "${port}"],
                   "ready": {"line": "listening"}},
    }).start()
    client = svc.client()
    # The walltime's clock starts first: a one-minute session Slurm ends by its time limit.
    walltime = client.create("paraview", partition="gpu", walltime="1")
    # Launch fields as an app page's URL query gives them: strings.
    demo = client.launch("demo", partition="cpu", gpus="0", walltime="10")
    assert demo["state"] == "ready", demo
    idle = client.create("paraview-idle", partition="gpu")
    exits = client.create("paraview", partition="gpu")
    cancel = client.create("paraview", partition="cpu")
    broken = client.create("broken", partition="cpu")

    # The site's command ran with its own ready line (the port came from it), its argument unharmed by any shell,
    # and got the session's secret in its argv through pvhpc's wrapper, not in its environment.
    answer = ask(demo["host"], demo["port"])
    digest = hashlib.sha256(demo["secret"].encode()).hexdigest()
    assert answer == f"hello from $(hostname) 'quoted' {digest} env-secret=False", answer
    # ... while no process of any session job shows a secret to the node's other users.
    jobs = {demo["id"]: demo}
    for s in (walltime, idle, exits, cancel):
        jobs[s["id"]] = client.wait(s["id"], timeout=120)
        assert jobs[s["id"]]["state"] == "ready", jobs[s["id"]]
    secrets = {sid: s["secret"] for sid, s in jobs.items()}
    seen = []
    for sid, s in jobs.items():
        procs = processes_of_cluster_job(cluster, s["job_id"])
        assert len(procs) >= 3, procs   # job script, launcher, server (and Xvfb)
        seen += procs
    leaked = [p for p in seen for secret in secrets.values() if secret and secret in p]
    assert not leaked, leaked
    assert any("${secret}" in p and "argv_secret.py" in p for p in seen), seen
    # pvhpc's own server listens where the front end dials (the node's address on its way to pvhpc, which the
    # job reports), not on every interface of the node.
    there = jobs[exits["id"]]
    assert listening_addresses(cluster, there["node"], there["port"]) == {there["host"]}, there

    # A server that exits before it is ready: start_failed, with its last lines.
    failed = ended(client, broken["id"], 90)
    assert failed["end_reason"] == "start_failed", failed
    assert "exit code 3" in failed["detail"] and "cannot open licence file /opt/site/licence.dat" in failed["detail"]

    # The client asks its server to exit (SmartConnect's application.exit.later): completed, not a crash.
    image = asyncio.run(exit_from_the_client(jobs[exits["id"]]["sessionURL"], secrets[exits["id"]]))
    assert foreground_fraction(image) > 0.01
    done = ended(client, exits["id"], 30)
    assert (done["end_reason"], done["detail"]) == (
        "completed", "the session's server stopped normally: its client asked it to stop"), done

    # Nobody connects within the idle timeout: idle.
    gone = ended(client, idle["id"], 60)
    assert (gone["end_reason"], gone["detail"]) == (
        "idle", "the session's server stopped because no client used it for its idle timeout: "
                "no client was connected for its idle timeout"), gone

    assert client.cancel(cancel["id"])["end_reason"] == "cancelled"
    assert client.cancel(demo["id"])["end_reason"] == "cancelled"
    out = ended(client, walltime["id"], 150)
    assert out["end_reason"] == "walltime", out
    for s in jobs.values():
        wait_until(lambda: not processes_of_cluster_job(cluster, s["job_id"]), 30,
                   message=f"job {s['job_id']}'s processes gone")
