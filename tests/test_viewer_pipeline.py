"""The quick view's calls during a drag (pvhpc/web/static/viewer.js), run in Node against a stand-in server that takes
calls one after another, each a render of ``work`` ms, over a link of ``link`` ms round trip: how many calls the
page has out at once, how many pictures it shows, and in what order. The page on the real path (Chromium, the
built-in front end, pvhpc's ParaView server) is tests/test_web_page.py's; the figures over a far link are
bench/vs_vnc.py's (--link-delay)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pvhpc.web import pages

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# A drag of DRAG_MS with a move every 8 ms, as a browser sends them, then the button's release; the stand-in
# server answers each call with a new picture (mtime counts the renders) and the work it did.
DRIVER = """
import { RemoteView } from "./viewer.js";
const [link, work] = process.argv.slice(2).map(Number);
const DRAG_MS = 1500;
globalThis.window = { devicePixelRatio: 1, addEventListener() {}, removeEventListener() {} };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let renders = 0, serverFree = 0, out = 0, mostOut = 0;
const connection = {
  call(method, [events, options]) {
    out += 1; mostOut = Math.max(mostOut, out);
    const arrives = performance.now() + link / 2;
    const starts = Math.max(arrives, serverFree);
    serverFree = starts + work;
    return sleep(serverFree + link / 2 - performance.now()).then(() => {
      out -= 1; renders += 1;
      return { image: "x", mtime: renders, workTime: work, renders, stale: false, asked: options.mtime };
    });
  },
};
const view = new RemoteView({ clientWidth: 400, clientHeight: 300, dataset: {} }, {}, () => {});
view.connection = connection;
view.direct = true;
const shown = [];
const show = view._show.bind(view);
view._show = (reply, quality) => { shown.push(reply.mtime); show(reply, quality); };
// The view's first picture, as open() asks for it: the page learns the link and the server's work from it.
const asked = performance.now();
view._timed(await connection.call("pvhpc.viewport.interact", [[], { mtime: 0 }]), asked, true);
view.dragButton = "left";
view._interact("down", 0.5, 0.5, "left");
const start = performance.now();
while (performance.now() - start < DRAG_MS) {
  view._interact("move", 0.5 + (performance.now() - start) / 10000, 0.5, "left");
  await sleep(8);
}
view.dragButton = null;
view._interact("up", 0.7, 0.5, null);
while (view.inFlight || view.waiting.length) await sleep(5);
await view.shown;
console.log(JSON.stringify({ mostOut, shown, linkMs: view.linkMs, workMs: view.workMs }));
"""


def drag(tmp_path, link_ms: float, work_ms: float) -> dict:
    for module in pages.STATIC_DIR.glob("*.js"):
        shutil.copy(module, tmp_path / module.name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "driver.js").write_text(DRIVER)
    ran = subprocess.run(["node", "driver.js", str(link_ms), str(work_ms)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_close_by_one_call_at_a_time(tmp_path):
    """A link of 4 ms against renders of 60 ms: a second call would only wait at the server."""
    result = drag(tmp_path, 4, 60)
    assert result["mostOut"] == 1, result
    assert result["shown"] == sorted(result["shown"]), result
    assert 3 <= result["linkMs"] < 15 and result["workMs"] == 60, result


def test_over_a_far_link_two_calls_out_and_the_server_never_waits_for_the_link(tmp_path):
    """A link of 80 ms against renders of 60 ms: one at a time would show a picture every 140 ms, about 11 in the
    1.5 s drag; with a second call out the server renders back to back, a picture every 60 ms. Never a third."""
    result = drag(tmp_path, 80, 60)
    assert result["mostOut"] == 2, result
    assert result["shown"] == sorted(result["shown"]), result   # in the order asked, none twice
    assert len(set(result["shown"])) == len(result["shown"])
    assert len(result["shown"]) >= 20, result
