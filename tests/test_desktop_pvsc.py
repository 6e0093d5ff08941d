"""The desktop ParaView (Debian's 5.11 Qt client, under Xvfb) reads the file ``pvhpc pvsc`` writes, asks for its
options in its own dialog (answered with xdotool as a user's keys: a walltime of 20 minutes), runs
``pvhpc connect --new ...`` and connects through it to a real session on a node: the server can render (the job's
X display reaches a pvserver of one rank), a sphere rendered, a file from the data roots opened. Closing ParaView
disconnects its client, and the session ends completed with no job left. (2 ranks over 2 nodes through
``pvhpc connect``: tests/test_desktop.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PARALLEL_CPU, PVSERVER, REPO, foreground_fraction, pvhpc, wait_until, write_blob
from tests.harness.cluster import pvhpc_jobs
from tests.harness.ports import free_port_block

pytestmark = [pytest.mark.cluster, pytest.mark.paraview]

PARAVIEW = "/usr/bin/paraview"
CHECK = """\
import json
from paraview import servermanager
from paraview.simple import *
from paraview.modules.vtkRemotingViews import vtkPVRenderingCapabilitiesInformation as Capabilities
connection = servermanager.ActiveConnection
capabilities = Capabilities()
connection.Session.GatherInformation(0x04, capabilities, 0)   # the render server's
reader = OpenDataFile({data!r})
reader.UpdatePipeline()
points = reader.GetDataInformation().GetNumberOfPoints()
sphere = Sphere(ThetaResolution=48, PhiResolution=48)
Show(sphere)
view = GetActiveViewOrCreate("RenderView")
view.ViewSize = [300, 300]
ResetCamera()
Render()
SaveScreenshot({png!r}, view, ImageResolution=[300, 300])
with open({out!r}, "w") as out:
    json.dump({{"remote": bool(connection.IsRemote()), "ranks": connection.GetNumberOfDataPartitions(),
               "server_renders": bool(capabilities.Supports(Capabilities.RENDERING)), "points": points}}, out)
"""


def desktop_site(data_dir: Path) -> dict:
    return {"partitions": {"cpu": PARALLEL_CPU},
            "applications": {"pvserver": {"desktop": True, "pvserver": PVSERVER, "data_roots": [str(data_dir)],
                                          "partitions": ["cpu"], "start_timeout": 120}}}


def start_display() -> tuple[subprocess.Popen, str]:
    """A private X display (Xvfb picks a free number and says which on the pipe)."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    assert number, "Xvfb did not start"
    return xvfb, f":{number}"


def window(display: str, title: str) -> str | None:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title], env=dict(os.environ, DISPLAY=display),
                           capture_output=True, text=True)
    ids = found.stdout.split()
    return ids[0] if ids else None


def keys(display: str, window_id: str, *steps: list[str]) -> None:
    env = dict(os.environ, DISPLAY=display)
    subprocess.run(["xdotool", "windowfocus", "--sync", window_id], env=env, check=True)
    for step in steps:
        subprocess.run(["xdotool", *step], env=env, check=True)


def quiet_settings(home: Path) -> None:
    """A new user's ParaView settings, but for its welcome dialog: it would take the keys meant for ours."""
    version = subprocess.run(["pvpython", "--version"], capture_output=True, text=True).stdout.split()[-1]
    settings = home / ".config" / "ParaView"
    settings.mkdir(parents=True)
    (settings / f"ParaView{version}.ini").write_text("[General]\nGeneralSettings.ShowWelcomeDialog=false\n")
    home.chmod(0o700)


