"""A past session launched again: with the same settings, and with its last saved state where it saved one, from
the CLI (``pvhpc relaunch ID [--with-state]``) and from the page's past sessions (real Chromium); the launch form
remembers its last choices across a reload and drops quietly what is no longer offered. The relaunched sessions
run on the real cluster, and start from the state: their job's log says so and their pipeline shows it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvhpc.cli.base import CommandError
from pvhpc.cli.relaunch_cmd import relaunch_request
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
READY_MS = 150_000
PAST = {"id": "past1", "application": "paraview", "version": None, "partition": "cpu", "gpus": 0, "nodes": 0,
        "ranks": 0, "walltime": "00:07:00", "data": "shapes/cube.vtk", "state": "ended"}
STATES = [{"session": "other", "path": "/s/other.pvsm", "saved_at": "2026-01-03T00:00:00Z"},
          {"session": "past1", "path": "/s/old.pvsm", "saved_at": "2026-01-01T00:00:00Z"},
          {"session": "past1", "path": "/s/new.pvsm", "saved_at": "2026-01-02T00:00:00Z"}]


def test_a_relaunch_asks_for_the_past_settings_and_options_given_replace_them():
    assert relaunch_request(PAST, None, {}) == {"application": "paraview", "partition": "cpu", "gpus": 0,
                                                "walltime": "00:07:00", "data": "shapes/cube.vtk"}
    assert relaunch_request(PAST, None, {"walltime": "2:00:00"})["walltime"] == "2:00:00"
    parallel = relaunch_request({**PAST, "nodes": 2, "ranks": 4}, None, {})
    assert (parallel["nodes"], parallel["ranks"]) == (2, 4)
    # With its state: the newest one that session saved, instead of its data file (the state opens its own).
    with_state = relaunch_request(PAST, STATES, {})
    assert with_state["saved_state"] == "/s/new.pvsm" and "data" not in with_state
    with pytest.raises(CommandError, match="session past1 saved no ParaView state") as e:
        relaunch_request(PAST, STATES[:1], {})
    assert e.value.code == 3


def test_a_relaunch_of_a_session_given_more_time_asks_for_at_most_its_partitions_walltime():
    from pvhpc.cli.relaunch_cmd import cap_walltime

    partitions = [{"name": "cpu", "walltime_minutes": {"default": 60, "max": 240},
                   "walltime": {"default": "01:00:00", "max": "04:00:00"}}]
    extended = {**PAST, "walltime": "05:30:00", "walltime_minutes": 330}
    request = relaunch_request(extended, None, {})
    note = cap_walltime(request, extended, partitions)
    assert request["walltime"] == "04:00:00"
    assert note and "05:30:00" in note and "partition cpu" in note and "04:00:00" in note
    # within the partition's limit, another partition, or a walltime given: asked as it is
    for past, overrides in (({**PAST, "walltime_minutes": 7}, {}), ({**extended, "partition": "gpu"}, {}),
                            (extended, {"walltime": "06:00:00"})):
        request = relaunch_request(past, None, overrides)
        wanted = request["walltime"]
        assert cap_walltime(request, past, partitions) is None and request["walltime"] == wanted


def cli(*args, url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PVHPC_CLIENT_CONFIG=str(REPO / "no-such-client.yaml"), PVHPC_URL=url)
    env.pop("PVHPC_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "pvhpc", *args], env=env, capture_output=True, text=True, timeout=240)


async def make_sphere(session: dict) -> None:
    from pvhpc.client.wslink import WslinkClient

    ws = await WslinkClient.connect(session["sessionURL"], session["secret"])
    try:
        await ws.create_source("Sphere")
        await ws.render((200, 150))
    finally:
        ws.close()


async def pipeline(session: dict) -> list[str]:
    from pvhpc.client.wslink import WslinkClient

    ws = await WslinkClient.connect(session["sessionURL"], session["secret"])
    try:
        return sorted(s["name"] for s in (await ws.call("pv.proxy.manager.list", []))["sources"])
    finally:
        ws.close()


def run_async(coro_fn, *args):
    """asyncio.run in a thread of its own: Playwright's sync API holds an event loop in the test's thread."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn(*args)).result()


def worked_on_and_ended(client) -> tuple[dict, dict]:
    """A session on the cpu partition, 20 minutes, given a sphere and cancelled; and the state it saved."""
    session = client.launch("paraview", partition="cpu", walltime=20)
    assert session["state"] == "ready", session
    asyncio.run(make_sphere(session))
    client.cancel(session["id"])
    state = wait_until(lambda: [s for s in client.saved_states() if s["session"] == session["id"]], 60,
                       message="the state the cancelled session saved")[0]
    return client.get(session["id"]), state


