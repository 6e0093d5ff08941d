"""More time through the page's button, in Chromium, on the real cluster: a session with a 3-minute walltime,
extended by 3 minutes, still renders a new picture after input at minute 4, its job still RUNNING in Slurm with a
TimeLimit of 6 minutes. Then ``pvhpc extend`` on the same session up to the partition's cap (7 minutes), after
which the button is off and says why, and the API answers the same with no Slurm call.

The test cluster's service runs as root, which Slurm counts as an administrator: the rights a site gives pvhpc's
account for ``extend_walltime: operator``, which this partition has (the sudo way: tests/test_more_time_cluster.py
and tests/test_more_time_sudo.py).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from pvhpc.client.api import ClientError

from tests.harness.browser import changed_share, chromium
from tests.harness.cluster import run_slurm

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.paraview, pytest.mark.waits]

READY_MS = 150_000
FRAME_MS = 30_000
CUBE_VTK = """# vtk DataFile Version 3.0
a cube
ASCII
DATASET POLYDATA
POINTS 8 float
0 0 0  1 0 0  1 1 0  0 1 0  0 0 1  1 0 1  1 1 1  0 1 1
POLYGONS 6 30
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""
PARTITIONS = {
    "cpu": {"walltime": {"default": 3, "max": 3}, "extend_walltime": "operator", "extend_walltime_max": 7},
    "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 30, "max": 120}},
}


def view(page) -> Image.Image:
    image = Image.open(io.BytesIO(page.locator("#viewer").screenshot())).convert("RGB")
    return image.crop((2, 2, image.width - 2, image.height - 2))


def picture_after_drag(page, before: Image.Image) -> Image.Image:
    """Drag in the quick view; the view once a new frame has come of it, which must differ from ``before``."""
    frames = int(page.get_attribute("#viewer", "data-frames") or 0)
    box = page.locator("#viewer").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 50, steps=12)
    page.mouse.up()
    page.wait_for_function("n => Number(document.getElementById('viewer').dataset.frames || 0) > n",
                           arg=frames, timeout=FRAME_MS)
    page.wait_for_timeout(1500)   # the still frame after the drag's quick ones
    after = view(page)
    assert changed_share(before, after) > 0.01
    return after


def slurm_says(cluster, job_id: str) -> list[str]:
    return run_slurm(cluster, "squeue", "-h", "-j", job_id, "-o", "%T|%l").strip().split("|")


def test_more_time_from_the_page_keeps_the_session_usable_past_its_first_walltime(service_factory, cluster, artifacts):
    svc = service_factory(frontend={"kind": "builtin"}, partitions=PARTITIONS, walltime_warnings=[])
    (svc.dir / "data" / "cube.vtk").write_text(CUBE_VTK)
    svc.start()
    client = svc.client()
    session = client.wait(client.create("paraview", partition="cpu", walltime=3, data="cube.vtk")["id"], timeout=150)
    assert session["state"] == "ready", session
    sid, job_id = session["id"], session["job_id"]
    assert session["more_time"] == {"allowed": True, "most_minutes": 4, "why": None}
    assert slurm_says(cluster, job_id) == ["RUNNING", "3:00"]
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(svc.url + "/")
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        page.locator(f'#live-table tr[data-session="{sid}"] button').click()
        page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
        page.wait_for_function("() => Number(document.getElementById('viewer').dataset.frames || 0) > 0",
                               timeout=FRAME_MS)
        page.wait_for_timeout(1500)
        picture = view(page)
        assert page.is_visible("#more-time-button") and page.is_enabled("#more-time-button")
        assert "at most 4 min more" in page.locator("#more-time-note").inner_text()
        ends_before = client.get(sid)["ends_at"]

        page.fill("#more-time-minutes", "3")
        page.click("#more-time-button")
        page.wait_for_function("() => document.getElementById('more-time-note').textContent.includes('extended')",
                               timeout=30_000)
        page.screenshot(path=str(artifacts / "01-extended.png"), full_page=True)
        assert "Walltime extended by 3 min: now 00:06:00" in page.locator("#more-time-note").inner_text()
        # Slurm's own TimeLimit, and everything that knows the walltime: the stored one, the end, the history.
        assert slurm_says(cluster, job_id) == ["RUNNING", "6:00"]
        now = client.get(sid)
        assert now["walltime"] == "00:06:00" and now["walltime_minutes"] == 6
        end = datetime.fromisoformat(now["ends_at"])
        assert end - datetime.fromisoformat(ends_before) == timedelta(minutes=3)
        assert any(h["detail"] == "walltime extended by 3 min, now 6 min" for h in now["history"])
        assert now["detail"] == session["detail"] and now["state"] == "ready"   # both as they were
        assert "walltime extended by 3 min, now 6 min" in page.locator("#session-timeline").inner_text()
        # Minute 4 of the job (past its first walltime of 3): still running in Slurm, still rendering after input.
        started = end - timedelta(minutes=6)
        wait = (started + timedelta(minutes=4, seconds=5) - datetime.now(end.tzinfo)).total_seconds()
        assert wait > 0, "the extension came too late for the check at minute 4"
        time.sleep(wait)
        page.wait_for_function("() => Number(document.getElementById('viewer').dataset.frames || 0) > 0",
                               timeout=FRAME_MS)
        page.wait_for_timeout(1500)
        picture = view(page)
        assert slurm_says(cluster, job_id) == ["RUNNING", "6:00"]
        picture_after_drag(page, picture)
        page.screenshot(path=str(artifacts / "02-minute-4.png"), full_page=True)
        assert client.get(sid)["state"] == "ready" and "the walltime ends the session at" in \
            page.locator("#session-left").inner_text()

        # The command line: over the cap it says the most that can still be added; then it takes that.
        over = pvhpc("extend", "--json", "--", sid, "2", url=svc.url)
        assert over.returncode == 2 and json.loads(over.stdout)["field"] == "minutes", over
        assert "at most 1 more" in json.loads(over.stdout)["error"]
        took = pvhpc("extend", "--json", "--", sid, "1", url=svc.url)
        assert took.returncode == 0 and json.loads(took.stdout)["walltime"] == "00:07:00", took
        assert slurm_says(cluster, job_id) == ["RUNNING", "7:00"]
        full = pvhpc("extend", "--", sid, "1", url=svc.url)
        assert full.returncode == 6 and "has the most walltime partition cpu allows (7 min)" in full.stderr, full
        # The cap is reached: the page's button is off and says why (the push channel brought the change).
        page.wait_for_function("() => document.getElementById('more-time-button').disabled", timeout=15_000)
        page.reload()
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        page.locator(f'#live-table tr[data-session="{sid}"] button').click()
        page.wait_for_selector('#session-state[data-state="ready"]', timeout=15_000)
        page.wait_for_function("() => document.getElementById('more-time-note').textContent.includes('the most')",
                               timeout=15_000)
        assert page.is_disabled("#more-time-button")
        assert "has the most walltime partition cpu allows (7 min)" in page.locator("#more-time-note").inner_text()
        page.screenshot(path=str(artifacts / "03-cap-reached.png"), full_page=True)
        with pytest.raises(ClientError) as refused:
            client.extend(sid, 1)
        assert refused.value.status == 403 and refused.value.field == "partition"
        assert errors == []
    client.cancel(sid)


def pvhpc(*args, url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PVHPC_CLIENT_CONFIG=str(REPO / "no-such-client.yaml"), PVHPC_URL=url)
    env.pop("PVHPC_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "pvhpc", *args], env=env, capture_output=True, text=True, timeout=60)