def test_paraview_connects_through_the_sites_pvsc_and_renders_on_the_node(service_factory, tmp_path, cluster):
    for tool in (PARAVIEW, "Xvfb", "xdotool"):
        assert shutil.which(tool), f"{tool} is missing: install.sh installs it"
    data_dir = tmp_path / "svc" / "data"
    svc = service_factory(**desktop_site(data_dir)).start()
    write_blob(data_dir / "blob.vtk", n=8)

    # The pvhpc ParaView runs: this checkout's, as a user's machine has it on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pvhpc").write_text(f"#!/bin/sh\nexec {sys.executable} -m pvhpc \"$@\"\n")
    (bin_dir / "pvhpc").chmod(0o755)
    port = free_port_block(1)
    pvsc_file = tmp_path / "site.pvsc"
    made = pvhpc("pvsc", "-o", pvsc_file, "--exec", bin_dir / "pvhpc", "--port", port, url=svc.url)
    assert made.returncode == 0, made.stderr

    out, png = tmp_path / "seen.json", tmp_path / "sphere.png"
    script = tmp_path / "check.py"
    script.write_text(CHECK.format(data=str(data_dir / "blob.vtk"), png=str(png), out=str(out)))
    home = tmp_path / "home"
    quiet_settings(home)
    xvfb, display = start_display()
    env = dict(os.environ, DISPLAY=display, HOME=str(home), PYTHONPATH=str(REPO), PVHPC_URL=svc.url,
               PVHPC_CLIENT_CONFIG=str(tmp_path / "no-client.yaml"), XDG_RUNTIME_DIR=str(home))
    env.pop("PVHPC_TOKEN", None)
    log = (tmp_path / "paraview.log").open("w")
    paraview = subprocess.Popen([PARAVIEW, f"--servers-file={pvsc_file}", "--server=pvhpc pvserver on cpu",
                                 f"--script={script}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # ParaView's own dialog for the entry's options (port, nodes, ranks, walltime): 20 minutes, the rest as
        # offered.
        dialog = wait_until(lambda: window(display, "Connection Options"), 90, interval=0.5,
                            message="ParaView's Connection Options dialog")
        keys(display, dialog, ["key", "Tab"], ["key", "Tab"], ["key", "Tab"], ["key", "ctrl+a"],
             ["type", "0:20:00"], ["key", "Return"])

        try:
            seen = json.loads(wait_until(lambda: out.exists() and out.read_text(), 240, interval=1,
                                         message="ParaView's script after connecting"))
        except AssertionError as e:
            raise AssertionError(f"{e}; ParaView said:\n{(tmp_path / 'paraview.log').read_text()[-3000:]}") from None
        assert seen == {"remote": True, "ranks": 1, "server_renders": True, "points": 8 ** 3}, seen
        assert foreground_fraction(png.read_bytes()) > 0.05, "the sphere ParaView rendered through pvhpc is not there"
        sessions = svc.client().list()
        assert [(s["application"], s["state"], s["walltime"]) for s in sessions] == [
            ("pvserver", "ready", "00:20:00")], sessions
        session = sessions[0]
    finally:
        paraview.terminate()
        try:
            paraview.wait(20)
        except subprocess.TimeoutExpired:
            paraview.kill()
        xvfb.terminate()
        log.close()

    # ParaView gone, its client disconnected: pvserver ends, and the session with it.
    over = svc.client().wait(session["id"], until=("ended",), timeout=60)
    assert over["end_reason"] == "completed", over
    wait_until(lambda: not pvhpc_jobs(cluster), 30, message="no job left in Slurm")


def test_pvhpc_connect_launch_starts_paraview_connected_to_the_session(service_factory, tmp_path, cluster):
    """``pvhpc connect ID --launch``: ParaView's GUI started on the address it listens at, connected through it;
    ParaView closed, the command ends (0) and so does the session (completed)."""
    data_dir = tmp_path / "svc" / "data"
    svc = service_factory(**desktop_site(data_dir)).start()
    client = svc.client()
    session = client.launch("pvserver", partition="cpu")
    assert session["state"] == "ready", session
    home = tmp_path / "home"
    quiet_settings(home)
    xvfb, display = start_display()
    env = dict(os.environ, DISPLAY=display, HOME=str(home), XDG_RUNTIME_DIR=str(home))
    connect = subprocess.Popen([sys.executable, "-m", "pvhpc", "connect", session["id"], "--launch", "--json"],
                               env=dict(env, PYTHONPATH=str(REPO), PVHPC_URL=svc.url,
                                        PVHPC_CLIENT_CONFIG=str(tmp_path / "no-client.yaml")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "a client is connected to the ParaView server" in client.log(session["id"]), 120,
                   interval=1, message="ParaView's GUI connected through pvhpc connect (the bridge's word in the job log)")
        children = subprocess.run(["pgrep", "-P", str(connect.pid), "-x", "paraview"], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 1, f"pvhpc connect --launch started {children or 'no'} paraview"
        os.kill(int(children[0]), signal.SIGTERM)
        out, err = connect.communicate(timeout=60)
    finally:
        if connect.poll() is None:
            connect.kill()
        xvfb.terminate()
    assert connect.returncode == 0, (out, err)
    assert json.loads(out.splitlines()[0])["session"] == session["id"]
    over = client.wait(session["id"], until=("ended",), timeout=60)
    assert over["end_reason"] == "completed", over
