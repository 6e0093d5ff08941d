"""The unmodified ParaView Visualizer (npm pvw-visualizer 3.2.0, as `pvhpc runtime install` puts it) in real
Chromium, against a real ``pvhpc serve``, the test cluster and a real Visualizer server in a Slurm job.

The seed's classic flow: the user opens /apps/visualizer/, the Visualizer's own SmartConnect POSTs to
/paraview/, pvhpc submits the job, waits, answers sessionURL and secret, and the Visualizer connects through
the front end. Then, in its own UI: open a data file from the data root in its file browser, add a Contour,
colour by a field; each step must change the rendered picture. Screenshots go to test-artifacts/<test>/.

The Visualizer's class names are CSS-module names of that pinned build (``ToggleIcons-openFileButton_3bz5y``);
the selectors match their stable prefix.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.harness.browser import chromium
from tests.harness.visualizer_page import use_the_visualizer, write_fields

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

READY_MS = 180_000     # the launcher's POST: submit, schedule, start Xvfb and the Visualizer server
LAUNCHER_WAIT_S = 170  # service.launcher_wait: within READY_MS
PARALLEL_CPU = {"max_nodes": 2, "max_ranks": 2, "max_ranks_per_node": 1}


def applications(data_dir: Path) -> dict:
    """pvhpc's own server and the Visualizer, both on the test's data root."""
    from pvhpc import config

    visualizer = getattr(config, "visualizer_application", None)
    entry = visualizer([str(data_dir)]) if visualizer else {}
    if not entry:
        pytest.fail("the visualizer application is not available (pvhpc.config.visualizer_application, and "
                    "pvhpc runtime install for the npm pvw-visualizer)")
    return {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 120},
            **{name: {**app, "start_timeout": 120} for name, app in entry.items()}}


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def new_page(browser):
    contexts = []

    def make(**context_options):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.mark.parametrize("query, nodes, ranks", [
    ("partition=cpu", 1, 0),
    # A parallel session: two MPI pvserver ranks on two nodes, the unmodified Visualizer attached to them.
    ("partition=cpu&nodes=2&ranks=2", 2, 2),
], ids=["one-process", "two-ranks"])
def test_the_visualizer_launches_its_own_session_through_the_builtin_front_end(service_factory, new_page,
                                                                               artifacts, tmp_path, query, nodes,
                                                                               ranks):
    data_dir = tmp_path / "svc" / "data"
    write_fields(data_dir)
    # The Visualizer's SmartConnect does not retry a launcher's 503, so the launcher waits as long as the
    # test does for the job to start (a busy cluster queues it for a while).
    svc = service_factory(frontend={"kind": "builtin"}, applications=applications(data_dir),
                          partitions={"gpu": {"gpu_type": "a100"}, "cpu": PARALLEL_CPU},
                          launcher_wait=LAUNCHER_WAIT_S).start()
    page = new_page()
    # Launch fields in the page's URL reach the launcher as the Visualizer sends them (as strings).
    page.goto(f"{svc.url}/apps/visualizer/?{query}")
    use_the_visualizer(page, artifacts)
    sessions = [s for s in svc.client().list() if s["state"] != "ended"]
    assert [(s["application"], s["partition"], s["state"], s["nodes"], s["ranks"]) for s in sessions] == [
        ("visualizer", "cpu", "ready", nodes, ranks)]
    assert page.errors == []
    svc.client().cancel(sessions[0]["id"])


def test_a_session_launched_from_the_page_opens_in_the_visualizer(service_factory, new_page, artifacts, tmp_path):
    data_dir = tmp_path / "svc" / "data"
    write_fields(data_dir)
    svc = service_factory(frontend={"kind": "builtin"}, applications=applications(data_dir)).start()
    page = new_page()
    page.goto(svc.url + "/")
    page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    page.select_option("#application", "visualizer")
    assert "own web client" in page.inner_text("#application-hint")
    page.select_option("#partition", "cpu")
    page.click("#launch-button")
    page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
    page.wait_for_selector("#open-in:not([hidden])", timeout=10_000)
    session_id = page.get_attribute("#live-table tbody tr", "data-session")
    link = page.get_attribute("#open-client", "href")
    assert link.startswith(f"apps/visualizer/?attach={session_id}&")
    assert page.get_attribute("#open-client-tab", "href") == link and page.is_hidden("#viewer-area")
    page.screenshot(path=str(artifacts / "00-page-ready.png"))
    assert svc.client().get(session_id)["secret"] not in link   # the secret comes in the launcher's answer only
    page.click("#open-client")   # the same tab
    page.wait_for_url("**/apps/visualizer/**")
    use_the_visualizer(page, artifacts)
    # The Visualizer attached to that session: no second job.
    sessions = [s for s in svc.client().list() if s["state"] != "ended"]
    assert [s["id"] for s in sessions] == [session_id]
    assert page.errors == []
    svc.client().cancel(session_id)


@pytest.mark.apache
def test_the_visualizer_through_apache_with_its_login(service_factory, apache_factory, apache_dir, apache_login,
                                                      new_page, artifacts, tmp_path):
    """The site as deployed: Apache serves /apps/visualizer/ itself (behind its login), forwards the Visualizer's
    POST /paraview/ to pvhpc and proxies the session's websocket through its RewriteMap."""
    from pvhpc.frontends import apacheconf

    from tests.harness.apache import APACHE_PASSWORD, APACHE_USER
    from tests.harness.ports import free_port_block

    data_dir = tmp_path / "svc" / "data"
    write_fields(data_dir)
    apps = applications(data_dir)
    map_file = apache_dir / "session-map.txt"
    port = free_port_block(1)
    session_url = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port).session_url
    svc = service_factory(frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                    "session_url": session_url},
                          # Apache's login decides who gets in; pvhpc's own identity here is its one local user
                          # (the header from the front end is test_web_page's and test_frontends' matter).
                          auth={"kind": "local", "user": APACHE_USER}, applications=apps,
                          public_url=f"http://127.0.0.1:{port}",   # the pages' origin: Apache's
                          launcher_wait=LAUNCHER_WAIT_S)
    svc.start()
    clients = (("visualizer", Path(apps["visualizer"]["web_client"])),)
    apache = apache_factory(apacheconf.Site("localhost", map_file, svc.url, port=port, auth_include=apache_login,
                                            web_clients=clients)).start()
    with pytest.raises(urllib.error.HTTPError) as refused:   # Apache's login comes first
        urllib.request.urlopen(f"{apache.url}/apps/visualizer/", timeout=10)
    assert refused.value.code == 401
    page = new_page(http_credentials={"username": APACHE_USER, "password": APACHE_PASSWORD})
    answer = page.goto(f"{apache.url}/apps/visualizer/?partition=cpu")
    assert answer.status == 200 and answer.headers["cache-control"] == "no-cache"
    use_the_visualizer(page, artifacts)
    sessions = [s for s in json.loads(page.evaluate("fetch('/api/v1/sessions').then(r => r.text())"))["sessions"]
                if s["state"] != "ended"]
    assert [(s["application"], s["user"]) for s in sessions] == [("visualizer", APACHE_USER)]
    assert page.errors == []
    # Served by Apache, not forwarded: pvhpc's log has no request for the Visualizer's files. Its page is
    # pvhpc's, with the reattachment loaded first (a continued session's page comes back by itself).
    log = (svc.dir / "service.log").read_text()
    assert "/apps/visualizer/Visualizer.js" not in log
    assert "/apps/visualizer/" in log
    assert page.evaluate("document.querySelector('head script').getAttribute('src')").startswith(
        "../../static/reattach.js")


