"""Small helpers for tests: running the pvhpc command as a user would, reading a job's output, judging a rendered
image, finding a job's processes and leftovers, sample data (a minimal site config, a parallel partition, a session
record, VTK files), and the request load of the fault drills.

The real components themselves (cluster, service, Apache, sshd, PostgreSQL) are in tests/harness/.
"""

from __future__ import annotations

import asyncio
import colorsys
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def run(coro):
    """Run one coroutine to its end, in a loop of its own."""
    import asyncio

    return asyncio.run(coro)


# The least a site config needs to parse: one partition, one application.
MINIMAL_SITE = {"partitions": {"gpu": {"gpu_type": "a100", "gpus": {"max": 2}}},
                "applications": {"paraview": {"data_roots": ["/tmp"]}}}
# Partition cpu of the test cluster for parallel sessions (cpu01 and cpu02), and the pvserver they run.
PARALLEL_CPU = {"walltime": {"default": 30, "max": 120}, "max_nodes": 2, "max_ranks": 4, "max_ranks_per_node": 2}
PVSERVER = ["/usr/bin/pvserver", "--force-offscreen-rendering"]
# A display for a ParaView started by a test itself (not by a session's job). -noreset: without it Xvfb resets
# when its first client disconnects, and ParaView opens the display more than once at start, so a start under load
# now and then found it resetting: "bad X server connection", SIGABRT, exit 134 (2.5 % of 360 starts with two busy
# loops beside them, none of 120 with it). The sessions' job script starts its Xvfb so for the same reason.
XVFB_RUN = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24 -noreset"]


def pvhpc(*args, url: str | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the pvhpc command as a user would, with nothing from this machine's own client config."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), PVHPC_CLIENT_CONFIG=str(REPO / "no-such-client.yaml"))
    for name in ("PVHPC_URL", "PVHPC_TOKEN", "PVHPC_LOGIN_HOST"):
        full_env.pop(name, None)
    if url:
        full_env["PVHPC_URL"] = url
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pvhpc", *map(str, args)], env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def as_json(proc: subprocess.CompletedProcess):
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\nstderr:\n{proc.stderr}") from None


def session_record(i: int = 0, **kw):
    """A store row of session ``s<i>``, submitting, for alice; ``kw`` replaces any field."""
    from pvhpc.db.store import SessionRecord
    from pvhpc.jobs.states import SessionState

    fields = dict(id=f"s{i}", user="alice", application="paraview", partition="gpu", gpus=1, walltime_minutes=60,
                  request_key="k", state=SessionState.SUBMITTING.value, detail="", job_name=f"pvhpc-{i}", secret="x",
                  report_token_hash="h")
    fields.update(kw)
    return SessionRecord(**fields)


def wait_for_line(path: Path, pattern: str, timeout: float = 90, explain=None) -> re.Match:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        m = regex.search(text)
        if m:
            return m
        time.sleep(0.2)
    extra = f"\n{explain()}" if explain else ""
    raise AssertionError(f"{pattern!r} not in {path} within {timeout} s; it holds:\n{text[-2000:]}{extra}")


def foreground_fraction(jpeg: bytes) -> float:
    """Share of pixels that differ clearly from the corner pixel (the view's background)."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    background = image.getpixel((0, 0))
    pixels = image.tobytes()
    differ = 0
    for i in range(0, len(pixels), 3):
        if sum(abs(pixels[i + k] - background[k]) for k in range(3)) > 60:
            differ += 1
    return differ / (image.width * image.height)


def processes_of_job(job_id: str) -> list[str]:
    """Processes started inside a Slurm job, found by SLURM_JOB_ID in their environment."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in env and cmd:
            found.append(f"{pid}: {cmd}")
    return found


def processes_of_cluster_job(cluster, job_id: str) -> list[str]:
    """processes_of_job, for this cluster's job only: other test runs on the machine number their jobs from 1 too."""
    conf = f"SLURM_CONF={cluster.environment()['SLURM_CONF']}".encode()
    found = []
    for line in processes_of_job(job_id):
        try:
            if conf in Path(f"/proc/{line.split(':', 1)[0]}/environ").read_bytes().split(b"\0"):
                found.append(line)
        except OSError:
            continue
    return found


def processes_of_this_job(cluster, job_id: str) -> list[tuple[int, str, dict[str, str]]]:
    """The job's processes (pid, command, environment) on this cluster: other clusters on the machine number
    their jobs alike, and the local cluster gives each of its nodes a TMPDIR of its own, under its directory."""
    found = []
    for entry in processes_of_job(job_id):
        pid, cmd = entry.split(": ", 1)
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)
        if env.get("TMPDIR", "").startswith(f"{cluster.dir}/"):
            found.append((int(pid), cmd, env))
    return found


