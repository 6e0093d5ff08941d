"""A server does not end itself for lack of a client while pvhpc keeps its session: wslink's own ``--timeout``
(300 s by default, or whatever a site's command hard-codes) is not what ends an idle server, pvhpc's
``idle_timeout`` is (pvhpc/node/wslink_exits.py). A view dropped by the network or a laptop's sleep then finds
its server again. On the real cluster with pvhpc's own ParaViewWeb server, the Visualizer and trame.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from pvhpc.client.wslink import WslinkClient
from pvhpc.config.keys import PVHPC_SERVER_COMMAND

WSLINK_TIMEOUT = 3     # what the command tells wslink: far shorter than the wait below
PVHPC_IDLE = 30        # the application's idle_timeout: pvhpc's rule
AWAY_S = 15            # the client away, as after a network drop


async def render_once(session: dict) -> int:
    client = await WslinkClient.connect(session["sessionURL"], session["secret"])
    try:
        if not (await client.call("pv.proxy.manager.list", [])).get("sources"):
            await client.create_source("Cone")
        return len(await client.render((200, 150)))
    finally:
        client.close()


@pytest.mark.cluster
@pytest.mark.paraview
@pytest.mark.waits
def test_a_server_left_without_clients_past_wslinks_timeout_stays_until_pvhpcs_idle_rule(service_factory, tmp_path):
    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True)
    command = with_wslink_timeout(PVHPC_SERVER_COMMAND, WSLINK_TIMEOUT)   # as a site's command may hard-code it
    svc = service_factory(applications={"paraview": {
        "data_roots": [str(data)], "start_timeout": 120, "idle_timeout": PVHPC_IDLE, "command": command}}).start()
    client = svc.client()
    session = client.wait(client.create("paraview", partition="cpu")["id"], timeout=150)
    assert session["state"] == "ready", session
    assert asyncio.run(render_once(session)) > 0
    left = time.monotonic()

    time.sleep(AWAY_S)   # five times wslink's timeout with no client
    assert client.get(session["id"])["state"] == "ready"
    assert asyncio.run(render_once(session)) > 0, "the server did not answer its client coming back"
    left = time.monotonic()

    ended = client.wait(session["id"], until=("ended",), timeout=PVHPC_IDLE + 60)
    gone_after = time.monotonic() - left
    assert ended["end_reason"] == "idle", ended
    assert PVHPC_IDLE - 2 < gone_after < PVHPC_IDLE + 25, gone_after   # on pvhpc's time, not wslink's


def with_wslink_timeout(command: list[str], seconds: int) -> list[str]:
    command = list(command)
    command[command.index("--timeout") + 1] = str(seconds)
    return command


@pytest.mark.cluster
@pytest.mark.paraview
@pytest.mark.waits
@pytest.mark.parametrize("name", ["visualizer", "trame"])
def test_the_visualizer_and_trame_wait_for_a_client_on_pvhpcs_time(service_factory, tmp_path, name):
    """The Visualizer (wslink 1.x) and trame (wslink 2.x), both through pvhpc's argv wrapper: a server no client
    came to yet outlives wslink's timeout and ends on pvhpc's idle_timeout."""
    from pvhpc import config

    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True)
    entry = getattr(config, f"{name}_application")([str(data)]).get(name)
    if not entry:
        pytest.fail(f"the {name} application is not installed here (pvhpc runtime install)")
    app = {**entry, "command": with_wslink_timeout(entry["command"], WSLINK_TIMEOUT), "start_timeout": 120,
           "idle_timeout": PVHPC_IDLE}
    svc = service_factory(applications={"paraview": {"data_roots": [str(data)]}, name: app}).start()
    client = svc.client()
    session = client.wait(client.create(name, partition="cpu")["id"], timeout=150)
    assert session["state"] == "ready", session
    ready = time.monotonic()
    time.sleep(AWAY_S)
    assert client.get(session["id"])["state"] == "ready"
    ended = client.wait(session["id"], until=("ended",), timeout=PVHPC_IDLE + 60)
    assert ended["end_reason"] == "idle", ended
    assert time.monotonic() - ready < PVHPC_IDLE + 25
