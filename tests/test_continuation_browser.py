"""Continuation on the real path: a session asked to continue, with a 2-minute walltime, worked on in the unmodified
Visualizer in real Chromium through the built-in front end, goes on in a successor Slurm job on the test cluster;
the same page (not reloaded by the test) comes back attached to the same session, with the same pipeline and
picture. And what must refuse or end cleanly: continuing where staff do not allow it, past the total, an ended
session, a successor that never starts (the session keeps its walltime).

Screenshots go to test-artifacts/<test>/.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import cluster as test_cluster
from tests.harness.browser import changed_share, chromium
from tests.harness.visualizer_page import (ADD_FILTER, APPLY, DATA_FILE, OPEN_FILE, PANEL_WIDTH, STEP_S, VIEWPORT,
                                           new_picture, viewport, write_fields)
from tests.helpers import as_json, foreground_fraction, pvhpc

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.paraview, pytest.mark.waits]

READY_S = 170


def applications(data_dir: Path) -> dict:
    from pvhpc import config

    entry = config.visualizer_application([str(data_dir)])
    if not entry:
        pytest.fail("the visualizer application is not available (pvhpc runtime install for the npm pvw-visualizer)")
    return {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 120},
            **{name: {**app, "start_timeout": 120} for name, app in entry.items()}}


def continuing_service(service_factory, tmp_path, **overrides):
    data_dir = tmp_path / "svc" / "data"
    write_fields(data_dir)
    return service_factory(frontend={"kind": "builtin"}, applications=applications(data_dir),
                           partitions={"cpu": {"walltime": {"default": 2, "max": 10}},
                                       "gpu": {"gpu_type": "a100", "continuation": False}},
                           continuation=True, continue_max_total=4, **overrides).start()


def filled(image: Image.Image) -> float:
    png = io.BytesIO()
    image.save(png, "PNG")
    return foreground_fraction(png.getvalue())


def wait_ready(client, session_id: str, timeout: float = READY_S) -> dict:
    session = client.wait(session_id, timeout=timeout)
    assert session["state"] == "ready", session
    return session


@pytest.fixture
def page(tmp_path):
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.errors = []
        page.navigations = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.earlier_errors = []

        def navigated(frame):
            if frame == page.main_frame:
                page.navigations.append(frame.url)
                # What the page before said as its websocket dropped (the old server gone) is kept apart.
                page.earlier_errors += page.errors
                page.errors.clear()

        page.on("framenavigated", navigated)
        yield page
        context.close()


def test_a_continued_session_comes_back_in_the_same_visualizer_page(service_factory, page, artifacts, tmp_path, cluster):
    svc = continuing_service(service_factory, tmp_path)
    client = svc.client()
    session = client.create("visualizer", partition="cpu", walltime=2, **{"continue": True})
    assert session["continue"] is True
    sid = session["id"]
    first = wait_ready(client, sid)
    started = time.monotonic()
    url = f"{svc.url}/apps/visualizer/?attach={sid}"
    page.goto(url)

    # Worked on in the Visualizer's own UI: the data file opened, a Contour added.
    page.wait_for_selector(OPEN_FILE, timeout=60_000)
    page.wait_for_timeout(2000)
    empty = viewport(page, artifacts / "01-connected.png")
    page.click(OPEN_FILE)
    page.click(f'li[data-action="file"][data-name="{DATA_FILE}"]')
    opened = new_picture(page, empty, artifacts / "02-file-opened.png", least=0.002)
    page.click(ADD_FILTER)
    page.click('li[data-name="Contour"]')
    page.click(APPLY)
    contoured = new_picture(page, opened, artifacts / "03-contour.png")
    assert filled(contoured) > filled(opened) * 2
    worked_at = time.monotonic() - started
    page.evaluate("window.pvhpcTestMark = 'before the takeover'")   # gone once pvhpc has reopened the page
    assert worked_at < 85, f"the work took {worked_at:.0f} s: past the successor's lead, the test proves nothing"

    # The successor takes over: the session keeps its id, URL and secret; its job id changes.
    deadline = started + 200
    while time.monotonic() < deadline:
        now = client.get(sid)
        if now["job_id"] != first["job_id"] and now["state"] == "ready":
            break
        time.sleep(2)
    else:
        pytest.fail(f"no successor took over: {client.get(sid)}")
    assert (now["id"], now["secret"], now["sessionURL"]) == (sid, first["secret"], first["sessionURL"])
    assert now["continuations"] == 1
    old = test_cluster.job(cluster, first["job_id"])
    assert not test_cluster.live(old), f"the old job {first['job_id']} is still there: {old}"

    # The same page, reattached by pvhpc by itself (the test neither reloads nor clicks), shows the pipeline.
    page.wait_for_selector("text=Contour1", timeout=90_000)
    page.wait_for_timeout(3000)
    deadline = time.monotonic() + STEP_S
    while True:
        back = viewport(page, artifacts / "04-after-takeover.png")
        if filled(back) > filled(opened) * 2 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(1000)
    at = time.monotonic() - started
    page.screenshot(path=str(artifacts / "05-whole-page.png"))
    assert filled(back) > filled(opened) * 2, "the contour should be in the picture again"
    difference = changed_share(contoured, back)
    (artifacts / "figures.txt").write_text(f"work done at {worked_at:.0f} s; back at {at:.0f} s after ready; "
                                           f"picture differs from before by {difference:.3f}\n")
    assert difference < 0.05, f"the picture after the takeover differs from before by {difference:.1%}"
    assert at < 200, f"the page came back only {at:.0f} s after the session was first ready"
    assert page.url == url, "the same URL"
    # Opened once by the test, once more by pvhpc's reattachment (the test's mark is gone), at the same URL.
    assert page.navigations == [url, url], page.navigations
    assert page.evaluate("window.pvhpcTestMark === undefined")
    # Attached for real: the new server renders the restored pipeline as the view is turned.
    box = page.locator(VIEWPORT).bounding_box()
    x, y = box["x"] + PANEL_WIDTH + (box["width"] - PANEL_WIDTH) / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 60, steps=10)
    page.mouse.up()
    new_picture(page, back, artifacts / "06-turned-on-the-new-server.png")
    assert page.errors == [], page.errors   # the reattached page's own
    with (artifacts / "figures.txt").open("a") as figures:
        figures.write(f"errors of the page before it was reattached: {page.earlier_errors}\n")
    # Minute 3 of the session: still the successor's, still the same pipeline on the same page.
    page.wait_for_timeout(max(0, 180 - (time.monotonic() - started)) * 1000)
    at_3 = client.get(sid)
    assert (at_3["state"], at_3["job_id"]) == ("ready", now["job_id"]), at_3
    assert page.locator("text=Contour1").is_visible() and page.url == url and len(page.navigations) == 2
    assert filled(viewport(page, artifacts / "07-minute-3.png")) > filled(opened) * 2
    history = [h["detail"] for h in client.get(sid)["history"]]
    for words in ("successor submitted as job", "taken over by job", "has ended, its state saved"):
        assert any(words in h for h in history), (words, history)

    client.cancel(sid)
    for job_id in (first["job_id"], now["job_id"]):
        assert not test_cluster.live(test_cluster.job(cluster, job_id))


def refused(call) -> tuple[int, dict]:
    """The status and the error (its message, the field it names) of a call the service refuses."""
    from pvhpc.client.api import ClientError

    with pytest.raises(ClientError) as e:
        call()
    return e.value.status, {"error": str(e.value), "field": e.value.field}


@pytest.mark.parametrize("how", ["cancelled-while-queued", "refused-by-slurm"])
def test_a_successor_that_never_starts_leaves_the_session_its_walltime_and_no_job(service_factory, tmp_path,
                                                                                   cluster, how):
    svc = continuing_service(service_factory, tmp_path)
    client = svc.client()
    sid = client.create("paraview", partition="cpu", walltime=2, **{"continue": True})["id"]
    first = wait_ready(client, sid)
    # Between the two submissions the partition takes no new jobs (drained: Slurm refuses the successor), or
    # starts none (down: the successor waits in the queue, where it is cancelled); the running job goes on.
    state = "DRAIN" if how == "refused-by-slurm" else "DOWN"
    test_cluster.run_slurm(cluster, "scontrol", "update", "PartitionName=cpu", f"State={state}")
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            now = client.get(sid)
            if now["successor_job_id"] or now["state"] == "ended" or not now["continue"]:
                break
            time.sleep(1)
        if how == "cancelled-while-queued":
            assert now["successor_job_id"], now
            test_cluster.cancel(cluster, [now["successor_job_id"]])
        # Continuation is an extra: its failure turns it off, and the session runs on to its walltime.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            going_on = client.get(sid)
            if not going_on["continue"] or going_on["state"] == "ended":
                break
            time.sleep(1)
        assert (going_on["state"], going_on["job_id"], going_on["successor_job_id"], going_on["continue"]) == (
            "ready", first["job_id"], None, False), going_on
        ended = client.wait(sid, until=("ended",), timeout=120)
    finally:
        test_cluster.run_slurm(cluster, "scontrol", "update", "PartitionName=cpu", "State=UP")
    assert (ended["state"], ended["end_reason"]) == ("ended", "walltime"), ended
    time.sleep(5)
    assert [j for j in test_cluster.pvhpc_jobs(cluster) if j.job_id in (first["job_id"], now.get("successor_job_id"))] == []
    assert any(s["session"] == sid for s in client.saved_states()), "its saved state is kept and listed"


def test_bad_continue_requests_are_refused_and_submit_nothing(service_factory, tmp_path, cluster):
    svc = continuing_service(service_factory, tmp_path)
    client = svc.client()
    before = {j.job_id for j in test_cluster.pvhpc_jobs(cluster)}
    status, body = refused(lambda: client.create("paraview", partition="gpu", **{"continue": True}))
    assert (status, body.get("field")) == (403, "continue") and "gpu" in body["error"]
    status, body = refused(lambda: client.create("paraview", partition="cpu", walltime=3, **{"continue": True}))
    assert (status, body.get("field")) == (429, "continue") and "continue_max_total" in body["error"]
    status, body = refused(lambda: client.create("paraview", partition="cpu", **{"continue": "yes"}))
    assert (status, body.get("field")) == (400, "continue")
    assert {j.job_id for j in test_cluster.pvhpc_jobs(cluster)} == before
    assert [s for s in client.list() if s["state"] != "ended"] == []

    # The command line says the same, naming what was wrong (exit 5: the service refused).
    cli = pvhpc("submit", "paraview", "-p", "gpu", "--continue", url=svc.url)
    assert cli.returncode != 0 and "continue" in cli.stderr and "gpu" in cli.stderr, cli.stderr

    session = client.create("paraview", partition="cpu", walltime=2)
    status, body = refused(lambda: client.request("POST", "/api/v1/sessions/" + "x" * 32 + "/continue",
                                                  {"continue": True}))
    assert status == 404
    switched = as_json(pvhpc("continue", session["id"], "--json", url=svc.url))
    assert switched["continue"] is True
    assert as_json(pvhpc("continue", session["id"], "--off", "--json", url=svc.url))["continue"] is False
    history = [h["detail"] for h in client.get(session["id"])["history"]]
    assert any("continuation asked" in h for h in history) and any("continuation turned off" in h for h in history)
    client.cancel(session["id"])
    status, body = refused(lambda: client.set_continue(session["id"]))
    assert (status, body.get("field")) == (409, "continue") and "ended" in body["error"]
    cli = pvhpc("continue", session["id"], url=svc.url)
    assert cli.returncode != 0 and "ended" in cli.stderr, cli.stderr
    assert {j.job_id for j in test_cluster.pvhpc_jobs(cluster)} - before == set()


def test_a_successor_still_queued_at_the_walltime_is_waited_for_and_starts_from_the_saved_state(service_factory,
                                                                                                  tmp_path, cluster):
    svc = continuing_service(service_factory, tmp_path)
    client = svc.client()
    sid = client.create("paraview", partition="cpu", walltime=2, **{"continue": True})["id"]
    first = wait_ready(client, sid)
    # The partition starts no new job until after the walltime: the successor waits in the queue meanwhile.
    test_cluster.run_slurm(cluster, "scontrol", "update", "PartitionName=cpu", "State=DOWN")
    try:
        waiting = None
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            now = client.get(sid)
            if now["state"] == "queued" and now["job_id"] != first["job_id"]:
                waiting = now
                break
            assert now["state"] != "ended", now
            time.sleep(1)
        assert waiting is not None, f"the session did not wait for its successor: {client.get(sid)}"
        assert "waiting for its successor job" in waiting["detail"] and "saved its state" in waiting["detail"]
        assert not test_cluster.live(test_cluster.job(cluster, first["job_id"])), "the old job has ended"
        assert any(s["session"] == sid for s in client.saved_states()), "its state was saved at the walltime"
    finally:
        test_cluster.run_slurm(cluster, "scontrol", "update", "PartitionName=cpu", "State=UP")
    back = wait_ready(client, sid)
    assert (back["id"], back["secret"], back["sessionURL"], back["job_id"]) == (
        sid, first["secret"], first["sessionURL"], waiting["job_id"])
    log = client.log_record(sid)
    assert log["job_id"] == back["job_id"] and "pvhpc: loaded the state" in log["log"], log["log"][-2000:]
    client.cancel(sid)
