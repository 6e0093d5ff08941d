"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real ``pvhpc serve``,
the real test cluster and real ParaViewWeb servers. The page's websocket goes through the built-in front end.

Screenshots of each step are kept under test-artifacts/<test name>/.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.harness.browser import changed_share, chromium
from tests.harness.cluster import block_gpu_partition, cancel
from tests.helpers import foreground_fraction

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

READY_MS = 150_000      # submit, schedule, start Xvfb and pvpython, report back
FRAME_MS = 30_000
BUILTIN = {"kind": "builtin"}
CUBE_VTK = """# vtk DataFile Version 3.0
a cube for the page test
ASCII
DATASET POLYDATA
POINTS 8 float
0 0 0  1 0 0  1 1 0  0 1 0  0 0 1  1 0 1  1 1 1  0 1 1
POLYGONS 6 30
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


class Tab:
    """One browser page with the errors it raised; a JavaScript error anywhere fails the test."""

    def __init__(self, context, url: str):
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.answers: list[tuple[str, dict]] = []   # (method, result) of the view's calls answered with a picture
        self.sent: list[str] = []                     # the methods the page called, in order
        self.interacts_out: set = set()               # ids of the view's interact calls sent and not answered ...
        self.most_interacts_out = 0                   # ... and the most of them at any moment
        self.page.on("websocket", self._socket)
        self.response = self.page.goto(url + "/")

    def _socket(self, ws) -> None:
        import json

        methods: dict = {}

        def seen(payload, sent: bool) -> None:
            try:
                message = json.loads(payload)
            except (TypeError, ValueError):
                return
            if not isinstance(message, dict):
                return
            if sent and "method" in message:
                methods[message.get("id")] = message["method"]
                self.sent.append(message["method"])
                if message["method"] == "pvhpc.viewport.interact":
                    self.interacts_out.add(message.get("id"))
                    self.most_interacts_out = max(self.most_interacts_out, len(self.interacts_out))
            elif not sent:
                self.interacts_out.discard(message.get("id"))
                if isinstance(message.get("result"), dict) and "renders" in message["result"]:
                    self.answers.append((methods.get(message.get("id")), message["result"]))

        ws.on("framesent", lambda payload: seen(payload, True))
        ws.on("framereceived", lambda payload: seen(payload, False))

    def loaded(self) -> "Tab":
        self.page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        return self

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def wait_text(self, selector: str, words: str, timeout: float = READY_MS) -> str:
        self.page.wait_for_function(
            "([s, w]) => { const e = document.querySelector(s); return e && e.textContent.includes(w); }",
            arg=[selector, words], timeout=timeout)
        return self.text(selector)

    def wait_state(self, state: str, timeout: float = READY_MS) -> None:
        self.page.wait_for_selector(f'#session-state[data-state="{state}"]', timeout=timeout)

    def timeline(self) -> list[str]:
        return self.page.locator("#session-timeline li").evaluate_all("items => items.map(i => i.dataset.state)")

    def shot(self, path) -> None:
        self.page.screenshot(path=str(path), full_page=True)

    # -- the view --

    def frames(self) -> int:
        return int(self.page.get_attribute("#viewer", "data-frames") or 0)

    def wait_frame_after(self, count: int) -> None:
        self.page.wait_for_function("n => Number(document.getElementById('viewer').dataset.frames || 0) > n",
                                    arg=count, timeout=FRAME_MS)
        # The drag's low-quality frames are followed by one still frame; let it arrive.
        self.page.wait_for_timeout(1500)

    def view(self, path) -> Image.Image:
        png = self.page.locator("#viewer").screenshot(path=str(path))
        image = Image.open(io.BytesIO(png)).convert("RGB")
        # The element's box has fractional edges that show the page behind; the pixels are judged against
        # ParaView's background, so the corner must be the rendered frame's.
        image = image.crop((2, 2, image.width - 2, image.height - 2))
        assert sum(image.getpixel((0, 0))) < 600, image.getpixel((0, 0))
        return image

    def view_after(self, action, path) -> Image.Image:
        """Do ``action`` (a drag, a wheel turn) and return the view once a new frame has come of it."""
        frames = self.frames()
        action()
        self.wait_frame_after(frames)
        return self.view(path)

    def centre(self) -> tuple[float, float]:
        box = self.page.locator("#viewer").bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def drag(self, dx: float, dy: float, button: str = "left") -> None:
        x, y = self.centre()
        mouse = self.page.mouse
        mouse.move(x, y)
        mouse.down(button=button)
        mouse.move(x + dx, y + dy, steps=12)
        mouse.up(button=button)


@pytest.fixture
def tabs(browser):
    """Open pages in fresh browser contexts (headers per context: the trusted front end's login)."""
    contexts = []

    def open_tab(url: str, **context_options) -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, **context_options)
        contexts.append(context)
        return Tab(context, url)

    yield open_tab
    for context in contexts:
        context.close()


