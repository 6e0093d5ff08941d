"""Two users' tabs on pvhpc's page for the sharing tests (tests/test_sharing_browser.py,
tests/test_sharing_visualizer_browser.py): a Tab that records what its page sends, what a sharee's browser may
try behind the page's back, and the session's pipeline as its owner lists it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import time

from PIL import Image

from pvhpc.client.wslink import WslinkClient

from tests.harness.browser import changed_share

READY_MS = 150_000
FRAME_MS = 30_000
CUT_WITHIN = 5.0


class Tab:
    def __init__(self, context, url: str):
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.sent: list[tuple[str, list]] = []   # (method, args) of every call the page made
        self.page.on("websocket", self._socket)
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-loaded=true]", timeout=15_000)

    def _socket(self, ws) -> None:
        import json

        def sent(payload) -> None:
            try:
                message = json.loads(payload)
            except (TypeError, ValueError):
                return
            if isinstance(message, dict) and "method" in message:
                self.sent.append((message["method"], message.get("args")))

        ws.on("framesent", sent)

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def wait_cut_off(self, timeout: float) -> None:
        """Until the view has given up for good because the share is gone: the give-up state with the words saying
        so, never a retry (a revoked share is not worth retrying; a mere "Disconnected" would pass by timing)."""
        self.page.wait_for_function(
            "() => document.querySelector('#viewer').dataset.connection === 'gave-up'"
            " && /^This session is no longer shared with you/.test(document.querySelector('#viewer-status').textContent)",
            timeout=timeout)

    def wait_text(self, selector: str, words: str, timeout: float = READY_MS) -> None:
        self.page.wait_for_function(
            "([s, w]) => { const e = document.querySelector(s); return e && e.textContent.includes(w); }",
            arg=[selector, words], timeout=timeout)

    def frames(self) -> int:
        return int(self.page.get_attribute("#viewer", "data-frames") or 0)

    def wait_frame_after(self, count: int) -> None:
        self.page.wait_for_function("n => Number(document.getElementById('viewer').dataset.frames || 0) > n",
                                    arg=count, timeout=FRAME_MS)
        self.page.wait_for_timeout(1500)

    def view(self, path) -> Image.Image:
        png = self.page.locator("#viewer").screenshot(path=str(path))
        image = Image.open(io.BytesIO(png)).convert("RGB")
        return image.crop((2, 2, image.width - 2, image.height - 2))

    def view_changed_from(self, before: Image.Image, path, timeout: float = 30) -> float:
        """How much of the view changed from ``before``, once it has (or the timeout passed): another client's work
        reaches this view at its next fresh picture (viewer.js asks every second while shared)."""
        deadline = time.monotonic() + timeout
        while True:
            share = changed_share(before, self.view(path))
            if share > 0.02 or time.monotonic() > deadline:
                return share
            self.page.wait_for_timeout(500)

    def drag(self, dx: float, dy: float) -> None:
        box = self.page.locator("#viewer").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x + dx, y + dy, steps=12)
        self.page.mouse.up()

    def shot(self, path) -> None:
        self.page.screenshot(path=str(path), full_page=True)

    def share(self, user: str, role: str) -> None:
        if not self.page.locator("#share-dialog[open]").count():
            self.page.click("#share")
            self.page.wait_for_selector("#share-dialog[open]")
        self.page.fill("#share-name", user)
        self.page.select_option("#share-role", role)
        self.page.click("#share-add")

    def open_shared(self, session_id: str) -> None:
        row = self.page.locator(f'#live-table tr[data-session="{session_id}"]')
        row.wait_for(timeout=20_000)
        row.locator("button").click()


# What bob's browser tries behind the page's back, on a websocket of its own through the front end with his own
# login and key: every call that would change her session, and the picture, which a view may ask for.
TRY_EVERYTHING = """async ([url, key]) => {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("no socket")); });
  const answers = {};
  ws.onmessage = (e) => { try { const m = JSON.parse(e.data); if (m.id) answers[m.id] = m; } catch (err) {} };
  const send = (id, method, args) => ws.send(JSON.stringify({ wslink: "1.0", id, method, args, kwargs: {} }));
  const answered = async (id) => { for (let i = 0; i < 200 && !answers[id]; i++) await new Promise((r) => setTimeout(r, 50)); return answers[id]; };
  send("system:c0:0", "wslink.hello", [{ secret: key }]);
  const hello = await answered("system:c0:0");
  const calls = {
    create: ["pv.proxy.manager.create", ["Sphere", -1]],
    mouse: ["viewport.mouse.interaction", [{ action: "down", x: 0.5, y: 0.5, buttonLeft: true }]],
    drag: ["pvhpc.viewport.interact", [[{ action: "down", x: 0.5, y: 0.5, buttonLeft: true }], { view: -1 }]],
    reset: ["viewport.camera.reset", [-1]],
    list: ["pv.proxy.manager.list", []],
    exit: ["application.exit.later", [1]],
    picture: ["viewport.image.render", [{ size: [200, 150], view: -1, mtime: 0, quality: 50 }]],
  };
  const out = { hello: Boolean(hello && hello.result) };
  let n = 1;
  for (const [name, [method, args]] of Object.entries(calls)) {
    const id = `rpc:c0:${n++}`;
    send(id, method, args);
    const answer = await answered(id);
    out[name] = answer ? (answer.error ? `error ${answer.error.code}` : "ok") : "no answer";
  }
  ws.close();
  return out;
}"""


def sources(url: str, secret: str, user: str) -> list:
    """The session's pipeline as its owner's own client lists it (in a thread: Playwright holds this one's loop)."""
    async def listed():
        client = await WslinkClient.connect(url, secret, headers={"X-Remote-User": user})
        try:
            return (await client.call("pv.proxy.manager.list", []))["sources"]
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, listed()).result(60)