def job_processes_by_node(cluster, job_id: str, name: str) -> dict[str, int]:
    """How many processes called ``name`` the job runs on each emulated node (SLURMD_NODENAME of each)."""
    found: dict[str, int] = {}
    for _, cmd, env in processes_of_this_job(cluster, job_id):
        if os.path.basename(cmd.split()[0]) == name:
            found[env.get("SLURMD_NODENAME", "?")] = found.get(env.get("SLURMD_NODENAME", "?"), 0) + 1
    return found


def servers_of(cluster, job_id: str) -> list[str]:
    return [f"{pid}: {cmd}" for pid, cmd, _ in processes_of_this_job(cluster, job_id)
            if any(n in cmd for n in ("pvserver", "pvpython", "orted"))]


def wait_no_server_left(cluster, job_id: str, timeout: float = 30) -> None:
    try:
        wait_until(lambda: not servers_of(cluster, job_id), timeout,
                   message="no pvserver, orted or pvpython of the job")
    except AssertionError as e:
        raise AssertionError(f"{e}; left: {servers_of(cluster, job_id)}") from None


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout} s")


async def render_async(url: str, secret: str, headers: dict | None = None, source: str = "Sphere",
                       size=(320, 240)) -> bytes:
    """Connect to a session as a ParaViewWeb client does, make a source, and return one rendered JPEG."""
    from pvhpc.client.wslink import WslinkClient

    client = await WslinkClient.connect(url, secret, headers=headers)
    try:
        await client.create_source(source)
        return await client.render(size)
    finally:
        client.close()


def render(url: str, secret: str, headers: dict | None = None, source: str = "Sphere") -> bytes:
    import asyncio

    return asyncio.run(render_async(url, secret, headers, source))


