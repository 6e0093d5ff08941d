"""ParaView's desktop client to a desktop session (docs/desktop.md): a bare pvserver behind pvhpc's websocket bridge,
reached with ``pvhpc connect``.

Without a cluster: the config, the job's value, the bridge's protocol against a stand-in pvserver (a TCP echo), the
local listener's owner check with a second Unix account of the system's own (nobody: no user is made or deleted).
On the cluster: a real pvpython client (Connect, a sphere rendered and saved, a file of the data roots opened) through
``pvhpc connect`` to a 1-rank session and a 2-rank session over 2 nodes, through the built-in front end, Apache and an
SSH tunnel; the session ends completed when the client leaves and cancelled when its user cancels it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pvhpc.client.api import Client
from pvhpc.client.desktop import DesktopConnection, DesktopError, session_problem, socket_owner, websocket_headers
from pvhpc.config import ConfigError, embedded_defaults, parse
from pvhpc.paths import PACKAGE_DIR

from tests.helpers import (PARALLEL_CPU, PVSERVER, REPO, XVFB_RUN, foreground_fraction, hues, pvhpc,
                           wait_until)

BRIDGE = PACKAGE_DIR / "node" / "desktop_bridge.py"


def desktop_site(data_dir: Path, **pvserver) -> dict:
    return {
        "partitions": {"gpu": {"gpu_type": "a100"}, "cpu": dict(PARALLEL_CPU)},
        "applications": {
            "pvserver": {"desktop": True, "data_roots": [str(data_dir)], "start_timeout": 120, "pvserver": PVSERVER,
                         "partitions": ["cpu", "gpu"], **pvserver},
            "paraview": {"data_roots": [str(data_dir)], "start_timeout": 120},
        },
    }


# -- the config and the job -------------------------------------------------------------------------

def test_the_embedded_defaults_offer_a_desktop_pvserver_parallel_on_cpu():
    app = embedded_defaults().applications["pvserver"]
    assert app.desktop and app.pvserver is not None and set(app.partitions) == {"cpu", "gpu"}
    assert app.command[1].endswith("desktop_bridge.py") and "port" in app.ready.line
    assert not app.saved_states   # the bridge is no pvpython: a request naming a state is refused
    assert "parallel" not in embedded_defaults().applications["paraview"].command


def test_a_desktop_application_needs_a_pvserver_and_has_no_web_client(tmp_path):
    with pytest.raises(ConfigError) as caught:
        parse(desktop_site(tmp_path, pvserver=None))
    assert "applications.pvserver.pvserver" in str(caught.value) and "desktop" in str(caught.value)
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "index.html").write_text("<html></html>")
    with pytest.raises(ConfigError) as caught:
        parse(desktop_site(tmp_path, web_client=str(tmp_path / "client")))
    assert "applications.pvserver.desktop" in str(caught.value)


def test_a_desktop_job_runs_its_pvserver_even_with_one_rank(tmp_path):
    from pvhpc.sessions.job import build_job
    from pvhpc.sessions.spec import parse_spec

    site = parse(desktop_site(tmp_path))

    def parallel_value(**request):
        spec = parse_spec(site, {"application": "pvserver", "partition": "cpu", **request}, strict=True)
        script = build_job(site, spec, "alice", "sid", "j", "s", "t").script
        line = next(line for line in script.splitlines() if line.startswith("export PVHPC_PARALLEL="))
        return json.loads(line.split("=", 1)[1].strip("'"))

    one = parallel_value()
    assert one["mpi"] == [] and one["ranks"] == 1 and one["desktop"] is True and one["pvserver"] == PVSERVER
    assert one["connect"] == ["--ds-host", "${ds_host}", "--ds-port", "${ds_port}"]
    two = parallel_value(nodes=2, ranks=2)
    assert two["mpi"] == ["mpiexec", "-n", "2"] and two["ranks"] == 2 and two["desktop"] is True


def test_what_pvhpc_connect_can_connect_to():
    ready = {"id": "s", "desktop": True, "state": "ready", "secret": "x", "application": "pvserver"}
    assert session_problem(ready) is None
    for session, problem, words in (({**ready, "desktop": False, "application": "paraview"}, "not_desktop",
                                      "'paraview', which is not for ParaView's desktop client"),
                                     ({**ready, "state": "queued"}, "not_ready", "is queued, not ready yet"),
                                     ({**ready, "state": "ended", "end_reason": "completed", "detail": "done"},
                                      "ended", "has ended (completed): done")):
        found = session_problem(session)
        assert found.problem == problem and words in str(found), found


# -- the bridge's protocol, against a stand-in pvserver ------------------------------------------------

class EchoServer:
    """A stand-in for the pvserver: echoes what it gets, counts its connections."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