def test_apps_serves_each_web_client_and_nothing_else(service_factory, tmp_path):
    svc = service_factory(frontend={"kind": "builtin"}, applications=applications(tmp_path / "svc" / "data")).start()

    def get(path):
        try:
            with urllib.request.urlopen(svc.url + path, timeout=10) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, headers, body = get("/apps/visualizer/")
    assert status == 200 and b"Visualizer.connectWithArgsAsConfig" in body
    assert headers["Cache-Control"] == "no-cache" and headers["ETag"] and headers["Referrer-Policy"] == "same-origin"
    status, headers, _ = get("/apps/visualizer/Visualizer.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    status, headers, body = get("/static/vendor/wslink.js")
    assert status == 200 and b"SmartConnect" in body
    request = urllib.request.Request(svc.url + "/apps/visualizer")
    opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *a: None}))
    with pytest.raises(urllib.error.HTTPError) as moved:
        opener.open(request, timeout=10)
    assert moved.value.code in (301, 302) and moved.value.headers["Location"] == "visualizer/"
    # No listing, nothing outside the client, and no client for an application without one.
    for path in ("/apps/paraview/", "/apps/nope/", "/apps/visualizer/../../../etc/passwd",
                 "/apps/visualizer/%2e%2e/%2e%2e/server/pvw-visualizer.py", "/apps/visualizer/missing.js"):
        status, _, body = get(path)
        assert status in (403, 404) and b"Visualizer" not in body, (path, status)