def has_picture(image: Image.Image) -> float:
    png = io.BytesIO()
    image.save(png, "PNG")
    return foreground_fraction(png.getvalue())


def test_launch_watch_ready_view_rotate_zoom_pan_reconnect_and_cancel(service_factory, tabs, artifacts):
    svc = service_factory(frontend=BUILTIN)
    (svc.dir / "data" / "shapes").mkdir(parents=True)
    (svc.dir / "data" / "shapes" / "cube.vtk").write_text(CUBE_VTK)
    svc.start()
    tab = tabs(svc.url).loaded()
    page = tab.page
    assert "Logged in as" in tab.text("#who")
    assert "of 4 GPUs free" in tab.text("#partition-now") and "walltime up to 02:00:00" in tab.text("#partition-now")
    assert page.input_value("#walltime") == "00:30:00" and page.input_value("#gpus") == "1"
    assert page.is_hidden("#account-field")   # no accounts configured: no account to choose
    # The data file, chosen from the listing of the data root.
    page.click("#browse")
    page.click("#files-list button:text-is('shapes/')")
    page.click("#files-list button:text-is('cube.vtk')")
    assert page.input_value("#data").endswith("/data/shapes/cube.vtk")
    tab.shot(artifacts / "01-form.png")

    page.click("#launch-button")
    tab.wait_state("ready")
    tab.shot(artifacts / "02-ready.png")
    states = tab.timeline()
    assert states[-1] == "ready" and "starting" in states, states
    assert states[0] in ("submitting", "queued"), states
    assert "Ready" in tab.wait_text("#status", "Ready", 5_000)
    session_id = page.get_attribute("#live-table tbody tr", "data-session")
    session = svc.client().get(session_id)
    assert session["state"] == "ready" and session["data"] == "shapes/cube.vtk"
    assert session["sessionURL"].startswith(f"ws://127.0.0.1:{svc.port}/proxy?sessionId={session_id}")

    # The rendered view streams into the page: a real picture, not an empty element.
    tab.wait_frame_after(0)
    before = tab.view(artifacts / "03-view.png")
    assert has_picture(before) > 0.01
    mark, sent_mark = len(tab.answers), len(tab.sent)
    tab.most_interacts_out = 0
    rotated = tab.view_after(lambda: tab.drag(160, 60), artifacts / "04-rotated.png")
    assert changed_share(before, rotated) > 0.01
    # Each mouse event of the drag is one call answered with its own picture, and that picture is one render
    # (the server's count of its view's renders, in every answer): never ParaView's mouse call and then an
    # image call, two renders for one picture.
    drag = tab.answers[mark - 1 if mark else 0:]
    interacts = [(i, result) for i, (method, result) in enumerate(drag) if method == "pvhpc.viewport.interact"]
    assert len(interacts) >= 3 and "viewport.mouse.interaction" not in tab.sent[sent_mark:], tab.sent[sent_mark:]
    for i, result in interacts:
        if i > 0:
            assert result["image"] and result["stale"] is False
            assert result["renders"] - drag[i - 1][1]["renders"] == 1, [(m, r["renders"]) for m, r in drag]
    # The drag's 14 events come faster than the server renders: the moves made while calls are out are one call,
    # and no more than two calls are out at once (a second only over a link slow against the render:
    # tests/test_viewer_pipeline.py).
    assert 1 <= tab.most_interacts_out <= 2, tab.most_interacts_out
    assert tab.sent[sent_mark:].count("pvhpc.viewport.interact") < 14, tab.sent[sent_mark:]
    assert has_picture(rotated) > 0.01

    def zoom_in():
        page.mouse.move(*tab.centre())
        page.mouse.wheel(0, -600)

    zoomed = tab.view_after(zoom_in, artifacts / "05-zoomed.png")
    assert changed_share(rotated, zoomed) > 0.01
    assert has_picture(zoomed) > has_picture(rotated) * 1.2   # the wheel turned away from the user zooms in

    panned = tab.view_after(lambda: tab.drag(120, 0, button="right"), artifacts / "06-panned.png")
    assert changed_share(zoomed, panned) > 0.01

    page.click("#show-log")
    assert f"PVHPC_READY host={session['host']} port={session['port']}" in tab.wait_text("#log", "PVHPC_READY", 10_000)
    tab.shot(artifacts / "07-log.png")

    # Close the tab; a new one lists the running session and reconnects to it.
    page.close()
    tab = tabs(svc.url).loaded()
    page = tab.page
    row = page.locator(f'#live-table tr[data-session="{session_id}"]')
    assert "Ready" in row.inner_text()
    row.locator("button").click()
    tab.wait_state("ready", 10_000)
    tab.wait_frame_after(0)
    reconnected = tab.view(artifacts / "08-reconnected.png")
    assert has_picture(reconnected) > 0.01
    tab.shot(artifacts / "08-reconnected-page.png")

    page.click("#cancel")
    tab.wait_state("ended", 30_000)
    assert "Cancelled by its user" in tab.text("#session-detail")
    assert tab.text("#session-detail").lower().count("cancelled by its user") == 1   # the API's words, once
    assert page.is_hidden("#viewer-area")
    past = page.locator(f'#past-table tr[data-session="{session_id}"]')
    past.wait_for(timeout=10_000)
    assert "Cancelled by its user" in past.inner_text()
    assert past.inner_text().lower().count("cancelled by its user") == 1
    tab.shot(artifacts / "09-cancelled.png")
    ended = svc.client().get(session_id)
    assert ended["state"] == "ended" and ended["end_reason"] == "cancelled"
    assert tab.errors == []