@pytest.fixture
def bridge(tmp_path):
    """desktop_bridge.py as the supervisor runs it, in front of an EchoServer; (process, port, echo, secret)."""
    echo, secret = EchoServer(), secrets.token_urlsafe(24)
    cause = tmp_path / "exit-cause"
    env = dict(os.environ, PVHPC_SECRET=secret, PVHPC_EXIT_CAUSE_FILE=str(cause))
    proc = subprocess.Popen([sys.executable, str(BRIDGE), "--host", "127.0.0.1", "--port", "0", "--timeout", "60",
                             "--ds-host", "127.0.0.1", "--ds-port", str(echo.port)],
                            env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("pvhpc-bridge: listening on port "), line
    port = int(line.rsplit(" ", 1)[1])
    yield proc, port, echo, secret, cause
    proc.kill()
    proc.wait()


def carry(connection: DesktopConnection, payload: bytes) -> bytes:
    """``payload`` through a local connection to ``connection`` and back, with the listener in a loop of its own."""
    async def run():
        await connection.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", connection.port)
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
        writer.close()
        await asyncio.sleep(0.3)
        await connection.close()
        return got

    return asyncio.run(run())


def test_the_bridge_carries_the_byte_stream_after_the_secret_and_ends_when_its_client_leaves(bridge):
    proc, port, echo, secret, cause = bridge
    url = f"ws://127.0.0.1:{port}/ws"
    payload = os.urandom(700_000)   # several frames and TCP reads each way

    async def two_clients():
        first = DesktopConnection(url, secret)
        await first.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", first.port)
        writer.write(payload)
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
        # pvserver serves one client: a second one, with the right secret, is told so while the first is there.
        with pytest.raises(DesktopError) as second:
            await DesktopConnection(url, secret).open_websocket()
        writer.close()
        await asyncio.sleep(0.3)
        await first.close()
        return got, second.value

    got, second = asyncio.run(two_clients())
    assert got == payload
    assert "already has its client" in str(second) and "1013" in str(second)
    assert echo.connections == 1
    # pvserver serves one client: once that one has gone, the bridge ends and says why (the session: completed).
    assert proc.wait(10) == 0
    assert cause.read_text().strip() == "client"


def test_a_wrong_or_missing_secret_is_closed_with_why_and_reaches_no_pvserver(bridge):
    proc, port, echo, secret, _ = bridge
    url = f"ws://127.0.0.1:{port}/ws"
    connection = DesktopConnection(url, "not-" + secret)
    with pytest.raises(DesktopError) as caught:
        asyncio.run(connection.open_websocket())
    assert caught.value.problem == "refused" and "wrong secret" in str(caught.value) and "1008" in str(caught.value)

    async def no_secret():
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(url)
        await ws.write_message(b"\x00binary first", binary=True)
        assert await ws.read_message() is None
        return ws.close_code, ws.close_reason

    code, reason = asyncio.run(no_secret())
    assert code == 1008 and '{"secret"' in reason
    assert echo.connections == 0 and proc.poll() is None
    # The right secret still works after them: the bridge waited for its one client.
    assert carry(DesktopConnection(url, secret), b"hello") == b"hello"


def test_a_pvserver_the_bridge_cannot_reach_fails_the_session_it_does_not_complete_it(tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()   # nothing listens there now
    secret, cause = secrets.token_urlsafe(24), tmp_path / "exit-cause"
    env = dict(os.environ, PVHPC_SECRET=secret, PVHPC_EXIT_CAUSE_FILE=str(cause))
    proc = subprocess.Popen([sys.executable, str(BRIDGE), "--host", "127.0.0.1", "--port", "0", "--ds-host",
                             "127.0.0.1", "--ds-port", str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        bridge_port = int(proc.stdout.readline().rsplit(" ", 1)[1])

        async def client():
            from tornado.websocket import websocket_connect

            ws = await websocket_connect(f"ws://127.0.0.1:{bridge_port}/ws")
            await ws.write_message(json.dumps({"secret": secret}))
            answer = await ws.read_message()
            assert await ws.read_message() is None
            return answer, ws.close_code, ws.close_reason

        answer, code, reason = asyncio.run(client())
        assert json.loads(answer) == {"ok": True} and code == 1011 and "cannot be reached" in reason
        assert proc.wait(10) == 1 and not cause.exists()   # the supervisor reports exit code 1: failed
    finally:
        proc.kill()
        proc.wait()


# -- the local listener: this user's connections only --------------------------------------------------

def test_the_owner_of_a_socket_is_read_from_the_kernels_table():
    table = textwrap.dedent("""\
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
           1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1
           2: 0100007F:C351 0100007F:1F90 06 00000000:00000000 00:00000000 00000000  1001        0 3 1
        """)
    assert socket_owner(table, ("127.0.0.1", 50000), ("127.0.0.1", 8080)) == 1000
    assert socket_owner(table, ("127.0.0.1", 50001), ("127.0.0.1", 8080)) is None   # TIME_WAIT: nobody's
    assert socket_owner(table, ("127.0.0.1", 8080), ("127.0.0.1", 50000)) is None   # the other direction


def test_the_local_listener_takes_only_its_own_users_connections(bridge):
    """Another Unix account of the system (nobody) dials the listener: closed before a byte is carried; ours works."""
    _, port, echo, secret, _ = bridge
    other = pwd.getpwnam("nobody")
    logged = []
    connection = DesktopConnection(f"ws://127.0.0.1:{port}/ws", secret, log=logged.append)

    async def run():
        await connection.start()
        probe = ("import socket,sys\ns=socket.create_connection(('127.0.0.1', %d)); s.sendall(b'x'); s.settimeout(10)\n"
                 "try: got = s.recv(10)\nexcept ConnectionResetError: got = b''\nsys.stdout.write(repr(got))"
                 % connection.port)
        done = await asyncio.create_subprocess_exec("setpriv", f"--reuid={other.pw_uid}", f"--regid={other.pw_gid}",
                                                    "--clear-groups", sys.executable, "-c", probe,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await done.communicate()
        await connection.close()
        return out.decode(), err.decode()

    out, err = asyncio.run(run())
    assert out == "b''", (out, err)   # closed (or reset: it had sent a byte nobody read), nothing carried
    assert connection.checked and connection.connections == 0 and echo.connections == 0
    assert any("refused a connection" in line for line in logged), logged
    assert carry(DesktopConnection(f"ws://127.0.0.1:{port}/ws", secret), b"mine") == b"mine"


# -- the real thing: pvpython through pvhpc connect to pvserver sessions on the cluster -----------------------------

# The desktop client as users run it: pvpython, connected to cs://localhost:PORT. Every image is rendered where the
# data is (remote-render threshold 0: on the session's ranks, composited there) and carried back through the bridge.
CLIENT = textwrap.dedent("""\
    import os
    import sys
    from paraview.simple import *
    from paraview import servermanager
    port, image, data, hold = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "hold"
    Connect("localhost", port)
    print("partitions", servermanager.ActiveConnection.GetNumberOfDataPartitions(), flush=True)
    sphere = Sphere(ThetaResolution=48, PhiResolution=48)
    view = GetActiveViewOrCreate("RenderView")
    view.RemoteRenderThreshold = 0
    Show(ProcessIdScalars(Input=sphere), view)
    ResetCamera(view)
    Render(view)
    SaveScreenshot(image, view, ImageResolution=[400, 300])
    reader = OpenDataFile(data)
    reader.UpdatePipeline()
    print("points", reader.GetDataInformation().GetNumberOfPoints(), flush=True)
    if hold:
        print("holding", flush=True)
        while os.read(0, 4096):   # until the test closes standard input (pvpython replaces sys.stdin)
            pass
    Disconnect()
    print("disconnected", flush=True)
""")
# A triangle in VTK's legacy format: a file of the application's data roots, opened on the session's server.
TRIANGLE = "# vtk DataFile Version 3.0\npvhpc\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n0 0 0 1 0 0 0 1 0\n" \
           "POLYGONS 1 4\n3 0 1 2\n"


def connect_env(url: str, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), PVHPC_CLIENT_CONFIG=str(REPO / "no-such-client.yaml"), PVHPC_URL=url)
    env.pop("PVHPC_TOKEN", None)
    env.pop("PVHPC_LOGIN_HOST", None)
    env.update(extra)
    return env


class Connect:
    """``pvhpc connect ... --json`` running in the background, as a .pvsc's command or a user's terminal runs it."""

    def __init__(self, tmp_path: Path, *args, url: str, stdin_text: str | None = None, **env):
        self.stderr_path = tmp_path / f"connect-{time.monotonic_ns()}.err"
        self.proc = subprocess.Popen([sys.executable, "-m", "pvhpc", "connect", "--json", *map(str, args)],
                                     env=connect_env(url, **env), stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "w"))
        if stdin_text is not None:
            self.proc.stdin.write(stdin_text)
            self.proc.stdin.close()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def listening(self, timeout: float = 240) -> dict:
        """The JSON line it prints once it listens: {url, port, session}."""
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        assert found and found[0].strip(), f"pvhpc connect printed nothing (exit {self.proc.poll()}):\n{self.stderr}"
        return json.loads(found[0])

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pvhpc connect is still running after {timeout} s:\n{self.stderr}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def connects():
    started: list[Connect] = []

    def make(*args, **kwargs) -> Connect:
        started.append(Connect(*args, **kwargs))
        return started[-1]

    yield make
    for c in started:
        c.stop()


def paraview_client(port: int, image: Path, data: Path, hold: bool = False) -> subprocess.Popen:
    """pvpython connected to cs://localhost:PORT (on a private X display: Debian's pvpython renders with GLX)."""
    script = image.parent / "client.py"
    script.write_text(CLIENT)
    return subprocess.Popen([*XVFB_RUN, "pvpython", str(script), str(port), str(image), str(data),
                             "hold" if hold else "once"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)   # xvfb-run, its Xvfb and pvpython: killed together, as a group


def client_lines(client: subprocess.Popen, until: str, timeout: float = 180) -> list[str]:
    lines: list[str] = []

    def read():
        for line in client.stdout:
            lines.append(line.rstrip())
            if line.startswith(until):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert any(line.startswith(until) for line in lines), "\n".join(lines[-40:])
    return lines


def desktop_service(service_factory, tmp_path, **overrides):
    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "triangle.vtk").write_text(TRIANGLE)
    return service_factory(**desktop_site(data), **overrides), data / "triangle.vtk"


def pvpython_renders_through(port: int, data: Path, tmp_path: Path, ranks: int, hold: bool = False):
    image = tmp_path / f"desktop-{ranks}.png"
    client = paraview_client(port, image, data, hold)
    lines = client_lines(client, "holding" if hold else "disconnected")
    assert f"partitions {ranks}" in lines and "points 3" in lines, lines
    from PIL import Image

    with Image.open(image) as opened:
        png = opened.convert("RGB")
    import io

    jpeg = io.BytesIO()
    png.save(jpeg, "JPEG")
    assert foreground_fraction(jpeg.getvalue()) > 0.01, "the sphere's image is blank"
    assert len(hues(jpeg.getvalue())) == ranks, "the sphere is not in one colour a rank (ProcessIdScalars)"
    return client


@pytest.mark.cluster
@pytest.mark.paraview
def test_pvpython_through_the_builtin_front_end_to_one_rank_until_it_disconnects(service_factory, cluster, connects,
                                                                                 tmp_path):
    from tests.harness.cluster import pvhpc_jobs

    svc, data = desktop_service(service_factory, tmp_path)
    svc.start()
    client = svc.client()
    apps = {a["name"]: a for a in client.applications()}
    assert apps["pvserver"]["desktop"] is True and apps["paraview"]["desktop"] is False

    # A session that is not for the desktop client is refused at once, naming why; nothing is left listening.
    other = client.create("paraview", partition="cpu")
    refused = pvhpc("connect", other["id"], url=svc.url)
    assert refused.returncode == 2 and "not for ParaView's desktop client" in refused.stderr, refused
    client.cancel(other["id"])
    unknown = pvhpc("connect", secrets.token_urlsafe(24), url=svc.url)
    assert unknown.returncode == 3 and "no session" in unknown.stderr, unknown

    # SIGTERM before the session is ready: it is cancelled, no job is left.
    early = connects(tmp_path, "--new", "-p", "cpu", url=svc.url)
    wait_until(lambda: "submitted session" in early.stderr, 60, message="submitted")
    early.proc.terminate()
    assert early.wait() == 130
    early_id = early.stderr.split("submitted session ", 1)[1].split()[0]
    assert client.get(early_id)["end_reason"] == "cancelled"

    connect = connects(tmp_path, "--new", "-p", "cpu", url=svc.url)
    listening = connect.listening()
    sid, port = listening["session"], listening["port"]
    assert listening["url"] == f"cs://localhost:{port}"
    session = client.get(sid)
    assert session["desktop"] is True and session["state"] == "ready" and session["application"] == "pvserver"

    pvpython_renders_through(port, data, tmp_path, ranks=1).wait(60)
    # The client left: its pvserver ended, and the session with it, completed; pvhpc connect exits with it.
    assert connect.wait() == 0, connect.stderr
    ended = client.get(sid)
    assert ended["end_reason"] == "completed", ended
    assert not [j for j in pvhpc_jobs(cluster) if j.job_id == session["job_id"]]
    again = pvhpc("connect", sid, url=svc.url)
    assert again.returncode == 1 and "has ended (completed)" in again.stderr, again

    # SIGTERM once it is ready and listening (ParaView's own end of a .pvsc connection, say): cancelled too.
    late = connects(tmp_path, "--new", "-p", "cpu", url=svc.url)
    late_id = late.listening()["session"]
    late.proc.terminate()
    assert late.wait() == 130
    assert client.get(late_id)["end_reason"] == "cancelled"
    late_job = client.get(late_id)["job_id"]
    wait_until(lambda: not [j for j in pvhpc_jobs(cluster) if j.job_id == late_job], 30, message="no job left")


@pytest.mark.cluster
@pytest.mark.paraview
def test_pvpython_through_the_builtin_front_end_to_two_ranks_on_two_nodes_until_cancelled(service_factory, cluster,
                                                                                          connects, tmp_path):
    from tests.harness.cluster import jobs
    from tests.helpers import job_processes_by_node, wait_no_server_left

    svc, data = desktop_service(service_factory, tmp_path)
    svc.start()
    connect = connects(tmp_path, "--new", "-p", "cpu", "-N", 2, "-n", 2, url=svc.url)
    listening = connect.listening()
    sid, port = listening["session"], listening["port"]
    session = svc.client().get(sid)
    assert (session["nodes"], session["ranks"], session["desktop"]) == (2, 2, True)
    [job] = jobs(cluster, "-j", session["job_id"])
    assert job.nodes == "cpu[01-02]"
    assert job_processes_by_node(cluster, session["job_id"], "pvserver") == {"cpu01": 1, "cpu02": 1}

    client = pvpython_renders_through(port, data, tmp_path, ranks=2, hold=True)
    try:
        # Its user cancels it while ParaView is connected: cancelled, every rank gone, and pvhpc connect exits.
        cancelled = pvhpc("cancel", sid, url=svc.url)
        assert cancelled.returncode == 0, cancelled
        assert connect.wait() == 0, connect.stderr
        ended = svc.client().get(sid)
        assert ended["end_reason"] == "cancelled", ended
        wait_no_server_left(cluster, session["job_id"])
    finally:
        os.killpg(client.pid, signal.SIGKILL)   # not xvfb-run alone: its Xvfb would outlive the test
        client.wait()


@pytest.mark.cluster
@pytest.mark.paraview
@pytest.mark.apache
def test_pvpython_through_apache_with_the_users_login_and_another_user_is_refused(service_factory, cluster, connects,
                                                                                  apache_factory, apache_dir,
                                                                                  apache_login, tmp_path):
    from pvhpc.frontends import apacheconf
    from tests.harness.apache import APACHE_PASSWORD, APACHE_USER
    from tests.harness.ports import free_port_block

    map_file = apache_dir / "session-map.txt"
    port = free_port_block(1)
    site = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port, auth_include=apache_login)
    svc, data = desktop_service(service_factory, tmp_path,
                                frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                          "session_url": site.session_url},
                                auth={"kind": "header", "header": "X-Remote-User"},
                                public_url=f"http://127.0.0.1:{port}", allowed_origins=[f"http://127.0.0.1:{port}"])
    site = apacheconf.Site("localhost", map_file, svc.frontend_target, port=port, auth_include=apache_login)
    svc.start()
    apache = apache_factory(site).start()

    # Alice, logged in at Apache as a browser is (the password on standard input, never on a command line).
    connect = connects(tmp_path, "--new", "-p", "cpu", "--frontend-user", APACHE_USER, "--password-stdin",
                       url=apache.url, stdin_text=APACHE_PASSWORD + "\n")
    listening = connect.listening()
    sid, port = listening["session"], listening["port"]

    # Bob, with a token of his own, cannot connect to her session: it answers as one that does not exist.
    bobs_token = svc.user_client("bob").create_token("bob's laptop")["token"]
    refused = pvhpc("connect", sid, url=svc.url, env={"PVHPC_TOKEN": bobs_token})
    assert refused.returncode == 3 and "no session" in refused.stderr, refused

    pvpython_renders_through(port, data, tmp_path, ranks=1).wait(60)
    assert connect.wait() == 0, connect.stderr
    ended = svc.user_client(APACHE_USER).get(sid)
    assert ended["user"] == APACHE_USER and ended["end_reason"] == "completed", ended
    assert sid not in site.access_log.read_text()   # Apache logged the websocket, never the session's id


@pytest.mark.cluster
@pytest.mark.paraview
@pytest.mark.sshd
def test_pvpython_through_an_ssh_tunnel_via_the_login_host(service_factory, cluster, connects, sshd, tmp_path):
    svc, data = desktop_service(service_factory, tmp_path)
    svc.start()
    ssh = ["--ssh", "--login", "root@127.0.0.1", "--ssh-port", sshd.port, "--ssh-key", sshd.client_key,
           "--known-hosts", sshd.known_hosts]
    # A login host whose key is not the one known is refused before anything is carried (and the session cancelled).
    unknown = tmp_path / "known_hosts_other"
    unknown.write_text("")
    session = svc.client().create("pvserver", partition="cpu")
    svc.client().wait(session["id"])
    refused = pvhpc("connect", session["id"], *ssh[:-1], unknown, url=svc.url)
    assert refused.returncode == 5 and "is not in" in refused.stderr and "ssh-keyscan" in refused.stderr, refused

    connect = connects(tmp_path, session["id"], *ssh, url=svc.url)
    port = connect.listening()["port"]
    pvpython_renders_through(port, data, tmp_path, ranks=1).wait(60)
    assert connect.wait() == 0, connect.stderr
    assert svc.client().get(session["id"])["end_reason"] == "completed"
    assert "Accepted publickey for root" in sshd.log.read_text()


def test_an_oversized_first_message_is_refused_before_it_is_read_and_the_bridge_waits_on(bridge):
    """Whoever reaches the node's address gets as far as the first message: it is refused by its announced length,
    over MAX_HELLO, before its bytes are taken in (the connection closed, no pvserver dialled)."""
    proc, port, echo, secret, _ = bridge

    async def oversized():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        # A masked text frame announcing 64 MiB - 1 bytes (the largest frame the relay takes), of which only the
        # header is sent: the bridge must close now rather than wait for them.
        writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 64 * 1024 * 1024 - 1) + b"mask")
        await writer.drain()
        closed = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return closed

    assert asyncio.run(oversized()) == b""
    assert echo.connections == 0 and proc.poll() is None
    assert carry(DesktopConnection(f"ws://127.0.0.1:{port}/ws", secret), b"after") == b"after"


def test_the_users_login_goes_only_to_the_services_own_front_end():
    """``frontend.kind: direct`` hands out the node's own address: a personal token must not travel there."""
    client = Client("https://viz.example.org", token="pvhpc_t0ken", headers={"X-Site": "1"})
    through = websocket_headers(client, "wss://viz.example.org/proxy?sessionId=abc")
    assert through == {"X-Site": "1", "Authorization": "token pvhpc_t0ken"}
    assert websocket_headers(client, "ws://10.1.2.11:40000/ws") == {}
    assert websocket_headers(client, "wss://viz.example.org.evil.net/proxy") == {}
