"""static/reattach.js run in Node with a stand-in page (window, location, sessionStorage, fetch, WebSocket): the
script's own logic only; the real Visualizer page reattaching is tests/test_continuation_browser.py's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "pvhpc" / "web" / "static" / "reattach.js"

# Each "load" is a fresh page in the same tab (one sessionStorage): a watched websocket to the session closes
# while the API says the session is ready; the load reports whether the page reloaded and what its banner says.
STAND_IN = r"""
const vm = require("vm");
const fs = require("fs");
const [source, param, loads] = [fs.readFileSync(process.argv[2], "utf8"), process.argv[3], Number(process.argv[4])];
const storage = new Map();
const sessionStorage = { getItem: (k) => (storage.has(k) ? storage.get(k) : null),
                         setItem: (k, v) => storage.set(k, String(v)) };
async function load() {
  const result = { reloaded: null, banner: null };
  const note = { setAttribute() {}, style: {}, set textContent(t) { result.banner = t; } };
  class FakeSocket { constructor(url) { this.url = url; this.listeners = []; }
                     addEventListener(type, f) { if (type === "close") this.listeners.push(f); } }
  const page = {
    WebSocket: FakeSocket, sessionStorage, URL, URLSearchParams, JSON, Math, Date, Number, String, Array,
    setTimeout: (f) => setImmediate(f), addEventListener() {},
    fetch: async () => ({ status: 200, ok: true, json: async () => ({ state: "ready", detail: "running" }) }),
    location: { href: "https://pv.example/apps/visualizer/", pathname: "/apps/visualizer/",
                replace: (u) => { result.reloaded = u; } },
    document: { currentScript: { src: "https://pv.example/static/reattach.js" },
                getElementById: () => (result.banner === null ? null : note), createElement: () => note,
                body: { appendChild() {} } },
  };
  page.window = page;
  vm.runInNewContext(source, page);
  const socket = new page.WebSocket(`wss://pv.example/proxy?${param}=abc123`);
  for (const f of socket.listeners) f();
  for (let i = 0; i < 50 && result.reloaded === null && !/stopped/.test(result.banner || ""); i++) {
    await new Promise((r) => setImmediate(r));
  }
  return result;
}
(async () => {
  const out = [];
  for (let i = 0; i < loads; i++) out.push(await load());
  console.log(JSON.stringify(out));
})();
"""


def run(tmp_path, param: str, loads: int) -> list[dict]:
    stand_in = tmp_path / "stand_in.js"
    stand_in.write_text(STAND_IN)
    done = subprocess.run(["node", str(stand_in), str(SCRIPT), param, str(loads)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_ready_session_whose_websocket_keeps_closing_reloads_three_times_then_stops_and_says_why(tmp_path):
    loads = run(tmp_path, "sessionId", 5)
    assert [bool(r["reloaded"]) for r in loads] == [True, True, True, False, False], loads
    assert loads[0]["reloaded"] == "/apps/visualizer/?attach=abc123"
    assert "stopped reconnecting" in loads[3]["banner"] and "3 times within 2 minutes" in loads[3]["banner"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_websocket_naming_its_session_as_sessionid_is_followed_too(tmp_path):
    [load] = run(tmp_path, "sessionid", 1)
    assert load["reloaded"] == "/apps/visualizer/?attach=abc123", load
