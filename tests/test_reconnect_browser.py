"""Sessions that outlive the owner's screen, in real Chromium against a real ``pvhpc serve``, the test cluster
and pvhpc's ParaViewWeb server in a Slurm job:

- the quick view's websocket cut under it (the service with its built-in proxy restarted): the view says it is
  reconnecting, comes back by itself to the same session (same id, same job, no new one), and renders after input;
  cut again once nobody has used it for a while, it waits for its person (a reconnection is input to the server's
  idle rule) and comes back at their first click;
- browser notifications, opted in by a click (the permission granted through the DevTools protocol): the session
  this tab saw waiting turning ready, and the walltime warning, each recorded as the page made it and seen shown
  by the browser (the notification's "show" event);
- the tab's title says the state: waiting, the minutes left, reconnecting.

Screenshots go to test-artifacts/<test name>/.
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from tests.harness.browser import changed_share, chromium
from tests.harness.cluster import pvhpc_jobs

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.paraview, pytest.mark.waits]

READY_MS = 150_000
FRAME_MS = 30_000
BASE_TITLE = "ParaView sessions"
# Every notification the page makes, and every title the tab had, as the page made them: the real Notification is
# still called (and shown by the browser), the record is beside it.
RECORD_SCRIPT = """
(() => {
  window.__notices = [];
  window.__titles = [];
  const Real = window.Notification;
  if (Real) {
    window.Notification = class extends Real {
      constructor(title, options) {
        window.__notices.push({title, body: (options || {}).body || "", tag: (options || {}).tag || "", shown: false});
        super(title, options);
        const mine = window.__notices[window.__notices.length - 1];
        this.addEventListener("show", () => { mine.shown = true; });
      }
    };
  }
  const seen = () => { const t = document.title; if (window.__titles[window.__titles.length - 1] !== t) window.__titles.push(t); };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true, characterData: true});
  setInterval(seen, 200);
})();
"""


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def view_image(page) -> Image.Image:
    png = page.locator("#viewer").screenshot()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return image.crop((2, 2, image.width - 2, image.height - 2))


def frames(page) -> int:
    return int(page.get_attribute("#viewer", "data-frames") or 0)


def wait_frame_after(page, count: int) -> None:
    page.wait_for_function("n => Number(document.getElementById('viewer').dataset.frames || 0) > n",
                           arg=count, timeout=FRAME_MS)
    page.wait_for_timeout(1500)


def drag(page, dx: float, dy: float) -> None:
    box = page.locator("#viewer").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=10)
    page.mouse.up()


def test_the_quick_view_comes_back_after_its_connection_is_cut_and_the_user_is_told_in_time(
        service_factory, cluster, browser, artifacts):
    # Walltime 3 minutes, warned at 2:00 left: the warning comes about a minute after the session is ready.
    svc = service_factory(frontend={"kind": "builtin"}, walltime_warnings=[120]).start()
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_init_script(RECORD_SCRIPT)
    page = context.new_page()
    page.clock.install()   # time flows as usual; the page's clock can be moved on below
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(svc.url + "/")
    page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    assert page.title() == BASE_TITLE

    # Opt in: nothing is asked before the click; the browser's answer is the DevTools protocol's grant.
    assert page.get_attribute("#notify", "data-state") == "off"
    assert page.evaluate("Notification.permission") == "default"
    context.grant_permissions(["notifications"], origin=svc.url)
    page.click("#notify")
    page.wait_for_selector('#notify[data-state="on"]', timeout=5_000)
    page.reload()   # remembered in this browser
    page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    assert page.get_attribute("#notify", "data-state") == "on"
    assert page.get_attribute("#notify", "aria-pressed") == "true"

    page.select_option("#partition", "cpu")
    page.fill("#walltime", "3")
    page.click("#launch-button")
    page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_MS)
    # Made by the page and shown by the browser (its "show" event).
    page.wait_for_function("() => window.__notices.some(n => n.title === 'Session ready' && n.shown)", timeout=10_000)
    ready = [n for n in page.evaluate("window.__notices") if n["title"] == "Session ready"]
    assert len(ready) == 1 and "is ready" in ready[0]["body"], ready
    titles = page.evaluate("window.__titles")
    assert any(re.fullmatch(rf"(Submitting|Queued|Starting) - {BASE_TITLE}", t) for t in titles), titles
    page.wait_for_function(f"() => /^[0-9] min left - {BASE_TITLE}$/.test(document.title)", timeout=5_000)

    session_id = page.get_attribute("#live-table tbody tr", "data-session")
    client = svc.client()
    session = client.get(session_id)
    jobs_before = [j.job_id for j in pvhpc_jobs(cluster)]
    assert jobs_before == [session["job_id"]], (jobs_before, session)
    wait_frame_after(page, 0)
    before = view_image(page)
    page.screenshot(path=str(artifacts / "01-ready.png"), full_page=True)

    # The cut: the front end (pvhpc's built-in proxy, in the service) goes away under the open view.
    svc.stop()
    page.wait_for_selector('#viewer[data-connection="reconnecting"]', timeout=10_000)
    page.wait_for_function("() => document.getElementById('viewer-status').textContent.includes('Reconnect')",
                           timeout=10_000)
    assert "Connection lost" in page.locator("#viewer-status").inner_text()
    page.wait_for_function(f"() => document.title === 'Reconnecting - {BASE_TITLE}'", timeout=5_000)
    page.screenshot(path=str(artifacts / "02-reconnecting.png"), full_page=True)
    page.wait_for_timeout(4_000)   # a few tries fail while it is away
    svc.start()
    page.wait_for_selector('#viewer[data-reconnects="1"][data-connection="connected"]', timeout=60_000)
    assert "Reconnected to the same session" in page.locator("#viewer-status").inner_text()
    page.screenshot(path=str(artifacts / "03-reconnected.png"), full_page=True)

    # Input after it: rendered by the same server.
    count = frames(page)
    drag(page, 160, 60)
    wait_frame_after(page, count)
    rotated = view_image(page)
    rotated.save(artifacts / "04-rotated.png")
    assert changed_share(before, rotated) > 0.01
    assert page.get_attribute("#live-table tbody tr", "data-session") == session_id
    assert [s["id"] for s in client.list()] == [session_id]
    assert client.get(session_id)["job_id"] == session["job_id"]
    assert [j.job_id for j in pvhpc_jobs(cluster)] == jobs_before   # no new job

    # Nobody has used the view for six minutes (the page's clock moved on): cut again, it waits for its person.
    page.clock.fast_forward("06:00")
    svc.stop()
    page.wait_for_selector('#viewer[data-connection="waiting"]', timeout=10_000)
    assert "while nobody used the view" in page.locator("#viewer-status").inner_text()
    page.wait_for_function(f"() => document.title === 'Disconnected - {BASE_TITLE}'", timeout=5_000)
    svc.start()
    page.wait_for_timeout(5_000)
    assert page.get_attribute("#viewer", "data-connection") == "waiting"   # not by itself
    assert page.get_attribute("#viewer", "data-reconnects") == "1"
    page.click("#viewer")
    page.wait_for_selector('#viewer[data-reconnects="2"][data-connection="connected"]', timeout=60_000)
    page.screenshot(path=str(artifacts / "05-back-on-click.png"), full_page=True)
    assert client.get(session_id)["job_id"] == session["job_id"]

    # Told in time: the walltime warning becomes a notification too, in the service's words.
    page.wait_for_function("() => window.__notices.some(n => n.title === 'Session ending soon' && n.shown)",
                           timeout=120_000)
    warned = [n for n in page.evaluate("window.__notices") if n["title"] == "Session ending soon"]
    assert "ends in less than 2 minutes" in warned[0]["body"], warned
    client.cancel(session_id)
    page.wait_for_selector('#session-state[data-state="ended"]', timeout=30_000)
    page.wait_for_function(f"() => document.title === 'Ended - {BASE_TITLE}'", timeout=5_000)
    assert errors == []
    context.close()
