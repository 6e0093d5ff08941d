"""Time to first frame on an idle cluster: pvhpc's launcher against the floor of a bare sbatch.

    /opt/pvhpc/venv/bin/python bench/first_frame.py [--rounds 5] [--apache] [--plot docs/img/first-frame.png]

What a user waits for is the first image, not the job id: from the request to
a rendered frame on their screen. Most of that is the job itself (Slurm starts
it, Xvfb and pvpython start, ParaView renders); pvhpc's own share is what it adds
on top. This measures both in the same run, on a private local cluster (cpu
partition, nothing else queued), alternating the paths round by round:

  floor        the same job script (rendered by pvhpc for the same request)
               submitted with a bare ``sbatch`` of the same options; its ready
               report goes to a stub that only notes the arrival; the client
               then connects straight to ws://node:port/ws
  launcher     POST /paraview/ to a pvhpc service (built-in front end), then
               the sessionURL it answers with, through the built-in proxy
  Apache       (--apache) the same through Debian's apache2 in front of a
               second service (front end ``apache``: RewriteMap + wstunnel;
               no login configured in Apache, the service's auth is ``local``)

Each path ends with the same first render: create a Sphere, render one JPEG.
Each time is split at three moments: sbatch has answered (for pvhpc, the
session's "queued" entry in its history), the job's ready report leaves the
node (the job helper prints ``PVHPC_READY ... at=<time>`` in the job's output),
and the client has the session's URL. Between the first two is Slurm starting
the job and the job starting ParaView: the same work in every path, and the
noisiest step (slurmctld starts a batch job at its next scheduling pass, which
comes in whole-second steps). pvhpc's own share is in the other three steps.
The service polls Slurm every --poll-interval seconds (the site default, 5):
were the launcher waiting on a poll rather than on the job's report, its
share would grow by half that on average.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import spread  # noqa: E402
from bench.teardown import Teardown, start_bench_cluster, wait_idle  # noqa: E402
from pvhpc import config as site_config_parser  # noqa: E402
from pvhpc.scheduler.slurm_cli import SlurmCLI  # noqa: E402
from pvhpc.sessions.job import build_job  # noqa: E402
from pvhpc.sessions.spec import parse_spec  # noqa: E402

REQUEST = {"application": "paraview", "partition": "cpu"}
# Where a run's time goes. The second step is Slurm and the job itself (the same script in every path);
# pvhpc takes part in the other three.
PHASES = ("request -> job queued", "queued -> server up", "server up -> client has URL", "URL -> first image")
SLURM_PHASE = 1


@dataclass
class Run:
    path: str
    requested: float     # time.time() of each moment
    queued: float        # sbatch has answered (pvhpc: the session's "queued" history entry)
    report_sent: float   # the job helper's PVHPC_READY at=
    url_known: float
    first_image: float

    @property
    def phases(self) -> tuple[float, ...]:
        moments = (self.requested, self.queued, self.report_sent, self.url_known, self.first_image)
        return tuple(b - a for a, b in zip(moments, moments[1:]))

    @property
    def total(self) -> float:
        return self.first_image - self.requested


def report_time(job_output: str) -> float:
    return float(re.search(r"PVHPC_READY .* at=([\d.]+)", job_output).group(1))


class ReportStub:
    """Stands in for pvhpc's report endpoint on the floor: notes when each job's report arrives, checks nothing."""

    def __init__(self, address: str):
        """``address``: where the nodes reach this machine (the login side's address on the cluster of hosts)."""
        self.reports: dict[str, list[tuple[float, dict]]] = {}
        self.arrived = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                at = time.time()
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                session_id = self.path.rstrip("/").split("/")[-2]   # /api/v1/sessions/<id>/report
                with stub.arrived:
                    stub.reports.setdefault(session_id, []).append((at, payload))
                    stub.arrived.notify_all()
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{address}:{self.server.server_address[1]}"

    def _outcome(self, session_id: str) -> tuple[float, dict] | None:
        return next(((at, p) for at, p in self.reports.get(session_id, []) if p.get("event") in ("ready", "failed")),
                    None)

    def wait_ready(self, session_id: str, timeout: float) -> tuple[float, dict]:
        """(arrival time, report) of the job's ready report."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: self._outcome(session_id), timeout):
                raise RuntimeError(f"no report from the floor's job within {timeout:.0f} s")
            at, payload = self._outcome(session_id)
        if payload["event"] != "ready":
            raise RuntimeError(f"the floor's job failed: {payload.get('reason')}")
        return at, payload

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def first_image(url: str, secret: str, size: tuple[int, int]) -> bytes:
    from tests.helpers import foreground_fraction, render_async

    image = asyncio.run(render_async(url, secret, size=size))
    if foreground_fraction(image) < 0.01:   # a blank frame would make every figure here meaningless
        raise RuntimeError("the first frame shows no sphere")
    return image


def floor_run(cfg, env: dict, stub: ReportStub, size, timeout: float) -> Run:
    """A bare sbatch of the job pvhpc would submit for the same request, then straight to the node."""
    spec = parse_spec(cfg, REQUEST, strict=True)
    session_id, secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    job = build_job(cfg, spec, getpass.getuser(), session_id, f"floor-{secrets.token_hex(8)}", secret,
                    secrets.token_urlsafe(32))
    requested = time.time()
    out = subprocess.run(SlurmCLI.sbatch_argv(job), input=job.script, env=env, capture_output=True, text=True,
                         check=True).stdout
    queued = time.time()
    job_id = out.strip().split(";")[0]
    try:
        url_known, report = stub.wait_ready(session_id, timeout)
        first_image(f"ws://{report['host']}:{report['port']}/ws", secret, size)
        done = time.time()
    finally:
        subprocess.run(["scancel", job_id], env=env, capture_output=True)
    return Run("floor", requested, queued, report_time(Path(job.output).read_text()), url_known, done)


def launcher_run(name: str, svc, base_url: str, size) -> Run:
    """POST /paraview/ as a ParaViewWeb client does, then the sessionURL it gets back."""
    from pvhpc.client.api import Client

    client = Client(base_url)
    requested = time.time()
    session = client.launch(**REQUEST)
    url_known = time.time()
    try:
        # USE_HOST is what the JavaScript client replaces with the page's host (Apache's front end).
        url = session["sessionURL"].replace("USE_HOST", base_url.split("://", 1)[1].rstrip("/"))
        first_image(url, session["secret"], size)
        done = time.time()
        log = svc.client().log(session["id"])
        history = svc.client().get(session["id"])["history"]
    finally:
        client.request("DELETE", f"/paraview/{session['id']}")
    # The service stamps its history in UTC, without a zone: the moment sbatch had answered it.
    queued = next(datetime.fromisoformat(e["at"].rstrip("Z")).replace(tzinfo=timezone.utc).timestamp()
                  for e in history if e["state"] == "queued")
    return Run(name, requested, queued, report_time(log), url_known, done)




def median_phase(runs: list[Run], i: int) -> float:
    return statistics.median(r.phases[i] for r in runs)


def print_results(runs: dict[str, list[Run]], size, rounds: int, poll_interval: float) -> None:
    floor = runs["floor"]
    floor_total = statistics.median(r.total for r in floor)
    print(f"\nTime to first frame ({size[0]}x{size[1]} JPEG) on an idle cluster, {rounds} rounds; "
          f"the service polls Slurm every {poll_interval:g} s")
    print(f"{'path':<26}{'seconds: median (min-max)':>28}{'vs floor':>10}")
    for name, done in runs.items():
        total = statistics.median(r.total for r in done)
        print(f"{name:<26}{spread([r.total for r in done], '{:.3f}'):>28}{total / floor_total:>9.2f}x")
    print("\nWhere the time goes, ms (medians; min-max under each)")
    print(f"{'path':<26}" + "".join(f"{p:>30}" for p in PHASES))
    for name, done in runs.items():
        print(f"{name:<26}" + "".join(f"{median_phase(done, i) * 1000:>30.0f}" for i in range(len(PHASES))))
        print(f"{'':<26}" + "".join(f"{min(r.phases[i] for r in done) * 1000:>22.0f}-"
                                    f"{max(r.phases[i] for r in done) * 1000:<7.0f}" for i in range(len(PHASES))))
    print(f"\nThe launcher's own share, against the floor's {floor_total * 1000:.0f} ms:")
    for name, done in runs.items():
        if name == "floor":
            continue
        total = statistics.median(r.total for r in done)
        steps = [median_phase(done, i) - median_phase(floor, i) for i in range(len(PHASES))]
        own = sum(d for i, d in enumerate(steps) if i != SLURM_PHASE)
        print(f"  {name:<24} median minus median {(total - floor_total) * 1000:+6.0f} ms "
              f"({(total - floor_total) / total:+.1%} of its time); in the steps pvhpc takes part in: "
              f"{own * 1000:+.0f} ms ({own / total:.1%}): " + ", ".join(
                  f"{PHASES[i].split(' -> ')[1]} {steps[i] * 1000:+.0f}"
                  for i in range(len(PHASES)) if i != SLURM_PHASE))


def plot(runs: dict[str, list[Run]], size, path: Path) -> None:
    from bench.report import pyplot, save

    plt = pyplot()

    names = list(runs)
    colors = ("#6baed6", "#d9d9d9", "#fd8d3c", "#74c476")
    fig, (whole, own) = plt.subplots(1, 2, figsize=(12, 1.9 + 0.6 * len(names)),
                                     gridspec_kw={"width_ratios": [3, 2]})
    # Left: the whole wait, stacked by step (medians), with the min-max of the total.
    left = [0.0] * len(names)
    for i, (phase, color) in enumerate(zip(PHASES, colors)):
        widths = [median_phase(runs[n], i) for n in names]
        whole.barh(names, widths, left=left, color=color, label=phase)
        left = [a + b for a, b in zip(left, widths)]
    totals = [[r.total for r in runs[n]] for n in names]
    medians = [statistics.median(t) for t in totals]
    whole.errorbar(medians, names, xerr=[[m - min(t) for m, t in zip(medians, totals)],
                                         [max(t) - m for m, t in zip(medians, totals)]],
                   fmt="none", ecolor="black", capsize=4, label="min-max of the total")
    for y, m in enumerate(medians):
        whole.text(0.05, y, f"{m:.2f} s", va="center", fontsize=8)
    whole.invert_yaxis()
    whole.set_xlabel("seconds from the request (medians, by step)")
    whole.set_title(f"Time to first frame, {size[0]}x{size[1]}, idle cluster ({len(runs['floor'])} rounds)")
    whole.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize=8)
    # Right: the steps pvhpc takes part in, in milliseconds.
    steps = [i for i in range(len(PHASES)) if i != SLURM_PHASE]
    height = 0.8 / len(steps)
    for k, i in enumerate(steps):
        ys = [y + (k - (len(steps) - 1) / 2) * height for y in range(len(names))]
        own.barh(ys, [median_phase(runs[n], i) * 1000 for n in names], height=height, color=colors[i],
                 label=PHASES[i])
    own.set_yticks(range(len(names)), names)
    own.invert_yaxis()
    own.set_xlabel("milliseconds (medians)")
    own.set_title("the steps pvhpc takes part in")
    own.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=1, fontsize=8)
    save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds, each path once per round (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--size", default="400x300", help="image size (default 400x300)")
    parser.add_argument("--apache", action="store_true", help="also through Debian's apache2 (needs root)")
    parser.add_argument("--poll-interval", type=float, default=5, help="the service's poll interval (default 5 s)")
    parser.add_argument("--plot", type=Path, help="draw the figure into this PNG file")
    parser.add_argument("--single-host", action="store_true",
                        help="the cluster's nodes as processes of this host (default: hosts of their own, as root)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    from tests.harness.apache import ApacheServer
    from tests.harness.ports import free_port_block
    from tests.harness.service import ServiceProcess, site_config

    work = Path(tempfile.mkdtemp(prefix="pvhpc-first-frame-"))
    work.chmod(0o755)   # Apache's workers (www-data) read the session map below it
    with Teardown(work) as undo:
        undo.add(lambda: shutil.rmtree(work, ignore_errors=True), "remove the work directory")
        cluster, runtime_dir = start_bench_cluster(undo, work, args.single_host)
        env = dict(os.environ, **cluster.environment())

        svc_config = site_config(cluster, work / "svc", runtime_dir, frontend={"kind": "builtin"},
                                 poll_interval=args.poll_interval)
        svc = ServiceProcess(work / "svc", svc_config)
        undo.add(svc.stop, "stop the service")
        svc.start()
        paths_to_run = {"launcher + builtin proxy": partial(launcher_run, "launcher + builtin proxy", svc, svc.url,
                                                            size)}

        # The floor: the same config, but the job reports to the stub.
        stub = ReportStub(cluster.login_address)
        undo.add(stub.close, "stop the report stub")
        floor_cfg = site_config_parser.parse(
            {**svc_config, "service": {**svc_config["service"], "callback_url": stub.url}}, "<floor>")
        paths_to_run["floor"] = partial(floor_run, floor_cfg, env, stub, size, timeout=120)

        if args.apache:
            from pvhpc.frontends import apacheconf

            httpd = work / "httpd"
            httpd.mkdir(mode=0o755)
            httpd.chmod(0o755)
            map_file = httpd / "session-map.txt"
            port = free_port_block(1)
            # The site's session URL goes into the service's config; the service's own URL then into Apache's.
            site = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port,
                                   access_log=httpd / "access.log")
            apache_config = site_config(cluster, work / "svc-apache", runtime_dir, poll_interval=args.poll_interval,
                                        frontend={"kind": "apache", "map_file": str(map_file),
                                                  "map_group": "www-data", "session_url": site.session_url})
            svc_apache = ServiceProcess(work / "svc-apache", apache_config)
            undo.add(svc_apache.stop, "stop the service behind Apache")
            svc_apache.start()
            site = apacheconf.Site("localhost", map_file, svc_apache.url, port=port, access_log=httpd / "access.log")
            apache = ApacheServer(httpd, site)
            undo.add(apache.stop, "stop Apache")
            apache.start()
            paths_to_run["launcher + Apache"] = partial(launcher_run, "launcher + Apache", svc_apache,
                                                        f"http://127.0.0.1:{port}", size)

        order = ["floor", "launcher + builtin proxy"] + (["launcher + Apache"] if args.apache else [])
        runs: dict[str, list[Run]] = {name: [] for name in order}
        for r in range(args.warmup + args.rounds):
            # Alternate the order, so no path always runs right after another's job has ended.
            for name in (order if r % 2 == 0 else order[::-1]):
                wait_idle(env)
                run = paths_to_run[name]()
                label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.rounds}"
                print(f"{label:>12}  {name:<26} total {run.total:6.3f} s  ("
                      + ", ".join(f"{p:.3f}" for p in run.phases) + ")", flush=True)
                if r >= args.warmup:
                    runs[name].append(run)
        print_results(runs, size, args.rounds, args.poll_interval)
        if args.plot:
            plot(runs, size, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
