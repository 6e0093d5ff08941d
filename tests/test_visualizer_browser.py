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

import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.harness.browser import changed_share, chromium
from tests.helpers import foreground_fraction

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

READY_MS = 180_000     # the launcher's POST: submit, schedule, start Xvfb and the Visualizer server
LAUNCHER_WAIT_S = 170  # service.launcher_wait: within READY_MS
PARALLEL_CPU = {"max_nodes": 2, "max_ranks": 2, "max_ranks_per_node": 1}
STEP_S = 45            # one step in the Visualizer: a server round trip and a new image
VIEWPORT = '[class*="MainView-viewport"]'
OPEN_FILE = '[class*="ToggleIcons-openFileButton"]'
ADD_FILTER = '[class*="ToggleIcons-filterButton"]'
APPLY = '[class*="ProxyEditorWidget-validateButton"]'
COLOR_BY = 'select:has(option[value="POINTS:|:pressure"])'
DATA_FILE = "fields.vtk"


def write_fields(directory: Path) -> None:
    """A 12^3 grid with two point fields: temperature (distance from the centre: contours are spheres) and
    pressure (a gradient across it: colouring by it paints the sphere from one side to the other)."""
    n, c = 12, 5.5
    temperature, pressure = [], []
    for k in range(n):
        for j in range(n):
            for i in range(n):
                temperature.append(f"{((i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2) ** 0.5:.3f}")
                pressure.append(f"{i + 2 * j:.1f}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DATA_FILE).write_text("\n".join([
        "# vtk DataFile Version 3.0", "two fields on a grid", "ASCII", "DATASET STRUCTURED_POINTS",
        f"DIMENSIONS {n} {n} {n}", "ORIGIN 0 0 0", "SPACING 1 1 1", f"POINT_DATA {n ** 3}",
        "SCALARS temperature float 1", "LOOKUP_TABLE default", " ".join(temperature),
        "SCALARS pressure float 1", "LOOKUP_TABLE default", " ".join(pressure), ""]))


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


PANEL_WIDTH = 330      # the Visualizer's panel lies over the left of the viewport; the picture is judged beside it


def viewport(page, path: Path) -> Image.Image:
    """The rendered picture (the viewport right of the panel); the whole viewport is saved to ``path``."""
    image = Image.open(io.BytesIO(page.locator(VIEWPORT).screenshot(path=str(path)))).convert("RGB")
    return image.crop((PANEL_WIDTH, 0, image.width, image.height))


def new_picture(page, before: Image.Image, path: Path, least: float = 0.01) -> Image.Image:
    """The picture once at least ``least`` of its pixels differ clearly from ``before``, and it has settled."""
    deadline = time.monotonic() + STEP_S
    while time.monotonic() < deadline:
        page.wait_for_timeout(500)
        now = viewport(page, path)
        if changed_share(before, now) > least:
            page.wait_for_timeout(1500)   # a still, full-quality frame follows the first one
            return viewport(page, path)
    raise AssertionError(f"the Visualizer's picture did not change within {STEP_S} s (last: {path})")


def has_picture(image: Image.Image) -> float:
    png = io.BytesIO()
    image.save(png, "PNG")
    return foreground_fraction(png.getvalue())


def use_the_visualizer(page, artifacts: Path) -> None:
    """Open the data file in the Visualizer's file browser, add a Contour, colour it by a field."""
    page.wait_for_selector(OPEN_FILE, timeout=READY_MS)
    page.wait_for_timeout(2000)   # the first (empty) frame
    empty = viewport(page, artifacts / "01-connected.png")
    page.click(OPEN_FILE)
    page.click(f'li[data-action="file"][data-name="{DATA_FILE}"]')
    # Its outline: thin lines, a few thousand pixels.
    opened = new_picture(page, empty, artifacts / "02-file-opened.png", least=0.002)
    page.click(ADD_FILTER)
    page.click('li[data-name="Contour"]')
    page.click(APPLY)
    contoured = new_picture(page, opened, artifacts / "03-contour.png")    # a sphere inside the outline
    assert has_picture(contoured) > has_picture(opened) * 2, "the contour should fill much of the view"
    page.locator(COLOR_BY).select_option("POINTS:|:pressure")
    coloured = new_picture(page, contoured, artifacts / "04-coloured-by-pressure.png")
    colours = {pixel for pixel in coloured.resize((64, 64)).get_flattened_data() if max(pixel) - min(pixel) > 60}
    assert len(colours) > 20, "colouring by pressure should paint the sphere in many colours"
    page.screenshot(path=str(artifacts / "05-whole-page.png"))


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
