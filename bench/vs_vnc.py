"""pvhpc against what most HPC users get instead: ParaView's Qt GUI in a VNC desktop, shown through noVNC.

    /opt/pvhpc/venv/bin/python bench/vs_vnc.py [--rounds 3] [--plot docs/img/vs-vnc.png]
    /opt/pvhpc/venv/bin/python bench/vs_vnc.py --install     # Debian's VNC server, noVNC, websockify, Xfce
    /opt/pvhpc/venv/bin/python bench/vs_vnc.py --paths before,quick,vnc --before OLD_VIEWER_JS   # a change of
                                                 # the quick view: the page's viewer.js before it, same run

Open OnDemand's ParaView app runs ParaView's GUI in an Xfce desktop on a VNC server started by a Slurm job,
and the user's browser shows that desktop through noVNC and websockify. This puts pvhpc beside it, on the
same data, the same partition of a private local Slurm cluster and the same browser (Debian's Chromium,
driven by Playwright), in one run, the paths interleaved round by round:

  pvhpc quick view   the users' page (/): application ``paraview`` with the data file, Launch; the page's own
                     view (JPEG frames from pvhpc's ParaViewWeb server, through the built-in front end)
  pvhpc Visualizer   /apps/visualizer/?partition=cpu&data=...: the unmodified ParaView Visualizer launches its
                     session through pvhpc's launcher and shows it
  VNC desktop        sbatch bench/vnc_desktop.sh (Xvnc with a password file, Xfce, ``paraview`` with the data
                     shown, websockify serving noVNC), then noVNC's page with the VNC password, straight to
                     the node's websockify (OnDemand would add its Apache proxy)

Measured in the browser, for each: the time from the click (the page's Launch, the Visualizer's URL opened,
sbatch) until the data is on screen; frames per second while the mouse drags a circle in the view for
--seconds; the time from a mouse move (with the button held) to the first changed picture, median of
--samples; websocket bytes per second while rotating. What is on screen is read by a probe in the page:
at every animation frame it draws the view's element (the quick view's <img>, the Visualizer's, noVNC's
<canvas>) into a small canvas, hashes the pixels (a new hash is a new frame) and counts the data's red (the
data is a sphere coloured by height, seen from above: the red end of ParaView's default colour map).
Bytes are the websocket messages' payloads in both directions as Chromium reports them.

Everything it starts (cluster, service, jobs, the desktops' processes, Chromium) is removed on a normal
end, an error, Ctrl-C or SIGTERM (bench/teardown.py).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delayed_link import DelayedLink  # noqa: E402
from bench.report import spread  # noqa: E402
from bench.teardown import Teardown, processes_under, start_bench_cluster, wait_idle  # noqa: E402

JOB_SCRIPT = Path(__file__).resolve().parent / "vnc_desktop.sh"
APT_PACKAGES = ("tigervnc-standalone-server", "tigervnc-tools", "novnc", "websockify", "xfce4", "dbus-x11")
APT_LINE = ("DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(APT_PACKAGES))
NEEDED = {"Xvnc": "tigervnc-standalone-server", "vncpasswd": "tigervnc-tools", "websockify": "websockify",
          "xfce4-session": "xfce4", "dbus-launch": "dbus-x11", "paraview": "paraview"}
NOVNC_PAGE = Path("/usr/share/novnc/vnc.html")
DATA_FILE = "sphere.vtk"
QUICK, VISUALIZER, VNC = "pvhpc quick view", "pvhpc Visualizer", "VNC desktop (noVNC)"
QUICK_BEFORE = "quick view (--before)"
INTERACT = "pvhpc.viewport.interact"   # the quick view's one call for a mouse event and its picture
VIEWPORT = {"width": 1280, "height": 900}
READY_S = 180
RED_SHARE = 0.01          # the data is on screen when this share of the view is its red
CIRCLE_PX = 90            # radius of the rotating drag
SAME_PICTURE_S = 0.02     # changes closer than this are one picture drawn in parts (frames_between)

# The probe in each page (above). window.__probeSelectors names the view's element, in order of preference.
PROBE_JS = """
(() => {
  const W = 240, H = 150;
  const p = window.__probe = {changes: [], inputs: [], red: 0, cx: 0.5, cy: 0.5, first: null, size: null,
                              hash: null, threshold: %(threshold)s};
  window.addEventListener("pointermove", (e) => p.inputs.push(performance.timeOrigin + e.timeStamp), true);
  let canvas = null, ctx = null;
  const find = () => {
    for (const s of window.__probeSelectors || []) {
      for (const e of document.querySelectorAll(s)) {
        if (e.tagName === "CANVAS" && e.width > 16 && e.height > 16) return e;
        if (e.tagName === "IMG" && e.complete && e.naturalWidth > 16) return e;
      }
    }
    return null;
  };
  const tick = () => {
    const el = find();
    if (el) {
      if (!canvas) {
        canvas = document.createElement("canvas");
        canvas.width = W; canvas.height = H;
        ctx = canvas.getContext("2d", {willReadFrequently: true});
      }
      ctx.drawImage(el, 0, 0, W, H);
      const d = ctx.getImageData(0, 0, W, H).data;
      let h = 2166136261, red = 0, sx = 0, sy = 0;
      for (let i = 0, k = 0; i < d.length; i += 4, k++) {
        h = Math.imul(h ^ (d[i] | (d[i + 1] << 8) | (d[i + 2] << 16)), 16777619);
        if (d[i] > 140 && d[i + 1] < 90 && d[i + 2] < 100) { red++; sx += k %% W; sy += Math.floor(k / W); }
      }
      const t = performance.timeOrigin + performance.now();
      if (h !== p.hash) { p.hash = h; p.changes.push(t); }
      p.red = red / (W * H);
      if (red) { p.cx = sx / red / W; p.cy = sy / red / H; }
      p.size = [el.naturalWidth || el.width, el.naturalHeight || el.height];
      if (p.first === null && p.red > p.threshold) p.first = t;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
""" % {"threshold": RED_SHARE}


@dataclass
class Run:
    path: str
    first_picture: float           # s, from the click to the data on screen
    fps: float                     # distinct pictures per second while rotating
    latencies: list[float]         # s, mouse move to the first changed picture
    bytes_per_s: float             # websocket payload bytes per second while rotating (both directions)
    picture: tuple[int, int] = (0, 0)   # the view's size in pixels as the browser got it
    why: dict = field(default_factory=dict)   # where a path's time went (render_calls; close_share)

    @property
    def latency(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


# -- pure helpers (tests/test_bench_vs_vnc.py) --------------------------------------------------------------

def frames_between(changes: list[float], start: float, end: float, gap: float = 0.0) -> int:
    """Pictures first shown in [start, end); a change within ``gap`` seconds of the one before is the same
    picture still being drawn (a VNC viewer paints one render as several rectangles, at times over two
    animation frames)."""
    count, last = 0, None
    for t in changes:
        if start <= t < end and (last is None or t - last >= gap):
            count += 1
        last = t
    return count


def renders_between(log: str, start: float, end: float) -> int:
    """Renders noted (one time a line) in [start, end)."""
    return sum(1 for line in log.split() if start <= float(line) < end)


def first_change_after(changes: list[float], moment: float) -> float | None:
    """When the picture first changed after ``moment``, or None."""
    return next((t for t in changes if t > moment), None)


def speedup(pvhpc: float, vnc: float, higher_is_better: bool) -> float:
    """pvhpc against VNC, > 1 where pvhpc does better: pvhpc/VNC for a rate, VNC/pvhpc for a time."""
    if not (pvhpc and vnc) or math.isnan(pvhpc) or math.isnan(vnc):
        return float("nan")
    return pvhpc / vnc if higher_is_better else vnc / pvhpc


def wslink_summary(message: str) -> dict:
    """The parts of a wslink 1.x render call or answer that say where a frame's time went."""
    import json

    try:
        body = json.loads(message)
    except ValueError:
        return {}
    result = body.get("result") if isinstance(body.get("result"), dict) else {}
    return {"id": body.get("id"), "method": body.get("method"), "work_ms": result.get("workTime"),
            "stale": result.get("stale"), "image_bytes": len(result.get("image") or ""),
            "renders": result.get("renders")}


def calls(rpcs: list[tuple[float, str, dict]], method: str, start: float, end: float) -> list[tuple[float, float, dict]]:
    """(sent, answered, answer) of each ``method`` call sent in [start, end)."""
    sent = {m["id"]: t for t, way, m in rpcs if way == "sent" and m.get("method") == method}
    return [(sent[m["id"]], t, m) for t, way, m in rpcs
            if way == "received" and m.get("id") in sent and start <= sent[m["id"]] < end]


def render_calls(rpcs: list[tuple[float, str, dict]], start: float, end: float) -> dict:
    """pvhpc's quick view's loop between ``start`` and ``end``: each viewport.image.render call paired with its
    answer: calls per second, the round trip and the server's own work (render, image handed to the JPEG
    encoder) per call, the share answered stale (the encoder not done: the answer carries the image before,
    and the view asks again after a pause), image bytes; and the round trip of the mouse moves sent
    (viewport.mouse.interaction), which the server answers in turn with the render calls."""
    pairs = calls(rpcs, "viewport.image.render", start, end) + calls(rpcs, INTERACT, start, end)
    if not pairs:
        return {}
    mouse = calls(rpcs, "viewport.mouse.interaction", start, end) + calls(rpcs, INTERACT, start, end)
    with_image = [m["image_bytes"] for _, _, m in pairs if m["image_bytes"]]
    # pvhpc's server counts its view's renders in each answer: the renders one picture shown cost
    counts = [m["renders"] for _, _, m in pairs if m.get("renders") is not None]
    per_image = {"renders_per_image": (max(counts) - min(counts)) / max(1, len(with_image) - 1)} if counts else {}
    return {**per_image, "calls": len(pairs), "calls_per_s": len(pairs) / (end - start),
            "mouse_calls_per_s": len(mouse) / (end - start),
            "mouse_round_trip_ms": statistics.median((b - a) * 1000 for a, b, _ in mouse) if mouse else float("nan"),
            "round_trip_ms": statistics.median((b - a) * 1000 for a, b, _ in pairs),
            "work_ms": statistics.median(m["work_ms"] or 0 for _, _, m in pairs),
            "stale_share": sum(1 for _, _, m in pairs if m["stale"]) / len(pairs),
            "images_per_s": len(with_image) / (end - start),
            "image_kb": statistics.median(with_image) / 1000 if with_image else 0.0}


def interleaved(paths: list[str]) -> list[str]:
    """One round: each pvhpc path followed by the VNC desktop (pvhpc, VNC, pvhpc, VNC ...)."""
    pvhpc = [p for p in paths if p != VNC]
    if VNC not in paths:
        return pvhpc
    return [p for path in pvhpc for p in (path, VNC)] or [VNC]


def circle(centre: tuple[float, float], radius: float, step: int, steps_per_turn: int = 60) -> tuple[float, float]:
    """The ``step``-th point of a drag around ``centre`` (a full turn every ``steps_per_turn`` moves)."""
    a = 2 * math.pi * step / steps_per_turn
    return centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a)


def sphere_vtk(resolution: int) -> str:
    """A unit sphere as legacy VTK polydata with a point field ``height`` (z): seen from above (ParaView's
    default camera looks down z), its cap is the red end of the default colour map."""
    points, heights, polygons = [], [], []
    for i in range(resolution + 1):
        theta = math.pi * i / resolution
        for j in range(resolution):
            phi = 2 * math.pi * j / resolution
            z = math.cos(theta)
            points.append(f"{math.sin(theta) * math.cos(phi):.5f} {math.sin(theta) * math.sin(phi):.5f} {z:.5f}")
            heights.append(f"{z:.5f}")
    for i in range(resolution):
        for j in range(resolution):
            a, b = i * resolution + j, i * resolution + (j + 1) % resolution
            polygons.append(f"4 {a} {b} {b + resolution} {a + resolution}")
    return "\n".join(["# vtk DataFile Version 3.0", "a sphere coloured by height", "ASCII", "DATASET POLYDATA",
                      f"POINTS {len(points)} float", *points, f"POLYGONS {len(polygons)} {5 * len(polygons)}",
                      *polygons, f"POINT_DATA {len(points)}", "SCALARS height float 1", "LOOKUP_TABLE default",
                      *heights, ""])


# -- what the VNC side needs --------------------------------------------------------------------------------

def missing_packages() -> list[str]:
    missing = [package for command, package in NEEDED.items() if not shutil.which(command)]
    if not NOVNC_PAGE.is_file():
        missing.append("novnc")
    return sorted(set(missing))


def quietly(step) -> None:
    try:
        step()
    except Exception:
        pass


def install() -> None:
    print(APT_LINE, flush=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES],
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), check=True)


def kill_under(directory: Path) -> None:
    """Stop whatever still runs from a desktop's directory (the desktop's children outlive a job at times)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(line.split(":", 1)[0]) for line in processes_under(directory)]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not pids:
            return
        time.sleep(0.5)


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")
            time.sleep(0.05)




# -- in the browser -----------------------------------------------------------------------------------------

class Probe:
    """One browser context and page with the probe and a websocket byte counter."""

    def __init__(self, browser, selectors: list[str]):
        import json

        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.add_init_script(f"window.__probeSelectors = {json.dumps(selectors)};\n{PROBE_JS}")
        self.page = self.context.new_page()
        self.page.set_default_timeout(READY_S * 1000)
        self.frames: list[tuple[float, int]] = []   # (time.time(), payload bytes) of each websocket message
        self.rpcs: list[tuple[float, str, dict]] = []   # wslink's render calls and their answers, for --why
        self.page.on("websocket", self._socket)

    def _socket(self, ws) -> None:
        def count(payload, sent: bool) -> None:
            now = time.time()
            self.frames.append((now, len(payload)))
            # wslink's calls of the quick view's loop and their answers (an answer is small, or carries an image)
            if isinstance(payload, str) and (
                    (sent and ('"viewport.image.render"' in payload or '"viewport.mouse.interaction"' in payload
                               or f'"{INTERACT}"' in payload))
                    or (not sent and (len(payload) < 2000 or '"workTime"' in payload))):
                self.rpcs.append((now, "sent" if sent else "received", wslink_summary(payload)))

        ws.on("framereceived", lambda payload: count(payload, False))
        ws.on("framesent", lambda payload: count(payload, True))

    def close(self) -> None:
        try:
            self.context.close()
        except Exception:   # the browser already gone (Ctrl-C, SIGTERM): the rest of the clean-up goes on
            pass

    def probe(self, what: str):
        return self.page.evaluate(f"window.__probe.{what}")

    def wait_first_picture(self) -> float:
        """Epoch seconds of the first picture with the data on it."""
        self.page.wait_for_function("window.__probe && window.__probe.first !== null", timeout=READY_S * 1000,
                                    polling=100)
        return self.probe("first") / 1000

    def centre(self, selectors: list[str]) -> tuple[float, float]:
        """The data's middle on the page: the red cap's centroid in the view's box."""
        box = None
        for s in selectors:
            loc = self.page.locator(s).first
            if loc.count():
                box = loc.bounding_box()
                if box:
                    break
        cx, cy = self.probe("cx"), self.probe("cy")
        return box["x"] + cx * box["width"], box["y"] + cy * box["height"]

    def settle(self, quiet: float = 0.4, timeout: float = 4.0) -> None:
        """Until the picture has not changed for ``quiet`` seconds (a still frame after a drag, a clock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = (self.probe("changes.at(-1)") or 0) / 1000
            if time.time() - last >= quiet:
                return
            self.page.wait_for_timeout(100)

    def rotate(self, centre, seconds: float) -> tuple[float, float, float, float, list[float]]:
        """Drag circles around ``centre`` for ``seconds``: frames per second, websocket bytes per second, the
        drag's start and end, the moments the picture changed during it."""
        mouse = self.page.mouse
        mouse.move(*circle(centre, CIRCLE_PX, 0))
        self.settle()
        mouse.down()
        start = time.time()
        step = 0
        while time.time() - start < seconds:
            step += 1
            mouse.move(*circle(centre, CIRCLE_PX, step))
            time.sleep(0.015)
        end = time.time()
        mouse.up()
        self.page.wait_for_timeout(300)   # the last messages' events reach this side
        changes = self.probe("changes")
        changes = [t / 1000 for t in changes if start <= t / 1000 < end]
        sent = sum(n for t, n in self.frames if start <= t < end)
        return (frames_between(changes, start, end, SAME_PICTURE_S) / (end - start), sent / (end - start), start, end,
                changes)

    def latencies(self, centre, samples: int) -> list[float]:
        """Mouse moves with the button held, each after the picture has settled: time to the next picture."""
        mouse = self.page.mouse
        x, y = centre
        mouse.move(x, y)
        self.settle()
        mouse.down()
        found = []
        try:
            for k in range(samples):
                self.settle(quiet=0.4)
                before = len(self.probe("inputs"))
                x += 14 if k % 2 == 0 else -14
                mouse.move(x, y + (6 if k % 4 < 2 else -6))
                deadline = time.monotonic() + 5
                changed = None
                while time.monotonic() < deadline and changed is None:
                    self.page.wait_for_timeout(20)
                    inputs = self.probe("inputs")
                    if len(inputs) > before:
                        changed = first_change_after(self.probe("changes"), inputs[before])
                if changed is not None:
                    found.append((changed - inputs[before]) / 1000)
        finally:
            quietly(mouse.up)
        return found


def delayed_link(target: tuple[str, int], round_trip_ms: float, undo: Teardown) -> DelayedLink:
    """A DelayedLink (--link-delay) to ``target``, stopped with the bench."""
    link = DelayedLink(target, round_trip_ms).start()
    undo.add(link.stop, f"stop the delayed link to {target[0]}:{target[1]}")
    return link


# -- the three paths ----------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, cluster, svc, browser, work: Path, data: Path, undo: Teardown):
        self.args, self.cluster, self.svc, self.browser = args, cluster, svc, browser
        self.work, self.data, self.undo = work, data, undo
        self.env = dict(os.environ, **cluster.environment())
        self.count = 0
        self.page_url = svc.url   # the browser's way to pvhpc (main() puts a --link-delay link in between)


    def measure(self, name: str, probe: Probe, selectors: list[str], requested: float,
                renders: Path | None = None, steps: dict | None = None) -> Run:
        """``renders``: where the VNC desktop's ParaView notes the time of each render it makes; ``steps``:
        moments on the way to the first picture (seconds after the request), printed with the run."""
        first = probe.wait_first_picture() - requested
        probe.settle(quiet=0.5, timeout=10)
        centre = probe.centre(selectors)
        fps, rate, start, end, changes = probe.rotate(centre, self.args.seconds)
        why = {**(steps or {}), **render_calls(probe.rpcs, start, end)}
        if renders is not None:
            # A picture on screen is at most one of ParaView's renders: VNC may show one render in several
            # updates further apart than SAME_PICTURE_S, so its rate is capped at ParaView's own.
            made = renders_between(renders.read_text() if renders.is_file() else "", start, end) / (end - start)
            why["pictures_per_s"], why["renders_per_s"] = fps, made
            fps = min(fps, made)
        gaps = [b - a for a, b in zip(changes, changes[1:])]
        if gaps:   # pictures that follow each other within 20 ms: one render shown in parts (VNC's rectangles)
            why["close_share"] = sum(1 for g in gaps if g < SAME_PICTURE_S) / len(gaps)
        probe.settle(quiet=0.5, timeout=10)
        lat_start = time.time()
        latencies = probe.latencies(probe.centre(selectors), self.args.samples)
        moves = render_calls(probe.rpcs, lat_start, time.time())
        if moves:   # the render calls of the latency moves: how many each move took, how many came back stale
            why["calls_per_move"] = moves["calls"] / max(1, len(latencies))
            why["move_stale_share"] = moves["stale_share"]
        size = tuple(probe.probe("size") or (0, 0))
        if self.args.shots:
            probe.page.screenshot(path=str(self.args.shots / f"{self.count:02d}-{name.split()[-1].strip('()')}.png"))
        return Run(name, first, fps, latencies, rate, size, why)

    def quick_view(self, before: Path | None = None) -> Run:
        """``before``: the page's viewer.js replaced by this file (an older one), the same run's other server."""
        selectors = ["#viewer-image"]
        probe = Probe(self.browser, selectors)
        if before is not None:
            # (any ?v=: the page asks for its modules by content hash)
            probe.context.route(lambda url: url.split("?")[0].endswith("/static/viewer.js"), lambda route: route.fulfill(
                body=before.read_text(), content_type="text/javascript"))
        try:
            probe.page.goto(self.page_url + "/")
            probe.page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            probe.page.select_option("#application", "paraview")
            probe.page.select_option("#partition", "cpu")
            probe.page.fill("#data", str(self.data))
            requested = time.time()
            probe.page.click("#launch-button")
            probe.page.wait_for_selector('#session-state[data-state="ready"]', timeout=READY_S * 1000)
            steps = {"session_ready_s": time.time() - requested}
            return self.measure(QUICK_BEFORE if before else QUICK, probe, ["#viewer"], requested, steps=steps)
        finally:
            self.after_run(probe.close, self.end_sessions)

    def visualizer(self) -> Run:
        selectors = ['[class*="MainView-viewport"] img', '[class*="MainView-viewport"] canvas']
        probe = Probe(self.browser, selectors)
        try:
            requested = time.time()
            probe.page.goto(f"{self.page_url}/apps/visualizer/?partition=cpu&data={DATA_FILE}")
            return self.measure(VISUALIZER, probe, ['[class*="MainView-viewport"]'], requested)
        finally:
            self.after_run(probe.close, self.end_sessions)

    def vnc(self) -> Run:
        self.count += 1
        directory = self.work / f"vnc-{self.count}"
        directory.mkdir(mode=0o700)
        self.undo.add(lambda: kill_under(directory), f"stop what is left of VNC desktop {self.count}")
        argv = ["sbatch", "--parsable", "--partition=cpu", "--time=30", "--job-name=vnc-desktop",
                f"--output={directory / 'job.out'}", str(JOB_SCRIPT), str(directory), str(self.data)]
        probe = Probe(self.browser, ["#noVNC_canvas", "canvas"])
        job_id = None
        try:
            requested = time.time()
            job_id = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                    check=True).stdout.strip().split(";")[0]
            connection = directory / "connection"
            deadline = time.monotonic() + READY_S
            while not connection.is_file():   # what OnDemand's card waits for (connection.yml)
                if time.monotonic() > deadline:
                    out = directory / "job.out"
                    raise RuntimeError(f"the VNC job wrote no connection file in {READY_S} s: "
                                       + (out.read_text()[-600:] if out.is_file() else "(no output)"))
                time.sleep(0.05)
            steps = {"connection_file_s": time.time() - requested}
            info = dict(line.split("=", 1) for line in connection.read_text().split())
            host = self.cluster.node_address(info["host"])
            wait_port(host, int(info["port"]), 30)
            where = f"{host}:{info['port']}"
            if self.args.link_delay:
                where = f"127.0.0.1:{delayed_link((host, int(info['port'])), self.args.link_delay, self.undo).port}"
            probe.page.goto(f"http://{where}/vnc.html?autoconnect=true&resize=off"
                            f"&password={info['password']}")
            return self.measure(VNC, probe, ["#noVNC_canvas", "canvas"], requested, directory / "renders.log",
                                steps)
        finally:
            def end_job():
                if job_id:
                    subprocess.run(["scancel", job_id], env=self.env, capture_output=True)
                wait_idle(self.env)
                kill_under(directory)

            self.after_run(probe.close, end_job)

    @staticmethod
    def after_run(*steps) -> None:
        """A run's own clean-up. After an error or an interruption (Ctrl-C reaches the service and Chromium too)
        a step that fails is passed over: the teardown removes everything anyway, and the cause is what to
        report."""
        failing = sys.exc_info()[0] is not None
        for step in steps:
            if failing:
                quietly(step)
            else:
                step()

    def end_sessions(self) -> None:
        client = self.svc.client()
        for s in client.list():
            if s["state"] != "ended":
                client.cancel(s["id"])
        wait_idle(self.env)