async def new_image(client: WslinkClient, previous: bytes | None, timeout: float = 30) -> bytes:
    """The view once it shows the last step: a frame pushed just before the step may still be on its way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        image = await client.push_image((400, 300))
        if image != previous or loop.time() > deadline:
            return image
        await asyncio.sleep(0.5)


def write_blob(path, n=24):
    """A legacy VTK image whose scalar is the distance from its centre: a Contour of it is a sphere."""
    c = (n - 1) / 2
    rows = [" ".join(f"{((i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2) ** 0.5:.3f}" for i in range(n))
            for k in range(n) for j in range(n)]
    path.write_text(f"# vtk DataFile Version 3.0\nblob\nASCII\nDATASET STRUCTURED_POINTS\nDIMENSIONS {n} {n} {n}\n"
                    f"ORIGIN 0 0 0\nSPACING 1 1 1\nPOINT_DATA {n ** 3}\nSCALARS distance float 1\n"
                    "LOOKUP_TABLE default\n" + "\n".join(rows) + "\n")


def write_series(directory, n=16, steps=3):
    """wave_0.vtk .. wave_2.vtk: a distance field whose centre moves along x from step to step (time), with a
    second field (a gradient) to colour by."""
    directory.mkdir(parents=True, exist_ok=True)
    c = (n - 1) / 2
    for t in range(steps):
        x0 = c + 3 * (t - 1)
        distance = [f"{((i - x0) ** 2 + (j - c) ** 2 + (k - c) ** 2) ** 0.5:.3f}"
                    for k in range(n) for j in range(n) for i in range(n)]
        gradient = [f"{i + 2 * j:.1f}" for k in range(n) for j in range(n) for i in range(n)]
        (directory / f"wave_{t}.vtk").write_text("\n".join([
            "# vtk DataFile Version 3.0", "moving blob", "ASCII", "DATASET STRUCTURED_POINTS",
            f"DIMENSIONS {n} {n} {n}", "ORIGIN 0 0 0", "SPACING 1 1 1", f"POINT_DATA {n ** 3}",
            "SCALARS distance float 1", "LOOKUP_TABLE default", " ".join(distance),
            "SCALARS gradient float 1", "LOOKUP_TABLE default", " ".join(gradient), ""]))


# -- for fault drills ------------------------------------------------------------------------------

class Answer:
    """One request of a RequestLoad: what was asked, when, how long it took and what came back."""

    __slots__ = ("name", "started", "seconds", "status", "body", "json")

    def __init__(self, name: str, started: float, seconds: float, status: int, body: bytes):
        import json

        self.name, self.started, self.seconds, self.status, self.body = name, started, seconds, status, body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def clean(self) -> bool:
        """A success, or an error as pvhpc promises them: JSON with an "error" key (0: no answer at all)."""
        if self.status == 0:
            return False
        return self.status < 400 or (isinstance(self.json, dict) and "error" in self.json)

    def __repr__(self) -> str:
        return f"<{self.name} at {self.started:.1f}: {self.status} in {self.seconds:.2f} s {self.body[:120]!r}>"


class RequestLoad:
    """Client threads that keep sending requests to a service and record every answer.

    ``add(name, method, path, body, every)`` starts one thread that repeats a
    request, pausing ``every`` seconds between the end of one and the start of
    the next. A refused or dropped connection is recorded with status 0.
    """

    def __init__(self, url: str, timeout: float = 15):
        import threading

        self.url, self.timeout = url.rstrip("/"), timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._sending: dict[int, tuple[str, float]] = {}   # thread -> the request it waits on (name, since)

    def add(self, name: str, method: str, path: str, body: dict | None = None, every: float = 0.5) -> "RequestLoad":
        import threading

        thread = threading.Thread(target=self._loop, args=(name, method, path, body, every), daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def _loop(self, name, method, path, body, every) -> None:
        import json
        import threading
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        while not self._stop.is_set():
            request = urllib.request.Request(self.url + path, data=data, method=method,
                                             headers={"Content-Type": "application/json"})
            started = time.monotonic()
            me = threading.get_ident()
            self._sending[me] = (name, started)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as r:
                    status, answer = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, answer = e.code, e.read()
            except OSError as e:   # refused, reset, timed out: no answer
                status, answer = 0, str(e).encode()
            with self._lock:
                del self._sending[me]
                self.answers.append(Answer(name, started, time.monotonic() - started, status, answer))
            self._stop.wait(every)

    def in_flight(self, name: str, since: float = 0.01) -> bool:
        """Whether a request of ``name`` has been on its way for at least ``since`` seconds, unanswered."""
        now = time.monotonic()
        return any(n == name and now - t >= since for n, t in list(self._sending.values()))

    def count(self, name: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if (name is None or a.name == name)
                       and (status is None or a.status == status))

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return list(self.answers)


async def render_by_process(url: str, secret: str, size=(400, 400), pushed: bool = False,
                            headers: dict | None = None) -> bytes:
    """A parallel session's sphere split over the ranks, each piece coloured by the rank that holds it
    (ProcessIdScalars). ``pushed``: the image as servers that only push frames deliver it (the Visualizer)."""
    from pvhpc.client.wslink import WslinkClient

    client = await WslinkClient.connect(url, secret, headers=headers)
    try:
        sphere = await client.call("pv.proxy.manager.create", ["Sphere", -1])
        await client.call("pv.proxy.manager.update", [[
            {"id": sphere["id"], "name": "ThetaResolution", "value": 64},
            {"id": sphere["id"], "name": "PhiResolution", "value": 64}]])
        ids = await client.call("pv.proxy.manager.create", ["Process ID Scalars", sphere["id"]])
        listed = await client.call("pv.proxy.manager.list", [-1])
        rep = next(source["rep"] for source in listed["sources"] if source["id"] == ids["id"])
        await client.call("pv.color.manager.color.by", [rep, "ARRAY", "POINTS", "ProcessId", "Magnitude", 0, True])
        # Jet: blue, cyan, yellow, red for four ranks, hues far apart.
        await client.call("pv.color.manager.select.preset", [rep, "Jet"])
        if pushed:
            await client.call("viewport.camera.reset", [-1])
            return await client.push_image(size)
        return await client.render(size, quality=95)
    finally:
        client.close()


def hues(jpeg: bytes, share: float = 0.02) -> list[list[int]]:
    """The distinct colours of an image: runs of neighbouring 20-degree hue bins, each bin holding at least
    ``share`` of the saturated pixels (shading changes brightness, not hue; the background is grey)."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    bins = [0] * 18
    for r, g, b in image.get_flattened_data():
        h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        if s > 0.5 and v > 0.25:
            bins[int(h * 18) % 18] += 1
    full = [n >= share * sum(bins) > 0 for n in bins]
    runs: list[list[int]] = []
    for i in range(18):
        if full[i]:
            if runs and runs[-1][-1] == (i - 1) * 20:
                runs[-1].append(i * 20)
            else:
                runs.append([i * 20])
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == 340:   # hue is a circle
        runs[0] = runs.pop() + runs[0]
    return runs