def test_queued_on_a_full_partition_shows_reason_and_start_then_turns_ready(service_factory, cluster, tabs, artifacts):
    blockers = block_gpu_partition(cluster)
    try:
        svc = service_factory(frontend=BUILTIN).start()
        tab = tabs(svc.url).loaded()
        page = tab.page
        assert "0 of 4 GPUs free" in tab.text("#partition-now")
        page.click("#launch-button")
        tab.wait_state("queued", 30_000)
        detail = tab.wait_text("#session-detail", "waiting for free nodes or GPUs", 30_000)
        assert detail == "waiting for free nodes or GPUs"
        assert page.is_visible("#session-start")
        assert tab.text("#session-start").startswith("not known yet") or "(in about" in tab.text("#session-start")
        assert "Expected start" in tab.wait_text("#status", "waiting for free nodes or GPUs", 10_000)
        tab.shot(artifacts / "01-queued.png")
        # The blockers run under the partition's default time limit (1 h), so Slurm's backfill pass
        # (every 30 s) works out when the session can start; the page shows it as soon as it is known.
        start = tab.wait_text("#session-start", "(in about", 90_000)
        assert "in about 5" in start or "in about 6" in start, start
        tab.shot(artifacts / "02-queued-with-expected-start.png")

        cancel(cluster, blockers)
        tab.wait_state("ready")
        states = tab.timeline()
        assert "queued" in states and states[-1] == "ready", states
        tab.wait_frame_after(0)
        assert has_picture(tab.view(artifacts / "03-ready-view.png")) > 0.01
        tab.shot(artifacts / "03-ready.png")
        page.click("#cancel")
        tab.wait_state("ended", 30_000)
        assert tab.errors == []
    finally:
        cancel(cluster, blockers)