# -- report -------------------------------------------------------------------------------------------------

FIGURES = (  # (title, unit, value of a run, higher is better)
    ("request to first picture", "s", lambda r: r.first_picture, False),
    ("frames/s while rotating", "frames/s", lambda r: r.fps, True),
    ("input to picture", "ms", lambda r: r.latency * 1000, False),
    ("websocket bytes/s while rotating", "KB/s", lambda r: r.bytes_per_s / 1000, False),
)


def median_of(runs: list[Run], value) -> float:
    values = [v for v in (value(r) for r in runs) if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def print_results(runs: dict[str, list[Run]]) -> None:
    vnc = runs[VNC]
    print(f"\n{len(runs[next(iter(runs))])} rounds (the VNC desktop {len(vnc)} runs); medians (min-max)")
    print(f"{'path':<24}" + "".join(f"{t + ', ' + u:>40}" for t, u, _, _ in FIGURES) + f"{'picture px':>14}")
    for name, done in runs.items():
        cells = []
        for _, _, value, _ in FIGURES:
            cells.append(spread([value(r) for r in done], "{:.3f}" if value(done[0]) < 10 else "{:.1f}"))
        size = done[-1].picture
        print(f"{name:<24}" + "".join(f"{c:>40}" for c in cells) + f"{f'{size[0]}x{size[1]}':>14}")
    print("\npvhpc against the VNC desktop (> 1: pvhpc better; times VNC/pvhpc, rates pvhpc/VNC; bytes VNC/pvhpc)")
    for name, done in runs.items():
        if name == VNC:
            continue
        print(f"{name:<24}" + "".join(
            f"   {t}: {speedup(median_of(done, value), median_of(vnc, value), better):.2f}x"
            for t, _, value, better in FIGURES))


def plot(runs: dict[str, list[Run]], path: Path) -> None:
    from bench.report import pyplot, save

    plt = pyplot()
    names = list(runs)
    colors = {QUICK: "#3182bd", QUICK_BEFORE: "#9ecae1", VISUALIZER: "#6baed6", VNC: "#fd8d3c"}
    fig, axes = plt.subplots(1, len(FIGURES), figsize=(15, 3.2))
    for ax, (title, unit, value, better) in zip(axes, FIGURES):
        medians = [median_of(runs[n], value) for n in names]
        lows = [m - min(value(r) for r in runs[n]) for m, n in zip(medians, names)]
        highs = [max(value(r) for r in runs[n]) - m for m, n in zip(medians, names)]
        ax.barh(names, medians, color=[colors[n] for n in names], xerr=[lows, highs], capsize=3)
        for y, m in enumerate(medians):
            ax.text(0, y - 0.3, f" {m:.3g}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{title}\n({'higher' if better else 'lower'} is better)", fontsize=9)
        ax.set_xlabel(unit)
        if ax is not axes[0]:
            ax.set_yticks([])
    fig.suptitle(f"pvhpc against ParaView's GUI in a VNC desktop, same data and partition "
                 f"({len(runs[names[0]])} rounds; medians, min-max)", fontsize=10)
    save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, each path once per round (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--seconds", type=float, default=4, help="rotating drag per run (default 4 s)")
    parser.add_argument("--samples", type=int, default=9, help="mouse moves for the latency (default 9)")
    parser.add_argument("--resolution", type=int, default=160, help="the sphere's rings (default 160)")
    parser.add_argument("--paths", default="quick,visualizer,vnc",
                        help="which paths (default all three; 'before' is the quick view with --before's viewer.js)")
    parser.add_argument("--before", type=Path,
                        help="an earlier pvhpc/web/static/viewer.js (git show REV:pvhpc/web/static/viewer.js > FILE) "
                             "for the path 'before': a change of the quick view measured in the same run")
    parser.add_argument("--link-delay", type=float, default=0, metavar="MS",
                        help="the browser reaches pvhpc and the VNC desktop over a link with this round trip "
                             "(a relay that holds what it carries; default 0: straight)")
    parser.add_argument("--plot", type=Path, help="draw the figure into this PNG file")
    parser.add_argument("--shots", type=Path, help="keep a screenshot of each run's page here")
    parser.add_argument("--single-host", action="store_true",
                        help="the cluster's nodes as processes of this host (default: hosts of their own, as root)")
    parser.add_argument("--install", action="store_true", help=f"install the VNC side first: {APT_LINE}")
    args = parser.parse_args()
    if "before" in args.paths and not (args.before and args.before.is_file()):
        parser.error("the path 'before' needs --before FILE (an earlier viewer.js)")
    if args.install:
        install()
    missing = missing_packages()
    if missing:
        print(f"missing for the VNC desktop: {', '.join(missing)}; install with --install or, as root:\n"
              f"  {APT_LINE}", file=sys.stderr)
        return 2
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)

    from pvhpc import config as site_config_parser
    from tests.harness.browser import chromium
    from tests.harness.service import ServiceProcess, site_config

    work = Path(tempfile.mkdtemp(prefix="pvhpc-vs-vnc-"))
    work.chmod(0o755)
    with Teardown(work) as undo:
        undo.add(lambda: shutil.rmtree(work, ignore_errors=True), "remove the work directory")
        cluster, runtime_dir = start_bench_cluster(undo, work, args.single_host)
        data_dir = work / "svc" / "data"
        data_dir.mkdir(parents=True)
        data = data_dir / DATA_FILE
        data.write_text(sphere_vtk(args.resolution))
        data_dir.chmod(0o755)
        apps = {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 120}}
        apps.update({name: {**app, "start_timeout": 120}
                     for name, app in site_config_parser.visualizer_application([str(data_dir)]).items()})
        wanted = {"quick": QUICK, "before": QUICK_BEFORE, "visualizer": VISUALIZER, "vnc": VNC}
        chosen = [wanted[p.strip()] for p in args.paths.split(",")]
        if VISUALIZER in chosen and "visualizer" not in apps:
            print("the Visualizer is not installed (pvhpc runtime install): left out", file=sys.stderr)
            chosen.remove(VISUALIZER)
        frontend = {"kind": "builtin"}
        if args.link_delay:   # the sessions' websockets through the page's own address: the delayed link's
            frontend["session_url"] = "ws://USE_HOST/proxy?sessionId={id}&path=ws"
        config = site_config(cluster, work / "svc", runtime_dir, frontend=frontend, poll_interval=5,
                             launcher_wait=READY_S - 10, applications=apps)
        svc = ServiceProcess(work / "svc", config)
        page_url = svc.url
        if args.link_delay:   # its port known, the service told that pages come from the link's origin
            page_url = f"http://127.0.0.1:{delayed_link(('127.0.0.1', svc.port), args.link_delay, undo).port}"
            config["service"]["allowed_origins"] = [page_url]
            svc = ServiceProcess(work / "svc", config)
        undo.add(svc.stop, "stop the service")
        svc.start()
        with chromium() as browser:
            bench = Bench(args, cluster, svc, browser, work, data, undo)
            bench.page_url = page_url
            do = {QUICK: bench.quick_view, QUICK_BEFORE: lambda: bench.quick_view(args.before),
                  VISUALIZER: bench.visualizer, VNC: bench.vnc}
            runs: dict[str, list[Run]] = {name: [] for name in chosen}
            for r in range(args.warmup + args.rounds):
                label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.rounds}"
                sequence = interleaved(chosen)
                for name in (sequence if r % 2 == 0 else sequence[::-1]):
                    run = do[name]()
                    print(f"{label:>12}  {name:<22} first picture {run.first_picture:6.2f} s  {run.fps:5.1f} frames/s"
                          f"  input to picture {run.latency * 1000:6.0f} ms  {run.bytes_per_s / 1000:8.1f} KB/s"
                          f"  ({run.picture[0]}x{run.picture[1]} px)", flush=True)
                    if run.why:
                        print(" " * 14 + "  ".join(f"{k} {v:.3g}" for k, v in run.why.items()), flush=True)
                    if r >= args.warmup:
                        runs[name].append(run)
        if VNC in runs and len(runs) > 1:
            print_results(runs)
        if args.plot:
            plot(runs, args.plot)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM, SIGHUP: everything started has been removed by now
        print(f"interrupted ({str(e) or 'SIGINT'}); everything it started is removed", file=sys.stderr)
        sys.exit(130)
