"""pvhpc's trame application (pvhpc/node/trame_app.py) in real Chromium, as a Slurm job on the test cluster,
through the built-in front end's /session/<id>/: it opens a time series from the data root, slices it, colours
it by a field, steps time, resets the camera and takes a screenshot; each step changes the picture. When its
job is cancelled its ParaView state is saved like the other servers'. Screenshots go to test-artifacts/<test>/.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from PIL import Image

from pvhpc import config, paths
from pvhpc import runtime
from tests.harness.browser import changed_share, chromium
from tests.helpers import write_series


STEP_S = 45
VIEW = "#pvhpc-view"


def view_image(page) -> Image.Image:
    return Image.open(io.BytesIO(page.locator(VIEW).screenshot())).convert("RGB")


def trame_on_a_series(tmp_path) -> dict:
    """The embedded trame application (runtime and static client installed) on a data root holding a series."""
    runtime.install_trame_client(runtime.install_trame(paths.runtime_dir()), paths.web_clients_dir())
    data = tmp_path / "data"
    write_series(data)
    apps = config.trame_application([str(data)])
    assert apps, "trame is not installed where pvhpc runtime install puts it"
    apps["trame"]["start_timeout"] = 180
    return apps


def settled_view(page, timeout=20) -> Image.Image:
    """The view once two looks a second apart agree (no image still on its way from the server)."""
    deadline = time.monotonic() + timeout
    last = view_image(page)
    while True:
        time.sleep(1)
        now = view_image(page)
        if changed_share(last, now) == 0 or time.monotonic() > deadline:
            return now
        last = now


def changed_view(page, before: Image.Image, artifacts, name: str) -> Image.Image:
    """The view once it differs from ``before`` (a new image comes from the server a moment after the step)."""
    deadline = time.monotonic() + STEP_S
    while True:
        image = view_image(page)
        if changed_share(before, image) > 0.001 or time.monotonic() > deadline:
            image.save(artifacts / f"{name}.png")
            assert changed_share(before, image) > 0.001, f"the view did not change after: {name}"
            return image
        time.sleep(0.5)


def choose(page, select_id: str, option: str) -> None:
    page.locator(f".v-select:has(#{select_id})").click()
    page.get_by_role("option", name=option, exact=True).click()


def use_the_app(page, url, artifacts, ready_timeout=60_000) -> Image.Image:
    """What a user does in the app: open a series, slice, colour, step time, screenshot; each step changes
    the view. Returns the view as the user left it."""
    # As trame's clients connect: the secret in the page's URL (the client takes it out of the address bar).
    said = []
    page.on("console", lambda message: said.append(f"{message.type}: {message.text[:300]}"))
    page.goto(url)
    try:
        page.wait_for_selector(VIEW, timeout=ready_timeout)
    except Exception:
        page.screenshot(path=str(artifacts / "no-view.png"))
        raise AssertionError("the app's page showed no view; its console: " + " | ".join(said)) from None
    page.wait_for_timeout(2000)
    empty = view_image(page)
    empty.save(artifacts / "empty.png")

    choose(page, "pvhpc-file", "wave_*.vtk")
    opened = changed_view(page, empty, artifacts, "opened")
    page.locator("#pvhpc-slice").click()
    sliced = changed_view(page, opened, artifacts, "sliced")
    page.wait_for_function("document.querySelector('#pvhpc-pipeline').textContent.includes('Slice')")
    choose(page, "pvhpc-color-by", "POINTS:distance")
    coloured = changed_view(page, sliced, artifacts, "coloured")
    assert "3/3" not in page.locator("#pvhpc-time-label").text_content()
    page.locator("#pvhpc-next-time").click()
    stepped = changed_view(page, coloured, artifacts, "time-step")
    page.wait_for_function("document.querySelector('#pvhpc-time-label').textContent.includes('2/3')")
    page.locator("#pvhpc-screenshot").click()
    page.wait_for_selector("#pvhpc-screenshot-link", timeout=STEP_S * 1000)
    href = page.locator("#pvhpc-screenshot-link").get_attribute("href")
    assert href.startswith("data:image/png;base64,") and len(href) > 1000
    page.screenshot(path=str(artifacts / "page.png"))
    assert changed_share(empty, stepped) > 0.001
    left = settled_view(page)
    left.save(artifacts / "left.png")
    return left


def test_the_embedded_trame_application_runs_apart_from_wslink_1(tmp_path, monkeypatch):
    """Where trame is installed the defaults offer it: its own client at /session/<id>/, its secret through the
    argv wrapper, and only trame's directory (wslink 2.x) on its PYTHONPATH, never the wslink 1.x runtime."""
    monkeypatch.setenv("PVHPC_RUNTIME_DIR", str(tmp_path / "runtime"))
    assert "trame" not in config.embedded_defaults().applications
    (tmp_path / "runtime" / "trame" / "trame").mkdir(parents=True)
    (tmp_path / "runtime" / "trame" / "trame" / "__init__.py").write_text("")
    app = config.embedded_defaults().applications["trame"]
    assert app.serves_own_client and app.ready.line == "App running at"
    assert app.runtime.pythonpath == (str(tmp_path / "runtime" / "trame"),)
    assert app.command[1] == str(paths.PACKAGE_DIR / "node" / "trame_app.py")
    assert app.command[app.command.index("--authKey") + 1] == "${secret}"