def test_errors_from_the_api_appear_next_to_their_field(service_factory, runtime_dir, tmp_path, tabs, artifacts):
    # Two versions of the application (environment modules, Lmod): one whose module exists, one whose does not.
    (tmp_path / "modulefiles" / "paraview").mkdir(parents=True)
    (tmp_path / "modulefiles" / "paraview" / "5.11.lua").write_text('setenv("PVHPC_TEST_BUILD", "5.11")\n')
    svc = service_factory(frontend=BUILTIN, limits={"gpus_per_user": 1}, partitions={
        "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 30, "max": 120},
                "accounts": ["proj-a", "proj-b"]},
        "cpu": {"walltime": {"default": 30, "max": 120}},
    }, runtime={"pythonpath": str(runtime_dir), "module_paths": [str(tmp_path / "modulefiles")]}, applications={
        "paraview": {"data_roots": [str(tmp_path)], "versions": {"5.11": ["paraview/5.11"], "6.0": ["paraview/6.0"]}},
    }).start()
    tab = tabs(svc.url).loaded()
    page = tab.page
    assert page.locator("#version option").all_inner_texts() == ["5.11 (default)", "6.0"]
    assert page.input_value("#version") == "5.11"
    page.select_option("#version", "6.0")
    page.click("#launch-button")
    assert "needs module paraview/6.0" in tab.wait_text("#version-error", "not installed", 10_000)
    assert page.get_attribute("#version", "aria-invalid") == "true"
    tab.shot(artifacts / "00-version-not-installed.png")
    page.select_option("#version", "5.11")
    # The account is asked for only where the partition has accounts, and offers exactly those.
    assert page.is_visible("#account")
    assert page.locator("#account option").all_inner_texts() == ["proj-a", "proj-b"]
    page.select_option("#partition", "cpu")
    assert page.is_hidden("#account-field")
    page.select_option("#partition", "gpu")

    page.fill("#walltime", "5:00:00")
    page.click("#launch-button")
    error = tab.wait_text("#walltime-error", "maximum", 10_000)
    assert error == "05:00:00 is over partition gpu's maximum of 02:00:00"
    assert page.get_attribute("#walltime", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "walltime"
    assert page.is_hidden("#gpus-error") and page.is_hidden("#form-error")
    tab.shot(artifacts / "01-walltime-over-max.png")

    page.fill("#walltime", "soon")
    page.click("#launch-button")
    assert "is not a walltime" in tab.wait_text("#walltime-error", "walltime (minutes", 10_000)

    # A site limit (429) on GPUs sits next to the GPU field; the walltime is fixed, so its error is gone.
    page.fill("#walltime", "20")
    page.fill("#gpus", "2")
    page.click("#launch-button")
    error = tab.wait_text("#gpus-error", "per user at once", 10_000)
    assert error.startswith("2 more GPUs would make 2")
    assert page.is_hidden("#walltime-error") and page.get_attribute("#walltime", "aria-invalid") is None
    tab.shot(artifacts / "02-gpu-limit.png")

    page.fill("#gpus", "3")
    page.click("#launch-button")
    assert tab.wait_text("#gpus-error", "over partition", 10_000) == "3 is over partition gpu's maximum of 2"
    page.fill("#gpus", "1")
    page.fill("#data", "../../etc/passwd")
    page.click("#launch-button")
    assert "outside the allowed data directories" in tab.wait_text("#data-error", "outside", 10_000)
    tab.shot(artifacts / "03-data-outside.png")
    assert svc.client().list() == []

    # A past session's settings, its version too, back in the form.
    client = svc.client()
    ended = client.cancel(client.create("paraview", partition="cpu", version="5.11", walltime="25")["id"])
    assert (ended["state"], ended["version"]) == ("ended", "5.11"), ended
    page.reload()
    tab.loaded()
    page.select_option("#version", "6.0")
    page.locator(f'#past-table tr[data-session="{ended["id"]}"] button').click()
    assert (page.input_value("#version"), page.input_value("#partition"), page.input_value("#walltime")) == (
        "5.11", "cpu", "00:25:00")
    assert tab.errors == []


def test_login_through_a_front_end_header_and_staff_see_every_session(service_factory, tabs, artifacts):
    svc = service_factory(frontend=BUILTIN,
                          auth={"kind": "header", "header": "X-Remote-User", "staff": ["ops"]}).start()
    # Through the front end (a stand-in for Apache after its login, tests/harness/frontend.py): the only
    # channel on which pvhpc believes the header.
    stranger = tabs(svc.frontend_url)
    assert stranger.response.status == 401
    stranger.page.wait_for_selector("#page-error:not([hidden])")
    assert "not logged in" in stranger.text("#page-error")
    assert stranger.page.is_disabled("#launch-button")
    stranger.shot(artifacts / "01-not-logged-in.png")

    # The front end says who the user is; the page, its API calls, its push channel and its websocket
    # through the built-in proxy all go as that user.
    alice = tabs(svc.frontend_url, extra_http_headers={"X-Remote-User": "alice"}).loaded()
    assert alice.text("#who") == "Logged in as alice"
    alice.page.select_option("#partition", "cpu")
    assert alice.page.is_disabled("#gpus")
    alice.page.click("#launch-button")
    alice.wait_state("ready")
    alice.wait_frame_after(0)
    assert has_picture(alice.view(artifacts / "02-alice-view.png")) > 0.01
    alice.shot(artifacts / "02-alice-ready.png")
    session_id = alice.page.get_attribute("#live-table tbody tr", "data-session")
    assert svc.user_client("alice").get(session_id)["user"] == "alice"

    bob = tabs(svc.frontend_url, extra_http_headers={"X-Remote-User": "bob"}).loaded()
    assert bob.page.is_hidden("#all-users-label")
    assert bob.page.locator("#live-table tbody tr").count() == 0

    ops = tabs(svc.frontend_url, extra_http_headers={"X-Remote-User": "ops"}).loaded()
    assert ops.text("#who") == "Logged in as ops (staff)"
    assert ops.page.locator("#live-table tbody tr").count() == 0   # own sessions first
    ops.page.check("#all-users")
    row = ops.page.locator(f'#live-table tr[data-session="{session_id}"]')
    row.wait_for(timeout=10_000)
    assert "alice" in row.inner_text()
    assert ops.page.locator("#partition-table tbody tr").count() == 2
    ops.shot(artifacts / "03-staff-all-sessions.png")

    alice.page.click("#cancel")
    alice.wait_state("ended", 30_000)
    assert alice.errors == [] and ops.errors == [] and bob.errors == []


def test_data_listing_stays_inside_the_data_root(service_factory, tmp_path):
    import json
    import urllib.error
    import urllib.request

    svc = service_factory(frontend=BUILTIN)
    data = svc.dir / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.vtk").write_text(CUBE_VTK)
    (data / ".hidden").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "escape").symlink_to(outside)
    svc.start()

    def get(query: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{svc.url}/api/v1/applications/paraview/files{query}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, top = get("")
    assert status == 200 and [e["name"] for e in top["entries"]] == ["sub"]
    status, sub = get("?path=sub")
    assert status == 200 and sub["entries"] == [{"name": "a.vtk", "kind": "file", "size": len(CUBE_VTK)}]
    assert get("?path=../..")[0] == 400
    assert get("?path=escape")[0] == 400
    assert get("?root=3")[0] == 400
    assert get("?path=sub/a.vtk")[0] == 404
    status, answer = get("?path=../..")
    assert answer["field"] == "path"


@pytest.mark.apache
def test_the_page_through_apache_with_its_login(service_factory, apache_factory, apache_dir, apache_login, tabs,
                                                artifacts):
    """The site as deployed: Apache authenticates (Basic here), serves the page, forwards the API and proxies the
    session's websocket through its RewriteMap; the browser never talks to pvhpc or the node directly."""
    from pvhpc.frontends import apacheconf

    from tests.harness.apache import APACHE_PASSWORD as PASSWORD
    from tests.harness.apache import APACHE_USER as USER
    from tests.harness.ports import free_port_block

    map_file = apache_dir / "session-map.txt"
    auth = apache_login
    port = free_port_block(1)
    session_url = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port).session_url
    svc = service_factory(frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                    "session_url": session_url},
                          auth={"kind": "header", "header": "X-Remote-User"},
                          public_url=f"http://127.0.0.1:{port}").start()
    apache = apache_factory(apacheconf.Site("localhost", map_file, svc.frontend_target, port=port,
                                            auth_include=auth)).start()

    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:   # Apache's login, before pvhpc is reached
        urllib.request.urlopen(apache.url + "/", timeout=10)
    assert e.value.code == 401
    tab = tabs(apache.url, http_credentials={"username": USER, "password": PASSWORD}).loaded()
    assert tab.text("#who") == f"Logged in as {USER}"
    tab.page.select_option("#partition", "cpu")
    tab.page.click("#launch-button")
    tab.wait_state("ready")
    tab.wait_frame_after(0)
    before = tab.view(artifacts / "01-view-through-apache.png")
    assert has_picture(before) > 0.01
    assert changed_share(before, tab.view_after(lambda: tab.drag(120, 40),
                                                artifacts / "02-rotated-through-apache.png")) > 0.01
    tab.shot(artifacts / "03-page-through-apache.png")
    tab.page.click("#cancel")
    tab.wait_state("ended", 30_000)
    assert tab.errors == []


