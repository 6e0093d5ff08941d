"""The quick view's calls during a drag (pvhpc/web/static/viewer.js), run in Node against a stand-in server that takes
calls one after another, each a render of ``work`` ms, over a link of ``link`` ms round trip: how many calls the
page has out at once, how many pictures it shows, in what order, and what becomes of a refused call and of the
answers of a connection that dropped. The page on the real path (Chromium, the built-in front end, pvhpc's ParaView
server) is tests/test_web_page.py's; the figures over a far link are bench/vs_vnc.py's (--link-delay)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pvhpc.web import pages

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# A drag of DRAG_MS with a move every 8 ms, as a browser sends them, then the button's release. The stand-in server
# numbers its renders in the order it takes the calls (each answer's mtime) and says the work it did (workTime).
# Scenarios: "late" holds back the answer of every other call by 90 ms, more than a render, so the next call's
# answer comes first; "refused" refuses the third call; "dropped" replaces the connection halfway through the drag,
# as a reconnect does.
DRIVER = """
import { RemoteView } from "./viewer.js";
const [link, work] = process.argv.slice(2, 4).map(Number);
const scenario = process.argv[4];
const DRAG_MS = 1500;
globalThis.window = { devicePixelRatio: 1, addEventListener() {}, removeEventListener() {} };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let out = 0, mostOut = 0, calls = 0;
function server(first) {
  let renders = first, free = 0;
  return {
    get renders() { return renders; },
    call(method, [events, options]) {
      calls += 1; out += 1; mostOut = Math.max(mostOut, out);
      const number = calls;
      const starts = Math.max(performance.now() + link / 2, free);
      free = starts + work;
      const mtime = ++renders;
      const late = scenario === "late" && number % 2 === 0 ? 90 : 0;
      return sleep(free + link / 2 + late - performance.now()).then(() => {
        out -= 1;
        if (scenario === "refused" && number === 3) throw new Error("refused by the stand-in");
        return { image: "x", mtime, workTime: work, renders: mtime, stale: false };
      });
    },
  };
}
const said = [];
const view = new RemoteView({ clientWidth: 400, clientHeight: 300, dataset: {} }, {}, (text) => said.push(text));
view.connection = server(0);
view.direct = true;
const shown = [];
const show = view._show.bind(view);
view._show = (reply, quality) => { shown.push(reply.mtime); show(reply, quality); };
// The view's first picture, as open() asks for it: the page learns the link and the server's work from it.
const asked = performance.now();
view._measureLink(await view.connection.call("pvhpc.viewport.interact", [[], { mtime: 0 }]), asked, true);
view.dragButton = "left";
view._interact("down", 0.5, 0.5, "left");
const start = performance.now();
let dropped = null;
while (performance.now() - start < DRAG_MS) {
  if (scenario === "dropped" && !dropped && performance.now() - start > DRAG_MS / 2) {
    dropped = view.connection;   // what a reconnect does: the calls forgotten, a new connection counting from 1000
    view.connection = null;
    view._forgetCalls();
    view.connection = server(1000);
    view._interact("down", 0.5, 0.5, "left");
  }
  view._interact("move", 0.5 + (performance.now() - start) / 10000, 0.5, "left");
  await sleep(8);
}
view.dragButton = null;
view._interact("up", 0.7, 0.5, null);
while (view.inFlight || view.waiting.length || out) await sleep(5);
await view.shown;
console.log(JSON.stringify({ mostOut, calls, shown, said, inFlight: view.inFlight, linkMs: view.linkMs,
                             workMs: view.workMs, droppedRenders: dropped && dropped.renders }));
"""


def drag(tmp_path, link_ms: float, work_ms: float, scenario: str = "") -> dict:
    for module in pages.STATIC_DIR.glob("*.js"):
        shutil.copy(module, tmp_path / module.name)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "driver.js").write_text(DRIVER)
    ran = subprocess.run(["node", "driver.js", str(link_ms), str(work_ms), scenario], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def in_order_once(shown: list[int]) -> bool:
    return shown == sorted(shown) and len(set(shown)) == len(shown)


def test_close_by_one_call_at_a_time(tmp_path):
    """A link of 2 ms against renders of 200 ms: a second call would only wait at the server."""
    result = drag(tmp_path, 2, 200)
    assert result["mostOut"] == 1, result
    assert in_order_once(result["shown"]) and len(result["shown"]) >= 5, result
    assert result["linkMs"] < 40 and result["workMs"] == 200, result


def test_over_a_far_link_two_calls_out_and_twice_the_pictures(tmp_path):
    """A link of 80 ms against renders of 60 ms: one at a time shows a picture every 140 ms, about 11 in the 1.5 s
    drag; with a second call out, one every 70 ms (the server idles only for what the round trip has over a
    render). Never a third call."""
    result = drag(tmp_path, 80, 60)
    assert result["mostOut"] == 2, result
    assert in_order_once(result["shown"]), result
    assert len(result["shown"]) >= 18, result


def test_pictures_are_shown_in_the_order_asked_when_a_later_answer_comes_first(tmp_path):
    result = drag(tmp_path, 80, 60, "late")
    assert result["mostOut"] == 2, result
    assert in_order_once(result["shown"]) and len(result["shown"]) >= 12, result


def test_a_refused_call_is_said_and_the_drag_goes_on(tmp_path):
    result = drag(tmp_path, 80, 60, "refused")
    assert result["said"] == ["The server did not take the mouse event: refused by the stand-in"], result
    assert result["inFlight"] == 0 and result["calls"] > 6, result   # the calls after it went out
    assert 3 not in result["shown"] and in_order_once(result["shown"]), result


def test_a_dropped_connections_late_answers_are_not_shown(tmp_path):
    """Halfway through the drag the connection is replaced while two of its calls are out: their pictures,
    answered after, are not shown over the new connection's, and the new connection's calls are counted afresh."""
    result = drag(tmp_path, 80, 60, "dropped")
    old = [m for m in result["shown"] if m < 1000]
    new = [m for m in result["shown"] if m > 1000]
    assert old and new and result["shown"] == old + new, result
    assert in_order_once(result["shown"]) and result["inFlight"] == 0, result
    # The old connection's calls out at the drop were still answered, after it: rendered, never shown.
    assert max(old) < result["droppedRenders"], result
