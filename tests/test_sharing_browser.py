"""Sharing a session, in Chromium on the real cluster with real Unix users (tests/harness/unix_users.py): alice
shares her session with bob from the page's Share dialog; bob, logged in as himself, sees her picture change as
she works, while nothing he sends changes her session (the server refuses it: pvhpc/node/share_gate.py); revoking
cuts him off within 5 s; with control, bob adds a source and alice's view shows it; the session's end cuts him
off too. Jobs run as their users through sudo; the page's websocket goes through the built-in front end.

Screenshots of each step are kept under test-artifacts/<test name>/.
"""

from __future__ import annotations

import grp
import shutil
import subprocess
import time

import pytest

from pvhpc import paths

from tests.harness.browser import chromium
from tests.harness.sharing_page import CUT_WITHIN, FRAME_MS, READY_MS, TRY_EVERYTHING, Tab, sources
from tests.harness.unix_users import shared_site

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.paraview]

def test_alice_shares_with_bob_view_then_control_from_the_page(unix_users, service_factory, cluster, runtime_dir,
                                                               artifacts, monkeypatch):
    alice_name, bob_name = unix_users["alice"], unix_users["bob"]
    # The service runs as its own account, whose home has no web clients: the page's wslink client is the site's.
    monkeypatch.setenv("PVHPC_WEB_CLIENTS_DIR", str(paths.web_clients_dir()))
    shared, node_side = shared_site(runtime_dir)
    try:
        svc = service_factory(
            "sharing", directory=shared / "service",
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
            try:
                run_the_story(svc, alice, bob, alice_name, bob_name, artifacts)
            except Exception:
                # What each page said, and the session's log: the first things to read when this fails.
                for name, tab in (("alice", alice), ("bob", bob)):
                    tab.shot(artifacts / f"failed-{name}.png")
                    print(name, "says:", tab.text("#viewer-status"), tab.text("#page-error"), tab.errors)
                for session in svc.user_client(alice_name).list():
                    print(svc.user_client(alice_name).log(session["id"])[-6000:])
                raise
            for context in contexts:
                context.close()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def run_the_story(svc, alice, bob, alice_name, bob_name, artifacts):
    alice.page.select_option("#partition", "cpu")
    alice.page.click("#launch-button")
    alice.page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
    alice.wait_frame_after(0)
    session_id = alice.page.get_attribute("#live-table tbody tr", "data-session")
    owner = svc.user_client(alice_name).get(session_id)
    proxy = f"ws://127.0.0.1:{svc.port + 1}/proxy?sessionId={session_id}&path=ws"

    # Bad requests in the dialog: each refused next to the name, nothing shared.
    alice.share("nosuchuser", "view")
    alice.wait_text("#share-name-error", "No user 'nosuchuser' on this site", 10_000)
    alice.share(alice_name, "view")
    alice.wait_text("#share-name-error", "owner", 10_000)
    assert alice.page.locator("#share-list li").count() == 0
    alice.shot(artifacts / "01-refused-in-the-dialog.png")

    # view: bob sees the session in his list, marked, and opens it with his own login and key.
    alice.page.fill("#share-name", bob_name)
    alice.page.select_option("#share-role", "view")
    alice.page.click("#share-add")
    alice.page.wait_for_selector(f'#share-list li[data-share="user:{bob_name}"]', timeout=10_000)
    alice.shot(artifacts / "02-shared-view.png")
    alice.page.click("#share-close")
    bob.page.reload()
    bob.page.wait_for_selector("body[data-loaded=true]")
    bob.wait_text(f'#live-table tr[data-session="{session_id}"]', "shared with you: view only", 20_000)
    bob.open_shared(session_id)
    bob.wait_text("#viewer-status", "view only", FRAME_MS)
    bob.wait_frame_after(0)
    bobs = svc.user_client(bob_name).get(session_id)
    assert bobs["shared"] == {"by": alice_name, "role": "view"} and bobs["secret"] != owner["secret"]
    assert owner["secret"] not in str(bobs)
    before = bob.view(artifacts / "03-bob-sees.png")
    bob.shot(artifacts / "03-bob-page.png")

    # alice works: bob's view follows.
    frames = bob.frames()
    alice.drag(160, 40)
    alice.page.select_option("#add-source", "Wavelet")
    alice.page.click("#add-source-button")
    bob.wait_frame_after(frames)
    assert bob.view_changed_from(before, artifacts / "04-bob-sees-alice-work.png") > 0.02, \
        "bob's view did not follow alice's work"
    # Nobody works: his view asks each second but gets a picture only when one was rendered anew, plus a whole
    # one every 5th ask (viewer.js watch()); a full picture each second would be ~4 here.
    time.sleep(2)
    idle_from = bob.frames()
    time.sleep(4.5)
    assert bob.frames() - idle_from <= 2, f"{bob.frames() - idle_from} pictures in 4.5 s of an unchanged scene"

    # bob's mouse and keys: the page sends nothing that changes anything ...
    count = len(sources(proxy, owner["secret"], alice_name))
    bob.drag(200, 80)
    bob.page.locator("#viewer").focus()
    bob.page.keyboard.press("ArrowLeft")
    bob.page.keyboard.press("+")
    assert bob.page.is_disabled("#add-source-button") and bob.page.is_disabled("#reset-camera")
    page_calls = {m for m, _ in bob.sent} - {"wslink.hello"}
    assert page_calls <= {"viewport.image.render", "pvhpc.viewport.interact"}, page_calls
    assert all(args and args[0] == [] for m, args in bob.sent if m == "pvhpc.viewport.interact")
    # ... and what his browser sends behind the page's back is refused by the session's server.
    tried = bob.page.evaluate(TRY_EVERYTHING, [proxy, bobs["secret"]])
    assert tried == {"hello": True, "create": "error -32003", "mouse": "error -32003", "drag": "error -32003",
                     "reset": "error -32003", "list": "error -32003", "exit": "error -32003",
                     "picture": "ok"}, tried
    assert len(sources(proxy, owner["secret"], alice_name)) == count
    # A key with its role changed is no key.
    forged = bobs["secret"].replace(".view.", ".control.")
    assert bob.page.evaluate(TRY_EVERYTHING, [proxy, forged])["hello"] is False

    # Revoking cuts bob off within 5 s.
    alice.page.click("#share")
    alice.page.wait_for_selector(f'#share-list li[data-share="user:{bob_name}"]')
    revoked_at = time.monotonic()
    alice.page.locator(f'#share-list li[data-share="user:{bob_name}"] button').click()
    bob.wait_cut_off(CUT_WITHIN * 1000 + 2000)
    took = time.monotonic() - revoked_at
    print(f"revoke -> bob disconnected: {took:.2f} s")
    assert took < CUT_WITHIN, took
    bob.shot(artifacts / "05-bob-cut-off.png")
    with pytest.raises(Exception, match="no socket"):   # the front end no longer lets him through ...
        bob.page.evaluate(TRY_EVERYTHING, [proxy, bobs["secret"]])
    assert svc.user_client(bob_name).list() == []      # ... and his list is empty

    # control: bob adds a source, alice sees it.
    alice.page.fill("#share-name", bob_name)
    alice.page.select_option("#share-role", "control")
    alice.page.click("#share-add")
    alice.page.wait_for_selector(f'#share-list li[data-share="user:{bob_name}"]', timeout=10_000)
    alice.page.click("#share-close")
    bob.page.reload()
    bob.page.wait_for_selector("body[data-loaded=true]")
    bob.wait_text(f'#live-table tr[data-session="{session_id}"]', "view and control", 20_000)
    bob.open_shared(session_id)
    bob.wait_text("#viewer-status", "Drag to rotate", FRAME_MS)
    alices_before = alice.view(artifacts / "06-alice-before-bob.png")
    count = len(sources(proxy, owner["secret"], alice_name))
    frames = alice.frames()
    bob.page.select_option("#add-source", "Sphere")
    bob.page.click("#add-source-button")
    bob.drag(-150, 60)
    alice.wait_frame_after(frames)
    assert alice.view_changed_from(alices_before, artifacts / "07-alice-sees-bobs-source.png") > 0.02, \
        "alice's view did not show bob's work"
    assert len(sources(proxy, owner["secret"], alice_name)) == count + 1
    alice.shot(artifacts / "07-alice-page.png")

    history = [h["detail"] for h in svc.user_client(alice_name).get(session_id)["history"]]
    for line in (f"shared with user {bob_name} (view)", f"{bob_name} connected (view, shared)",
                 f"share with user {bob_name} revoked", f"shared with user {bob_name} (control)",
                 f"{bob_name} connected (control, shared)"):
        assert line in history, (line, history)

    # The session's end cuts bob off too.
    ended_at = time.monotonic()
    alice.page.click("#cancel")
    # Whichever comes first: his page hears that the session ended and closes the view, or the link is cut.
    bob.page.wait_for_function(
        """() => document.querySelector('#session-state').dataset.state === 'ended'
                 || /Disconnected|Gave up/.test(document.querySelector('#viewer-status').textContent)""",
        timeout=CUT_WITHIN * 1000 + 2000)
    bob.shot(artifacts / "08-bob-after-the-end.png")
    print(f"session ended -> bob disconnected: {time.monotonic() - ended_at:.2f} s")
    assert time.monotonic() - ended_at < CUT_WITHIN
    assert alice.errors == [] and bob.errors == []


@pytest.mark.apache
def test_view_only_holds_behind_apache(unix_users, service_factory, apache_factory, apache_dir, artifacts):
    """The same view-only path as deployed: Apache logs alice and bob in (Basic), lets bob's websocket through its
    map's "<id>.as.<user>" line only while the share stands, and the session's server refuses his input."""
    from pvhpc.frontends import apacheconf

    from tests.harness.apache import APACHE_GROUP
    from tests.harness.ports import free_port_block

    alice_name, bob_name = unix_users["alice"], unix_users["bob"]
    password = "pvhpc-share-test"
    users = apache_dir / "users"
    for i, name in enumerate((alice_name, bob_name)):
        subprocess.run(["htpasswd", "-b" + ("c" if i == 0 else ""), str(users), name, password], check=True,
                       capture_output=True)
    shutil.chown(users, group=APACHE_GROUP)
    users.chmod(0o640)
    login = apache_dir / "auth.conf"
    login.write_text(f"AuthType Basic\nAuthName pvhpc\nAuthUserFile {users}\nRequire valid-user\n")
    map_file = apache_dir / "session-map.txt"
    port = free_port_block(1)
    session_url = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port).session_url
    svc = service_factory(frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                    "session_url": session_url},
                          auth={"kind": "header", "header": "X-Remote-User", "users_trust_each_other": True},
                          public_url=f"http://127.0.0.1:{port}", sharing={"groups": True}).start()
    apache = apache_factory(apacheconf.Site("localhost", map_file, svc.frontend_target, port=port,
                                            auth_include=login)).start()
    with chromium() as browser:
        tabs = [browser.new_context(viewport={"width": 1280, "height": 1000},
                                    http_credentials={"username": name, "password": password})
                for name in (alice_name, bob_name)]
        alice, bob = Tab(tabs[0], apache.url), Tab(tabs[1], apache.url)
        alice.page.select_option("#partition", "cpu")
        alice.page.click("#launch-button")
        alice.page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
        alice.wait_frame_after(0)
        session_id = alice.page.get_attribute("#live-table tbody tr", "data-session")
        proxy = f"ws://127.0.0.1:{port}/proxy?sessionId={session_id}&path=ws"
        # Before any share, Apache lets bob's websocket nowhere (404 before any upgrade).
        with pytest.raises(Exception, match="no socket"):
            bob.page.evaluate(TRY_EVERYTHING, [proxy, "anything"])

        alice.share(bob_name, "view")
        alice.page.wait_for_selector(f'#share-list li[data-share="user:{bob_name}"]', timeout=10_000)
        alice.page.click("#share-close")
        assert f"{session_id}.as.{bob_name} " in map_file.read_text()
        bob.page.reload()
        bob.page.wait_for_selector("body[data-loaded=true]")
        bob.open_shared(session_id)
        bob.wait_text("#viewer-status", "view only", FRAME_MS)
        bob.wait_frame_after(0)
        before = bob.view(artifacts / "01-bob-through-apache.png")
        frames = bob.frames()
        alice.drag(160, 40)   # she turns her view (a Wavelet alone would lie outside the cone's camera)
        bob.wait_frame_after(frames)
        assert bob.view_changed_from(before, artifacts / "02-bob-sees-alice-work.png") > 0.02
        key = bob.page.evaluate("id => fetch(`api/v1/sessions/${id}`).then((r) => r.json())", session_id)["secret"]
        tried = bob.page.evaluate(TRY_EVERYTHING, [proxy, key])
        assert tried["hello"] and tried["picture"] == "ok" and all(
            tried[k] == "error -32003" for k in ("create", "mouse", "drag", "reset", "list", "exit")), tried

        alice.page.click("#share")
        revoked_at = time.monotonic()
        alice.page.locator(f'#share-list li[data-share="user:{bob_name}"] button').click()
        bob.wait_cut_off(CUT_WITHIN * 1000 + 2000)
        took = time.monotonic() - revoked_at
        print(f"behind Apache: revoke -> bob disconnected: {took:.2f} s")
        assert took < CUT_WITHIN
        assert f"{session_id}.as.{bob_name} " not in map_file.read_text()
        # Apache tells pvhpc nothing of connections: the session's server does, through its watchdog.
        history = [h["detail"] for h in svc.user_client(alice_name).get(session_id)["history"]]
        assert f"{bob_name} connected (view, shared)" in history, history
        alice.page.click("#share-close")

        # A group that does not list bob, though his login gets it: his own primary group (useradd's). Apache's map
        # names him once pvhpc hands him his key, before the answer leaves, and his websocket gets through.
        svc.user_client(alice_name).share(session_id, group=bob_name, role="view")
        assert bob_name not in (grp.getgrnam(bob_name).gr_mem or [])
        key = bob.page.evaluate("id => fetch(`api/v1/sessions/${id}`).then((r) => r.json())", session_id)["secret"]
        assert f"{session_id}.as.{bob_name} " in map_file.read_text()
        tried = bob.page.evaluate(TRY_EVERYTHING, [proxy, key])
        assert tried["hello"] and tried["picture"] == "ok" and tried["mouse"] == "error -32003", tried
        alice.page.click("#cancel")
        alice.page.wait_for_selector('#session-state[data-state="ended"]', timeout=30_000)
        assert alice.errors == [] and bob.errors == []
        for context in tabs:
            context.close()