@pytest.mark.browser
@pytest.mark.cluster
def test_the_trame_app_opens_slices_colours_and_steps_time_in_chromium(service_factory, cluster, tmp_path,
                                                                        artifacts):
    apps = trame_on_a_series(tmp_path)
    assert apps["trame"].get("web_client"), "trame's static client is not installed (pvhpc runtime install)"
    # trame's client launches with no retry: the launcher waits as long as a start may take.
    svc = service_factory(frontend={"kind": "builtin"}, applications=apps, launcher_wait=200)
    # Sessions' own content on an origin of its own (frontend.session_origin): "localhost", pvhpc being 127.0.0.1.
    site = yaml.safe_load(svc.config_path.read_text())
    site["frontend"]["session_origin"] = f"http://localhost:{svc.port}"
    svc.config_path.write_text(yaml.safe_dump(site, sort_keys=False))
    svc.start()
    client = svc.client()
    # As a user at a shell: pvhpc submit --wait says where to open it, as the page does: trame's static client,
    # attached to the session (no secret in the URL).
    from tests.helpers import pvhpc

    submitted = pvhpc("submit", "trame", "-p", "gpu", "-g", "1", "--wait", url=svc.url)
    assert submitted.returncode == 0, submitted.stderr
    opened_at = [line.split(": ", 1)[1] for line in submitted.stdout.splitlines()
                 if line.startswith("open in your browser: ")]
    assert len(opened_at) == 1, submitted.stdout
    session = client.list(state="live")[0]
    assert session["state"] == "ready" and f"/apps/trame/?attach={session['id']}&" in opened_at[0], session
    assert session["secret"] not in opened_at[0]

    # The client its server serves itself, at /session/<id>/ of pvhpc's origin: sent on to the session origin,
    # where it runs as a page of that origin (none of pvhpc's).
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        left = use_the_app(page, f"{svc.url}/session/{session['id']}/?secret={session['secret']}", artifacts)
        assert page.url.startswith(f"http://localhost:{svc.port}/session/{session['id']}/"), page.url

    client.cancel(session["id"])
    saved = None
    deadline = time.monotonic() + 60
    while saved is None and time.monotonic() < deadline:
        saved = next((s for s in client.saved_states() if s["session"] == session["id"]), None)
        time.sleep(1)
    assert saved is not None, "the trame session saved no state when cancelled"
    assert "Slice" in open(saved["path"]).read()

    # Started again from that state, the way trame's multi-user deployment launches: trame's own client at
    # /apps/trame/ posts its URL's query to POST /paraview/, then connects through /proxy with the sessionURL it
    # got back (lowercased by that client). The pipeline, colouring, time step and picture are the saved ones.
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        said = []
        page.on("console", lambda message: said.append(f"{message.type}: {message.text[:300]}"))
        page.goto(f"{svc.url}/apps/trame/?"
                  + urlencode({"partition": "gpu", "gpus": "1", "saved_state": saved["path"]}))
        try:
            page.wait_for_function("(document.querySelector('#pvhpc-pipeline')?.textContent || '')"
                                   ".includes('Slice')", timeout=240_000)
        except Exception:
            page.screenshot(path=str(artifacts / "restored-page.png"))
            raise AssertionError("trame's client showed no restored pipeline; its console: " + " | ".join(said))
        assert "2/3" in page.locator("#pvhpc-time-label").text_content()
        assert "started from the saved state" in page.locator("#pvhpc-message").text_content()
        restored = settled_view(page)
        restored.save(artifacts / "restored.png")
        page.screenshot(path=str(artifacts / "restored-page.png"))
        assert changed_share(left, restored) < 0.02, (
            f"the restored picture is not the one the session left ({changed_share(left, restored):.3f} of its "
            "pixels differ: left.png, restored.png)")
    again = [s for s in client.list(state="live") if s["id"] != session["id"]]
    assert [s["application"] for s in again] == ["trame"], again
    client.cancel(again[0]["id"])


