"""The unmodified ParaView Visualizer (npm pvw-visualizer 3.2.0) as a Slurm job, launched through POST /paraview/
on a real service: it opens a data file from the data roots (and nothing outside them), a Contour is added, each step renders a new image
over its websocket; its secret is on no command line; its client's exit ends the session as completed."""

from __future__ import annotations

import asyncio

import pytest

from pvhpc import config, paths
from pvhpc.client.wslink import WslinkClient, WslinkError
from pvhpc import runtime

from tests.helpers import foreground_fraction, new_image, processes_of_cluster_job, wait_until, write_blob

pytestmark = pytest.mark.cluster


async def pipeline(url: str, secret: str) -> list[bytes]:
    client = await WslinkClient.connect(url, secret)
    try:
        listing = await client.call("file.server.directory.list", ["."])
        assert {"label": "blob.vtk"} in listing["files"], listing
        # The Visualizer builds ParaView's own file protocols, whose check is a string prefix; pvhpc's wrapper
        # gives it pvhpc's: a sibling named like the data root stays out of reach, listed or opened.
        with pytest.raises(WslinkError):
            await client.call("file.server.directory.list", ["Home/../data2"])
        outside = await client.call("pv.proxy.manager.create.reader", ["../data2/outside.vtk"])
        assert outside.get("success") is False, outside
        images = [await new_image(client, None)]
        reader = await client.call("pv.proxy.manager.create.reader", ["blob.vtk"])
        assert reader.get("success") and reader.get("id"), reader
        images.append(await new_image(client, images[-1]))
        contour = await client.call("pv.proxy.manager.create", ["Contour", reader["id"]])
        assert contour.get("id"), contour
        images.append(await new_image(client, images[-1]))
        # As the Visualizer's autoStopServer does once its tab is closed.
        await client.call("application.exit.later", [1])
        return images
    finally:
        client.close()


def test_the_unmodified_visualizer_runs_as_a_slurm_job_and_renders_a_pipeline(service_factory, cluster, tmp_path,
                                                                             artifacts):
    runtime.install_web_clients(paths.web_clients_dir())
    data = tmp_path / "data"
    data.mkdir()
    write_blob(data / "blob.vtk")
    (tmp_path / "data2").mkdir()
    write_blob(tmp_path / "data2" / "outside.vtk", n=4)
    apps = config.visualizer_application([str(data)])
    apps["visualizer"]["start_timeout"] = 120
    svc = service_factory(applications=apps).start()
    client = svc.client()
    session = client.launch("visualizer", partition="gpu", gpus="1")
    assert session["state"] == "ready", session

    procs = processes_of_cluster_job(cluster, session["job_id"])
    server = [p for p in procs if "pvw-visualizer.py" in p and "argv_secret.py" in p]
    assert len(server) == 1 and "--authKey ${secret}" in server[0], procs
    assert not [p for p in procs if session["secret"] in p], procs

    empty, opened, contoured = asyncio.run(pipeline(session["sessionURL"], session["secret"]))
    for name, image in (("empty", empty), ("opened", opened), ("contour", contoured)):
        (artifacts / f"{name}.jpg").write_bytes(image)
    # An image's default look is its outline (a few lines); the contour is a sphere filling much of the view.
    assert foreground_fraction(empty) < foreground_fraction(opened) < 0.05 < foreground_fraction(contoured), (
        [foreground_fraction(i) for i in (empty, opened, contoured)])
    assert len({empty, opened, contoured}) == 3, "an image did not change after its step"

    ended = client.wait(session["id"], until=("ended",), timeout=60)
    assert (ended["end_reason"], ended["detail"]) == (
        "completed", "the session's server stopped normally: its client asked it to stop"), ended
    wait_until(lambda: not processes_of_cluster_job(cluster, session["job_id"]), 30,
               message="the job's processes are gone")