def never_ready(client) -> dict:
    """A session cancelled before it was ready: it saved nothing of the user's."""
    session = client.create("paraview", partition="cpu")
    client.cancel(session["id"])
    return client.wait(session["id"], until=("ended",), timeout=60)


@pytest.mark.cluster
@pytest.mark.paraview
def test_pvhpc_relaunch_with_state_starts_from_the_last_saved_state(service_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    svc = service_factory(applications={"paraview": {"data_roots": [str(data)], "start_timeout": 120}}).start()
    client = svc.client()
    past, state = worked_on_and_ended(client)
    bare = never_ready(client)

    done = cli("relaunch", past["id"][:8], "--with-state", "--wait", "--timeout", "150", "--json", url=svc.url)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["id"] != past["id"] and again["state"] == "ready", again
    assert (again["partition"], again["walltime"], again["application"]) == ("cpu", "00:20:00", "paraview")
    assert asyncio.run(pipeline(again)) == ["Sphere1"]
    assert f"pvhpc: loaded the state {state['path']}" in client.log(again["id"])

    # Options given replace a setting; without --with-state it starts empty.
    plain = cli("relaunch", past["id"], "-t", "9", "--json", url=svc.url)
    assert plain.returncode == 0, plain.stderr
    plain = client.wait(json.loads(plain.stdout)["id"], timeout=150)
    assert plain["walltime"] == "00:09:00" and "loaded the state" not in client.log(plain["id"])

    # A session that saved nothing: refused by name, nothing submitted.
    count = len(client.list())
    refused = cli("relaunch", bare["id"], "--with-state", url=svc.url)
    assert refused.returncode == 3 and f"session {bare['id']} saved no ParaView state" in refused.stderr, refused
    assert len(client.list()) == count


@pytest.mark.cluster
@pytest.mark.paraview
@pytest.mark.browser
def test_the_page_relaunches_with_the_last_saved_state_and_remembers_the_forms_choices(
        service_factory, tmp_path, artifacts):
    from tests.harness.browser import chromium

    data = tmp_path / "data"
    data.mkdir()
    svc = service_factory(frontend={"kind": "builtin"},
                          applications={"paraview": {"data_roots": [str(data)], "start_timeout": 120}}).start()
    client = svc.client()
    past, state = worked_on_and_ended(client)
    bare = never_ready(client)

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def load():
            page.goto(svc.url + "/")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)

        load()
        assert page.input_value("#partition") == "gpu" and page.input_value("#walltime") == "00:30:00"   # defaults
        row = page.locator(f'#past-table tr[data-session="{past["id"]}"]')
        row.wait_for(timeout=10_000)
        assert page.locator(f'#past-table tr[data-session="{bare["id"]}"] button.with-state').count() == 0
        row.locator("button.with-state").click()
        assert page.input_value("#saved_state") == state["path"] and page.input_value("#data") == ""
        assert (page.input_value("#partition"), page.input_value("#walltime")) == ("cpu", "00:20:00")
        page.screenshot(path=str(artifacts / "01-form-with-state.png"), full_page=True)
        page.click("#launch-button")
        page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
        new_id = page.evaluate("document.querySelector('#live-table tbody tr').dataset.session")
        page.wait_for_function("() => document.title === 'Ready - ParaView sessions'", timeout=5_000)   # 20 min left
        again = client.get(new_id)
        assert new_id != past["id"] and run_async(pipeline, again) == ["Sphere1"]
        assert f"pvhpc: loaded the state {state['path']}" in client.log(new_id)

        # The form's last choices, across a reload: that launch's, not the defaults.
        load()
        assert (page.input_value("#application"), page.input_value("#partition"),
                page.input_value("#walltime")) == ("paraview", "cpu", "00:20:00")
        assert page.input_value("#saved_state") == ""   # one session's, not a choice to remember
        page.screenshot(path=str(artifacts / "02-remembered.png"), full_page=True)
        # Choices no longer offered are dropped quietly: the defaults, and nothing said about them.
        for stale in ({"application": "paraview", "partition": "gone", "walltime": "00:11:00", "version": "9.9"},
                      {"application": "retired-app", "partition": "cpu"}):
            page.evaluate("v => localStorage.setItem('pvhpc.launch-form', JSON.stringify(v))", stale)
            load()
            assert (page.input_value("#application"), page.input_value("#partition"),
                    page.input_value("#walltime")) == ("paraview", "gpu", "00:30:00"), stale
            assert page.is_hidden("#form-error") and page.is_hidden("#page-error")
        client.cancel(new_id)
        assert errors == []
        context.close()
