"""The ParaViewWeb server application refuses bad input before it opens a port."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from pvhpc.paths import SERVER_SCRIPT

pytestmark = pytest.mark.paraview


def start_server(runtime_dir, *args, env_secret=None):
    env = dict(os.environ, PYTHONPATH=str(runtime_dir))
    env.pop("PVHPC_SECRET", None)
    if env_secret is not None:
        env["PVHPC_SECRET"] = env_secret
    return subprocess.run(
        ["xvfb-run", "-a", "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port", "0", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("args,env_secret,message", [
    ((), None, "no secret"),
    # (pvpython itself crashes on an empty argument word, so the empty secret is given as --authKey=)
    (("--authKey=",), None, "no secret"),
    ((), "", "no secret"),
    (("--authKey", "x", "--data", "/nonexistent/pvhpc-data"), None, "'/nonexistent/pvhpc-data' is not an existing directory"),
])
def test_server_refuses_bad_input_before_listening(runtime_dir, args, env_secret, message):
    proc = start_server(runtime_dir, *args, env_secret=env_secret)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "ready port=" not in proc.stdout


# The smallest data file ParaView opens and shows: one triangle, legacy VTK.
TRIANGLE = """# vtk DataFile Version 3.0
triangle
ASCII
DATASET POLYDATA
POINTS 3 float
0 0 0 1 0 0 0 1 0
POLYGONS 1 4
3 0 1 2
"""


@pytest.fixture
def contained_server(runtime_dir, tmp_path):
    """A real pvhpc session server whose data directory has a sibling and a symlink pointing out of it."""
    import re
    import time

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "inside.vtk").write_text(TRIANGLE)
    (data / "sub" / "deeper.vtk").write_text(TRIANGLE)
    sibling = tmp_path / "data2"     # shares the root's prefix: a startswith check lets it through
    sibling.mkdir()
    (sibling / "outside.vtk").write_text(TRIANGLE)
    (data / "etc").symlink_to("/etc")
    env = dict(os.environ, PYTHONPATH=str(runtime_dir), PVHPC_SECRET="s3cret-for-test")
    proc = subprocess.Popen(
        ["xvfb-run", "-a", "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port", "0", "--host", "127.0.0.1",
         "--data", str(data), "--timeout", "120"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,   # xvfb-run, its Xvfb and the server: stopped together, as one process group
    )
    deadline, port, seen = time.monotonic() + 90, None, []
    while time.monotonic() < deadline and port is None:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        m = re.search(r"ready port=(\d+)", line)
        port = int(m.group(1)) if m else None
    assert port, "server did not start:\n" + "".join(seen[-30:])
    yield f"ws://127.0.0.1:{port}/ws", "s3cret-for-test"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_clients_stay_inside_the_data_directory(contained_server):
    """ParaView's own check is a string prefix: a sibling named like the root, a symlink out of it and
    '..' in a reader's path all got through it. pvhpc's server refuses each, for listing and opening."""
    import asyncio

    from pvhpc.client.wslink import WslinkClient, WslinkError

    url, secret = contained_server

    async def scenario():
        client = await WslinkClient.connect(url, secret)
        try:
            listing = await client.call("file.server.directory.list", ["."])
            assert "inside.vtk" in [f["label"] for f in listing["files"]]
            sub = await client.call("file.server.directory.list", ["Home/sub"])
            assert [f["label"] for f in sub["files"]] == ["deeper.vtk"]
            for escape in ("Home/../data2", "Home/etc", "Home/sub/../../data2", "/etc", "Home/" + "a" * 5000):
                with pytest.raises(WslinkError):
                    await client.call("file.server.directory.list", [escape])
            opened = await client.call("pv.proxy.manager.create.reader", ["inside.vtk"])
            assert opened["success"], opened
            for escape in ("../data2/outside.vtk", "etc/passwd", "/etc/passwd"):
                refused = await client.call("pv.proxy.manager.create.reader", [escape])
                assert refused["success"] is False, (escape, refused)
            # A reader's file name changed afterwards is held to the same rule.
            with pytest.raises(WslinkError):
                await client.call("pv.proxy.manager.update",
                                  [[{"id": opened["id"], "name": "FileNames", "value": ["../data2/outside.vtk"]}]])
            moved = await client.call("pv.proxy.manager.update",
                                      [[{"id": opened["id"], "name": "FileNames", "value": ["sub/deeper.vtk"]}]])
            assert moved["success"], moved
        finally:
            client.close()

    asyncio.run(scenario())