def test_a_parallel_session_chosen_in_the_page_runs_over_two_nodes(service_factory, cluster, tabs, artifacts,
                                                                    tmp_path):
    """Nodes and ranks are offered only where staff allow them (cpu here, for paraview), bounded by the limits;
    a bad choice is the API's error beside its field; a good one launches an MPI pvserver over both nodes and
    the quick view shows its composited image."""
    from tests.helpers import PARALLEL_CPU, PVSERVER, job_processes_by_node, wait_no_server_left

    root = str(tmp_path / "svc" / "data")   # the harness's data root of service "svc"
    svc = service_factory(frontend=BUILTIN, partitions={
        "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 30, "max": 120}},
        "cpu": dict(PARALLEL_CPU),
    }, applications={
        "paraview": {"data_roots": [root], "start_timeout": 120, "pvserver": PVSERVER},
        "serial": {"data_roots": [root], "start_timeout": 120},
    })
    svc.start()
    listed = {p["name"]: p["parallel"] for p in svc.client().request("GET", "/api/v1/partitions")["partitions"]}
    assert listed == {"gpu": None, "cpu": {"max_nodes": 2, "max_ranks": 4, "max_ranks_per_node": 2,
                                           "ranks_divisible_by_nodes": True}}
    apps = {a["name"]: a["parallel"] for a in svc.client().request("GET", "/api/v1/applications")["applications"]}
    assert apps == {"paraview": True, "serial": False}

    tab = tabs(svc.url).loaded()
    page = tab.page
    page.select_option("#partition", "gpu")
    assert page.is_hidden("#nodes-field") and page.is_hidden("#ranks-field")
    page.select_option("#partition", "cpu")
    assert page.is_visible("#nodes") and page.is_visible("#ranks")
    assert (page.get_attribute("#nodes", "max"), page.get_attribute("#ranks", "max")) == ("2", "4")
    assert "at most 2 a node" in tab.text("#parallel-hint")
    page.select_option("#application", "serial")
    page.select_option("#partition", "cpu")
    assert page.is_hidden("#nodes-field") and page.is_hidden("#ranks-field")
    page.select_option("#application", "paraview")
    page.select_option("#partition", "cpu")

    page.fill("#nodes", "2")
    page.fill("#ranks", "3")
    page.click("#launch-button")
    assert "do not divide evenly over 2 nodes" in tab.wait_text("#ranks-error", "divide", 10_000)
    assert page.get_attribute("#ranks", "aria-invalid") == "true" and page.is_hidden("#nodes-error")
    tab.shot(artifacts / "01-ranks-refused.png")
    assert svc.client().list() == []

    page.fill("#ranks", "2")
    page.click("#launch-button")
    tab.wait_state("ready")
    assert tab.text("#session-parallel") == "2 ranks on 2 nodes"
    session_id = page.get_attribute("#live-table tbody tr", "data-session")
    session = svc.client().get(session_id)
    assert (session["nodes"], session["ranks"], session["partition"]) == (2, 2, "cpu")
    assert job_processes_by_node(cluster, session["job_id"], "pvserver") == {"cpu01": 1, "cpu02": 1}
    tab.wait_frame_after(0)
    parallel_view = tab.view(artifacts / "02-parallel-view.png")
    assert has_picture(parallel_view) > 0.01
    tab.shot(artifacts / "02-parallel-ready.png")
    # The quick view's one-call drag works with the data and rendering on the ranks too.
    mark = len(tab.answers)
    turned = tab.view_after(lambda: tab.drag(160, 60), artifacts / "03-parallel-rotated.png")
    assert changed_share(parallel_view, turned) > 0.01 and has_picture(turned) > 0.01
    assert any(method == "pvhpc.viewport.interact" and result["image"] for method, result in tab.answers[mark:])

    page.click("#cancel")
    tab.wait_state("ended", 30_000)
    assert svc.client().get(session_id)["end_reason"] == "cancelled"
    wait_no_server_left(cluster, session["job_id"])
    assert tab.errors == []
