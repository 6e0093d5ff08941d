"""Idle means idle, on the real cluster with real ParaViewWeb servers: a session whose client stays connected but
sends no user input is warned on the push channel, then ended ``idle``; one kept busy with mouse RPCs stays."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pvhpc.client.wslink import WslinkClient
from pvhpc.node import input_idle
from pvhpc.sessions.service import idle_warning
from pvhpc.sessions.spec import RequestError
from tests.helpers import session_record

INPUT_IDLE, WARNING = 24, 12


def test_what_counts_as_user_input():
    assert input_idle.is_input("viewport.mouse.interaction") and input_idle.is_input("pv.proxy.manager.update")
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
        with pytest.raises(RequestError) as e:
            idle_warning(record, wrong)
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
