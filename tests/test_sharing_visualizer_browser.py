"""Sharing a session of the unmodified ParaView Visualizer, in Chromium on the real cluster with real Unix users
(tests/harness/unix_users.py). alice launches a Visualizer session from pvhpc's page and watches it in the quick
view (which the Visualizer's server answers through pvhpc's wrapper: pvhpc/node/quickview_calls.py); she shares it
with bob, control: bob, logged in as himself, opens it in the Visualizer from his page (the launcher attaches him
with his own key), opens a file, adds a Contour and colours it, and alice's quick view and pipeline show his work.
alice turns the share to view: bob's Visualizer is cut off, the launcher no longer attaches him, his page shows the
quick view only, and what his browser sends behind the page's back (the Visualizer's own calls included) is
refused by the session's server.

Screenshots of each step are kept under test-artifacts/<test name>/.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pvhpc import config, paths

from tests.harness.browser import chromium
from tests.harness.unix_users import shared_site
from tests.harness.sharing_page import FRAME_MS, READY_MS, TRY_EVERYTHING, Tab, sources
from tests.harness.visualizer_page import use_the_visualizer, write_fields

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.paraview]

# The calls the Visualizer's own client makes as it starts, which change the view for every client: a view-only
# sharee's browser may not make them either.
VISUALIZER_TRIES = TRY_EVERYTHING.replace(
    '    reset: ["viewport.camera.reset", [-1]],\n',
    '    reset: ["viewport.camera.reset", [-1]],\n'
    '    push_size: ["viewport.image.push.original.size", [-1, 50, 50]],\n'
    '    push_quality: ["viewport.image.push.quality", [-1, 10, 0.5]],\n'
    '    push_observer: ["viewport.image.push.observer.remove", [-1]],\n'
    '    push: ["viewport.image.push", [{ view: -1 }]],\n')
assert VISUALIZER_TRIES != TRY_EVERYTHING


def test_alice_shares_a_visualizer_session_with_bob_control_then_view(unix_users, service_factory, cluster,
                                                                       runtime_dir, artifacts, monkeypatch):
    alice_name, bob_name = unix_users["alice"], unix_users["bob"]
    monkeypatch.setenv("PVHPC_WEB_CLIENTS_DIR", str(paths.web_clients_dir()))
    shared, node_side = shared_site(runtime_dir)
    data = shared / "data"
    write_fields(data)
    subprocess.run(["chmod", "-R", "a+rX", str(data)], check=True)
    visualizer = config.visualizer_application([str(data)])
    if not visualizer:
        pytest.fail("the Visualizer is not installed (pvhpc runtime install)")
    node_side["applications"].update({name: {**app, "start_timeout": 120} for name, app in visualizer.items()})
    try:
        svc = service_factory(
            "sharing-visualizer", directory=shared / "service",
            scheduler={**cluster.scheduler_config(), "submit_as": "user"}, **node_side,
            auth={"kind": "header", "staff": ["pvhpc-staff"]}, frontend={"kind": "builtin"},
            frontend_socket_group=None)
        subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
        svc.start(as_user=unix_users["service"])
        with chromium() as browser:
            contexts = [browser.new_context(viewport={"width": 1280, "height": 1000},
                                            extra_http_headers={"X-Remote-User": name})
                        for name in (alice_name, bob_name)]
            alice, bob = Tab(contexts[0], svc.frontend_url), Tab(contexts[1], svc.frontend_url)
            refusals = []   # the server's error answers to alice's page: what to read when her view fails
            alice.page.on("websocket", lambda ws: ws.on(
                "framereceived", lambda f: refusals.append(f) if isinstance(f, str) and '"error"' in f else None))
            try:
                run_the_story(svc, alice, bob, alice_name, bob_name, artifacts)
            except Exception:
                for name, tab in (("alice", alice), ("bob", bob)):
                    tab.shot(artifacts / f"failed-{name}.png")
                    print(name, "errors:", tab.errors)
                print("errors answered to alice's page:", [r[:3000] for r in refusals[:3]])
                for session in svc.user_client(alice_name).list():
                    print(svc.user_client(alice_name).log(session["id"])[-6000:])
                raise
            for context in contexts:
                context.close()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def run_the_story(svc, alice, bob, alice_name, bob_name, artifacts):
    alice.page.select_option("#application", "visualizer")
    alice.page.select_option("#partition", "cpu")
    alice.page.click("#launch-button")
    alice.page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
    session_id = alice.page.get_attribute("#live-table tbody tr", "data-session")
    owner = svc.user_client(alice_name).get(session_id)
    proxy = f"ws://127.0.0.1:{svc.port + 1}/proxy?sessionId={session_id}&path=ws"

    # The quick view of a Visualizer session, for its owner (it failed: "Unregistered method called").
    alice.page.wait_for_selector("#quick-view:not([hidden])", timeout=10_000)
    alice.page.click("#quick-view")
    alice.wait_frame_after(0)
    assert "Unregistered" not in alice.text("#viewer-status")
    before = alice.view(artifacts / "01-alice-quick-view.png")
    count = len(sources(proxy, owner["secret"], alice_name))

    # control: bob opens it in the Visualizer from his page, with his own key, and works in it.
    alice.share(bob_name, "control")
    alice.page.wait_for_selector(f'#share-list li[data-share="user:{bob_name}"]', timeout=10_000)
    alice.page.click("#share-close")
    bob.page.reload()
    bob.page.wait_for_selector("body[data-loaded=true]")
    bob.wait_text(f'#live-table tr[data-session="{session_id}"]', "view and control", 20_000)
    bob.open_shared(session_id)
    bob.page.wait_for_selector("#open-in:not([hidden])", timeout=10_000)
    link = bob.page.get_attribute("#open-client", "href")
    assert link.startswith(f"apps/visualizer/?attach={session_id}&") and owner["secret"] not in link
    bob.shot(artifacts / "02-bob-page-control.png")
    attached = bob.page.evaluate(
        "id => fetch('paraview/', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({attach: id})}).then((r) => r.json())", session_id)
    assert attached["shared"] == {"by": alice_name, "role": "control"}, attached
    assert attached["secret"] != owner["secret"] and owner["secret"] not in str(attached)
    bob.page.click("#open-client")
    bob.page.wait_for_url("**/apps/visualizer/**")
    frames = alice.frames()
    use_the_visualizer(bob.page, artifacts)   # open the data file, add a Contour, colour it: bob's picture changes
    assert len(sources(proxy, owner["secret"], alice_name)) == count + 2   # the reader and bob's Contour
    alice.wait_frame_after(frames)
    assert alice.view_changed_from(before, artifacts / "06-alice-sees-bobs-contour.png") > 0.02, \
        "alice's quick view did not show bob's work"

    # view: the same share turned to view cuts bob's Visualizer off, and the launcher no longer attaches him.
    alice.page.click("#share")
    alice.page.wait_for_selector("#share-dialog[open]")
    alice.share(bob_name, "view")
    alice.page.wait_for_function(
        "n => [...document.querySelectorAll('#share-list li')].some((li) => li.dataset.share === n"
        " && li.textContent.includes('view'))", arg=f"user:{bob_name}", timeout=10_000)
    alice.page.click("#share-close")
    bob.page.wait_for_timeout(5000)   # the revoke of bob's control grant reaches the server within 5 s
    bob.page.screenshot(path=str(artifacts / "06-bobs-visualizer-cut-off.png"))
    bob.page.goto(svc.frontend_url + "/")
    bob.page.wait_for_selector("body[data-loaded=true]")
    # The Visualizer's own code throws an uncaught error ("Object") as its page is left: its, not pvhpc's.
    print("the Visualizer's page errors:", bob.errors)
    bob.errors.clear()
    refused = bob.page.evaluate(
        "id => fetch('paraview/', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({attach: id})}).then(async (r) => [r.status, await r.json()])", session_id)
    assert refused[0] == 403 and "quick view" in refused[1]["error"], refused
    bob.wait_text(f'#live-table tr[data-session="{session_id}"]', "view only", 20_000)
    bob.open_shared(session_id)
    bob.wait_text("#viewer-status", "view only", FRAME_MS)
    bob.wait_frame_after(0)
    assert bob.page.is_hidden("#open-in")
    bob.shot(artifacts / "07-bob-view-only.png")
    key = svc.user_client(bob_name).get(session_id)["secret"]
    count = len(sources(proxy, owner["secret"], alice_name))
    tried = bob.page.evaluate(VISUALIZER_TRIES, [proxy, key])
    assert tried.pop("hello") is True and tried.pop("picture") == "ok", tried
    assert set(tried.values()) == {"error -32003"}, tried
    assert len(sources(proxy, owner["secret"], alice_name)) == count
    # The control key bob held before is no key now: its grant was replaced.
    assert bob.page.evaluate(VISUALIZER_TRIES, [proxy, attached["secret"]])["hello"] is False

    history = [h["detail"] for h in svc.user_client(alice_name).get(session_id)["history"]]
    for line in (f"shared with user {bob_name} (control)", f"{bob_name} connected (control, shared)",
                 f"shared with user {bob_name} (view)", f"{bob_name} connected (view, shared)"):
        assert line in history, (line, history)
    svc.user_client(alice_name).cancel(session_id)
    assert alice.errors == [] and bob.errors == []