@pytest.mark.browser
@pytest.mark.cluster
@pytest.mark.apache
def test_the_trame_app_through_apache_with_its_login(service_factory, cluster, apache_factory, apache_dir,
                                                    apache_login, tmp_path, artifacts):
    from pvhpc.frontends import apacheconf
    from tests.harness.apache import APACHE_PASSWORD, APACHE_USER
    from tests.harness.ports import free_port_block

    apps = trame_on_a_series(tmp_path)
    map_file = apache_dir / "session-map.txt"
    port = free_port_block(1)
    session_url = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port).session_url
    svc = service_factory(frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                    "session_url": session_url},
                          auth={"kind": "local", "user": APACHE_USER}, applications=apps,
                          public_url=f"http://127.0.0.1:{port}",   # the pages' origin: Apache's
                          launcher_wait=200)   # trame's client launches with no retry
    svc.start()
    apache = apache_factory(apacheconf.Site("localhost", map_file, svc.url, port=port, auth_include=apache_login,
                                            web_clients=(("trame", Path(apps["trame"]["web_client"])),))).start()
    with chromium() as browser:
        context = browser.new_context(http_credentials={"username": APACHE_USER, "password": APACHE_PASSWORD},
                                      viewport={"width": 1400, "height": 900})
        # Launched as in trame's multi-user deployment: trame's own client, served by Apache at /apps/trame/,
        # posts its URL's query to the launcher through Apache, then connects through Apache's /proxy.
        use_the_app(context.new_page(), f"{apache.url}/apps/trame/?partition=gpu&gpus=1", artifacts,
                    ready_timeout=240_000)
    live = svc.client().list(state="live")
    assert [(s["application"], s["state"]) for s in live] == [("trame", "ready")], live
    svc.client().cancel(live[0]["id"])


@pytest.mark.browser
@pytest.mark.cluster
@pytest.mark.sshd
def test_the_trame_app_through_an_ssh_tunnel(service_factory, cluster, sshd, tmp_path, artifacts):
    """As a laptop user does with the line 'pvhpc url' prints: ssh -L to the node's port through the login
    host, then the app's own page at http://localhost:LOCAL/?secret=..."""
    import json
    import subprocess

    from tests.harness.ports import accepts_connections, free_port_block
    from tests.helpers import wait_until
    from tests.helpers import pvhpc

    apps = trame_on_a_series(tmp_path)
    svc = service_factory(frontend={"kind": "builtin"}, applications=apps).start()
    session = svc.client().launch("trame", partition="gpu", gpus="1")
    assert session["state"] == "ready", session
    local = free_port_block(1)
    url = pvhpc("url", session["id"], "--login", "root@127.0.0.1", "--local-port", local, "--json", url=svc.url)
    told = json.loads(url.stdout)
    ssh_line = told["ssh_command"].split()
    # What to open at the tunnel's end: the app's own page, with the secret its client takes from the URL.
    assert told["tunnel_url"] == f"http://localhost:{local}/?secret={session['secret']}", told
    assert ssh_line[:3] == ["ssh", "-N", "-L"] and ssh_line[3] == f"{local}:{session['host']}:{session['port']}"
    tunnel = subprocess.Popen(ssh_line[:4] + ["-p", str(sshd.port), "-i", str(sshd.client_key),
                                              "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                                              "-o", "BatchMode=yes", ssh_line[4]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: accepts_connections(local), 20, message="the tunnel listens")
        with chromium() as browser:
            use_the_app(browser.new_page(viewport={"width": 1400, "height": 900}), told["tunnel_url"], artifacts)
    finally:
        tunnel.terminate()
        tunnel.wait(10)
    svc.client().cancel(session["id"])


@pytest.mark.browser
@pytest.mark.cluster
def test_launched_from_pvhpcs_page_the_trame_app_opens_in_a_new_tab(service_factory, cluster, tmp_path, artifacts):
    """On pvhpc's page: launch trame, and the ready session's link opens trame's client in a new tab, attached
    to that session (the secret comes in the launcher's answer, never in the link); no second job."""
    apps = trame_on_a_series(tmp_path)
    svc = service_factory(frontend={"kind": "builtin"}, applications=apps).start()
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(svc.url + "/")
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        page.select_option("#application", "trame")
        assert "opens in a new tab" in page.inner_text("#application-hint")
        page.select_option("#partition", "gpu")
        page.click("#launch-button")
        page.wait_for_selector('#session-state[data-state="ready"]', timeout=240_000)
        page.wait_for_selector("#open-in:not([hidden])", timeout=10_000)
        session_id = page.get_attribute("#live-table tbody tr", "data-session")
        link = page.get_attribute("#open-client-tab", "href")
        assert link.startswith(f"apps/trame/?attach={session_id}&"), link
        assert svc.client().get(session_id)["secret"] not in link
        assert page.is_hidden("#quick-view")   # pvhpc's quick view does not speak trame
        with context.expect_page() as opened:
            page.click("#open-client-tab")
        tab = opened.value
        tab.wait_for_selector(VIEW, timeout=60_000)
        tab.wait_for_timeout(2000)
        empty = view_image(tab)
        choose(tab, "pvhpc-file", "wave_*.vtk")
        changed_view(tab, empty, artifacts, "opened-from-the-page")
        assert errors == []
    live = svc.client().list(state="live")
    assert [s["id"] for s in live] == [session_id], live   # attached: no second job
    svc.client().cancel(session_id)
