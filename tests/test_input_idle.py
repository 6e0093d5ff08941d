"""Idle means idle, on the real cluster with real ParaViewWeb servers: a session whose client stays connected but
sends no user input is warned on the push channel, then ended ``idle``; one kept busy with mouse RPCs stays."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pvhpc.client.wslink import WslinkClient
from pvhpc.jobs import reports
from pvhpc.node import input_idle
from pvhpc.sessions.service import idle_warning
from tests.helpers import session_record

INPUT_IDLE, WARNING = 24, 12


def test_what_counts_as_user_input():
    assert input_idle.is_input("viewport.mouse.interaction") and input_idle.is_input("pv.proxy.manager.update")
    assert input_idle.is_input("pvhpc.viewport.interact")   # the quick view's mouse, answered with a picture
    assert not input_idle.is_input("viewport.image.push") and not input_idle.is_input("viewport.image.render")
    assert input_idle.method_of('{"wslink": "1.0", "id": "rpc:1", "method": "viewport.mouse.interaction"}') == \
        "viewport.mouse.interaction"
    assert input_idle.method_of(b'{"method": "wslink.binary.attachment"}') is None   # no id: not an RPC
    assert input_idle.method_of("not json") is None


def test_an_idle_warning_report_becomes_the_users_warning():
    record = session_record(state="ready")
    notice = idle_warning(record, 30)
    assert (notice.reason, notice.seconds_left, notice.json()["type"]) == ("idle", 30, "warning")
    for wrong in ("30", -1, True, 10**6):
        with pytest.raises(reports.ReportError) as e:
            reports.seconds_left(wrong)
        assert e.value.field == "seconds_left"


def events_of(client, session_id: str, into: list) -> threading.Thread:
    def read():
        for event in client.events(session_id, timeout=180, warnings=True):
            into.append((time.monotonic(), event))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


async def left_open_and_kept_busy(idle_session: dict, busy_session: dict, until_ended: threading.Thread) -> int:
    """A tab that rendered once and was left open, and one whose user moves the mouse every 3 s; returns how
    many mouse RPCs the busy one answered."""
    left = await WslinkClient.connect(idle_session["sessionURL"], idle_session["secret"])
    busy = await WslinkClient.connect(busy_session["sessionURL"], busy_session["secret"])
    moves = 0
    try:
        for client in (left, busy):
            await client.create_source("Cone")
            await client.render((200, 150))
        while until_ended.is_alive():
            await busy.mouse("down", 0.5, 0.5)
            await busy.mouse("move", 0.5 + 0.01 * (moves % 10), 0.5)
            await busy.mouse("up", 0.5, 0.5)
            moves += 1
            await asyncio.sleep(3)
    finally:
        left.close()
        busy.close()
    return moves


@pytest.mark.cluster
@pytest.mark.paraview
@pytest.mark.waits
def test_a_session_nobody_uses_is_warned_then_ended_idle_and_a_busy_one_stays(service_factory, tmp_path):
    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True)
    svc = service_factory(applications={"paraview": {
        "data_roots": [str(data)], "start_timeout": 120, "idle_timeout": 600,
        "input_idle_timeout": INPUT_IDLE, "input_idle_warning": WARNING}}).start()
    client = svc.client()
    idle, busy = (client.create("paraview", partition="cpu") for _ in range(2))
    idle, busy = client.wait(idle["id"], timeout=150), client.wait(busy["id"], timeout=150)
    assert idle["state"] == busy["state"] == "ready", (idle, busy)
    seen: list = []
    started = time.monotonic()
    following = events_of(client, idle["id"], seen)
    moves = asyncio.run(left_open_and_kept_busy(idle, busy, following))
    following.join(10)

    warnings = [(at, e) for at, e in seen if e.get("type") == "warning"]
    ends = [(at, e) for at, e in seen if e.get("state") == "ended"]
    assert len(warnings) == 1 and warnings[0][1]["reason"] == "idle", seen
    assert 0 < warnings[0][1]["seconds_left"] <= WARNING and "unless you use it" in warnings[0][1]["message"]
    assert ends and ends[-1][1]["end_reason"] == "idle" and "no user input" in ends[-1][1]["detail"], seen
    # Warned first, then ended about the warning's lead later; the whole within the idle time of the render.
    assert WARNING - 4 < ends[-1][0] - warnings[0][0] < WARNING + 6
    assert ends[-1][0] - started < INPUT_IDLE + 15
    assert moves >= 5 and client.get(busy["id"])["state"] == "ready"
    assert "no user input for" in client.log(idle["id"])


# -- in real browsers: what an open tab of the Visualizer or of trame sends by itself is not user input ---------

TAB_IDLE, TAB_WARNING = 30, 10


@pytest.mark.browser
@pytest.mark.cluster
@pytest.mark.waits
def test_browser_tabs_left_open_end_idle_with_their_state_and_a_used_one_stays(service_factory, tmp_path,
                                                                              artifacts):
    """The unmodified Visualizer and the trame app, each launched from its own client and left open untouched,
    are ended ``idle`` with their ParaView state saved (their pages poll nothing that counts as input; trame's
    wslink 2.x RPCs are read as well as wslink 1.x's); a trame tab whose user clicks in it stays ready."""
    from pvhpc import config, paths
    from pvhpc import runtime
    from tests.harness.browser import chromium
    from tests.helpers import wait_until
    from tests.helpers import write_series

    runtime.install_web_clients(paths.web_clients_dir())
    runtime.install_trame_client(runtime.install_trame(paths.runtime_dir()), paths.web_clients_dir())
    data = tmp_path / "data"
    write_series(data)
    apps = {**config.visualizer_application([str(data)]), **config.trame_application([str(data)])}
    assert set(apps) == {"visualizer", "trame"} and apps["trame"].get("web_client"), apps
    for app in apps.values():
        app.update(start_timeout=180, idle_timeout=600, input_idle_timeout=TAB_IDLE, input_idle_warning=TAB_WARNING)
    svc = service_factory(frontend={"kind": "builtin"}, applications=apps, launcher_wait=200).start()
    client = svc.client()

    def launched_from(page, url, ready_selector, known):
        page.goto(url)
        page.wait_for_selector(ready_selector, timeout=240_000)
        new = wait_until(lambda: [s for s in client.list(state="live") if s["id"] not in known], 30,
                         message="the page's session is listed")
        assert len(new) == 1 and new[0]["state"] == "ready", new
        return new[0]

    with chromium() as browser:
        tabs = {name: browser.new_page(viewport={"width": 1200, "height": 800}) for name in ("visualizer", "left",
                                                                                          "used")}
        sessions = {}
        sessions["visualizer"] = launched_from(tabs["visualizer"], f"{svc.url}/apps/visualizer/?partition=cpu",
                                               '[class*="ToggleIcons-openFileButton"]', set())
        for name in ("left", "used"):
            sessions[name] = launched_from(tabs[name], f"{svc.url}/apps/trame/?partition=gpu&gpus=1",
                                           "#pvhpc-view", {s["id"] for s in sessions.values()})
        # One user clicks in the 'used' tab every 5 s, past the others' input-idle time and warning.
        clicks = 0
        deadline = time.monotonic() + TAB_IDLE + 30
        while time.monotonic() < deadline:
            now = client.get(sessions["used"]["id"])
            assert now["state"] == "ready", f"the trame tab in use was ended after {clicks} clicks: {now}"
            tabs["used"].locator("#pvhpc-reset-camera").click()
            clicks += 1
            tabs["used"].wait_for_timeout(5000)
        for name, tab in tabs.items():
            tab.screenshot(path=str(artifacts / f"{name}.png"))

    ended = {name: client.get(s["id"]) for name, s in sessions.items()}
    for name in ("visualizer", "left"):
        assert ended[name]["state"] == "ended" and ended[name]["end_reason"] == "idle", (name, ended[name])
        assert "no user input" in ended[name]["detail"], ended[name]
    assert ended["used"]["state"] == "ready" and clicks >= 10, ended["used"]
    saved = {s["session"] for s in client.saved_states()}
    assert {sessions["visualizer"]["id"], sessions["left"]["id"]} <= saved, saved
    client.cancel(sessions["used"]["id"])
