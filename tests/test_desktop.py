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
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pvhpc.client.desktop import DesktopConnection, DesktopError, session_problem, socket_owner
from pvhpc.config import ConfigError, embedded_defaults, parse
from pvhpc.paths import PACKAGE_DIR

from tests.helpers import PARALLEL_CPU, PVSERVER, REPO, as_json, foreground_fraction, pvhpc, wait_until

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
    payload = os.urandom(700_000)   # several frames and TCP reads each way
    assert carry(DesktopConnection(f"ws://127.0.0.1:{port}/ws", secret), payload) == payload
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
        probe = ("import socket,sys; s=socket.create_connection(('127.0.0.1', %d)); s.sendall(b'x'); s.settimeout(10);"
                 " sys.stdout.write(repr(s.recv(10)))" % connection.port)
        done = await asyncio.create_subprocess_exec("setpriv", f"--reuid={other.pw_uid}", f"--regid={other.pw_gid}",
                                                    "--clear-groups", sys.executable, "-c", probe,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await done.communicate()
        await connection.close()
        return out.decode(), err.decode()

    out, err = asyncio.run(run())
    assert out == "b''", (out, err)   # closed, nothing carried
    assert connection.checked and connection.connections == 0 and echo.connections == 0
    assert any("refused a connection" in line for line in logged), logged
    assert carry(DesktopConnection(f"ws://127.0.0.1:{port}/ws", secret), b"mine") == b"mine"
