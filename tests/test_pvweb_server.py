"""The ParaViewWeb server application refuses bad input before it opens a port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import pytest

from pvhpc.paths import SERVER_SCRIPT

from tests.helpers import XVFB_RUN

pytestmark = pytest.mark.paraview


def start_server(runtime_dir, *args, env_secret=None):
    env = dict(os.environ, PYTHONPATH=str(runtime_dir))
    env.pop("PVHPC_SECRET", None)
    if env_secret is not None:
        env["PVHPC_SECRET"] = env_secret
    return subprocess.run(
        [*XVFB_RUN, "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port", "0", *args],
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
    # A start that dies says where: Python's tracebacks on a fatal signal, glibc's abort message on stderr (not the
    # terminal, which a test has none of).
    env = dict(os.environ, PYTHONPATH=str(runtime_dir), PVHPC_SECRET="s3cret-for-test", PYTHONFAULTHANDLER="1",
               LIBC_FATAL_STDERR_="1")
    xvfb_errors = tmp_path / "xvfb.log"   # xvfb-run sends Xvfb's and xauth's words nowhere unless told (-e)
    proc = subprocess.Popen(
        [*XVFB_RUN, "-e", str(xvfb_errors), "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port", "0",
         "--host", "127.0.0.1", "--data", str(data), "--timeout", "120"],
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
    if port is None:
        ended = proc.poll()
        xvfb_said = xvfb_errors.read_text(errors="replace")[-2000:] if xvfb_errors.exists() else ""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)   # an Xvfb its xvfb-run left
        proc.wait()
        how = f"exit {ended}" if ended is not None else "still running after 90 s"
        pytest.fail(f"server did not start ({how}):\n" + "".join(seen[-30:]) + f"\nXvfb said: {xvfb_said or '(nothing)'}")
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


def test_quick_view_interaction_answers_with_the_picture_it_made(contained_server):
    """pvhpc.viewport.interact applies the mouse events and answers, after one render, with the picture they made,
    encoded before it answers (never ParaView's `stale` previous picture): the quick view's one call a frame."""
    import asyncio

    from pvhpc.client.wslink import WslinkClient

    url, secret = contained_server
    options = {"view": -1, "size": [320, 240], "quality": 50, "mtime": 0}

    def mouse(action, x, y, left):
        return {"view": -1, "action": action, "x": x, "y": y, "buttonLeft": left, "buttonMiddle": False,
                "buttonRight": False, "shiftKey": False, "ctrlKey": False, "altKey": False, "metaKey": False}

    async def fresh(client):
        """ParaView's own path, re-rendered and waited for: the picture of the view as it is now."""
        reply = await client.call("viewport.image.render", [{**options, "clearCache": True}])
        while reply["stale"]:
            await asyncio.sleep(0.05)
            reply = await client.call("viewport.image.render", [options])
        return reply["image"]

    async def scenario():
        client = await WslinkClient.connect(url, secret)
        try:
            await client.call("pv.proxy.manager.create", ["Cone", -1])
            await client.call("viewport.camera.reset", [-1])
            before = await fresh(client)
            down = await client.call("pvhpc.viewport.interact", [[mouse("down", 0.5, 0.5, True)], options])
            pictures = [down["image"]]
            last = down
            for step in range(1, 6):
                moved = await client.call("pvhpc.viewport.interact",
                                          [[mouse("move", 0.5 + 0.05 * step, 0.5 + 0.02 * step, True)], options])
                assert moved["stale"] is False, moved
                assert moved["renders"] - last["renders"] == 1, "one render per interaction frame"
                assert moved["image"] and moved["mtime"] != last["mtime"]
                pictures.append(moved["image"])
                last = moved
            assert before not in pictures[1:] and len(set(pictures)) == len(pictures), "each move a new picture"
            # The answer is the picture of the camera the events left, as ParaView renders it afresh.
            assert await fresh(client) == pictures[-1]
            up = await client.call("pvhpc.viewport.interact",
                                   [[mouse("up", 0.75, 0.6, False)], {**options, "quality": 85}])
            assert up["image"] and up["stale"] is False
            # Nothing new: the client's mtime gets no image back.
            idle = await client.call("pvhpc.viewport.interact", [[], {**options, "quality": 85,
                                                                        "mtime": up["mtime"]}])
            assert idle["image"] is None and idle["renders"] == up["renders"]
        finally:
            client.close()

    asyncio.run(scenario())
