"""200 users asking for sessions at once: the native API under a burst, against bare sbatch.

    /opt/pvhpc/venv/bin/python bench/burst.py [--users 200] [--spread 0] [--plot docs/img/burst.png]
        [--slurm 22.05] [--backend slurm|pyslurm] [--py-spy burst.svg]

A course starts, a workshop begins: many users ask for a session within a few
seconds. Each POST /api/v1/sessions records the session and answers once
sbatch has queued its job (201), so the API's latency and the rate of
submissions are pvhpc's, bounded by what slurmctld accepts. This measures, on
a private local cluster:

  burst      --users concurrent POST /api/v1/sessions to a pvhpc service with
             auth.kind ``header`` (each request a distinct user, as Apache
             would say), each on a connection of its own to the service's
             front-end socket, where Apache connects; scheduler.submit_as
             ``service`` (no Unix accounts needed), partition cpu
  baselines  the same jobs (the scripts and sbatch options pvhpc makes for the
             same request) submitted by bare sbatch: one after another, and
             all at once from as many threads

Both cpu nodes are first taken by a blocker job each, so every session job
just queues (no ParaView starts) and the cluster stays the same through the
run. After each burst it checks that every answer was 201, that no job was
submitted twice (the live Slurm jobs named pvhpc-* are exactly the sessions'
jobs, each session with its own job id), then ends every session through the
API (all at once again) and checks that no job is left in the queue. A round
is both baselines then the burst, against one service that keeps running;
--rounds of them give the spread, and each round's rate is set against the
sequential sbatch of the same round (the RATIO line: on a shared machine the
load moves between rounds). It also reads, from /proc, the CPU time the
service, its command spawner (or pyslurm workers), the sbatch processes they
ran and slurmctld spent during each burst, the whole machine's busy time and
the load: on a small machine they share the same cores.

--backend picks the service's scheduler backend (the command-line tools, the
default, or pyslurm's worker processes, from install.sh's environment for the
cluster's Slurm); the baselines are bare sbatch either way. --slurm names the
Slurm the cluster runs (a release or a prefix; default the newest installed).
--py-spy records the service's stacks during every burst into a flame graph
(py-spy, where it is installed beside this python).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.footprint import cpu_seconds  # noqa: E402
from bench.teardown import Teardown, start_cluster  # noqa: E402
from pvhpc import config as site_config_parser, paths  # noqa: E402
from pvhpc.localcluster.cluster import LocalCluster  # noqa: E402
from pvhpc.scheduler.slurm_cli import SlurmCLI  # noqa: E402
from pvhpc.sessions.job import build_job  # noqa: E402
from pvhpc.sessions.spec import parse_spec  # noqa: E402

REQUEST = {"application": "paraview", "partition": "cpu"}
STAFF = "bench-staff"


@dataclass
class Answer:
    user: str
    started: float     # time.monotonic()
    finished: float
    status: int
    body: dict

    @property
    def latency(self) -> float:
        return self.finished - self.started


def squeue(env: dict, *args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", *args], env=env, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def occupy_cpu_nodes(env: dict) -> list[str]:
    """One job holding each cpu node whole, so that session jobs queue behind them."""
    ids = [subprocess.run(["sbatch", "--parsable", "-p", "cpu", "--exclusive", "-N1", "-J", "bench-blocker",
                           "-o", "/dev/null", "--wrap", "sleep 3600"], env=env, capture_output=True, text=True,
                          check=True).stdout.strip().split(";")[0] for _ in range(2)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if [s for _, s in squeue(env, "-j", ",".join(ids), "-o", "%i|%T")] == ["RUNNING"] * 2:
            return ids
        time.sleep(0.3)
    raise RuntimeError("the blocker jobs did not start")


def sbatch_baseline(cfg, env: dict, count: int, threads: int) -> tuple[float, list[str]]:
    """(seconds, job ids) for ``count`` bare sbatch of the jobs pvhpc would submit, on ``threads`` threads."""
    spec = parse_spec(cfg, REQUEST, strict=True)
    jobs = [build_job(cfg, spec, f"user{i:04d}", secrets.token_urlsafe(24), f"bench-sbatch-{i}",
                      secrets.token_urlsafe(24), secrets.token_urlsafe(32)) for i in range(count)]

    def submit(job) -> str:
        out = subprocess.run(SlurmCLI.sbatch_argv(job), input=job.script, env=env, capture_output=True, text=True,
                             check=True).stdout
        return out.strip().split(";")[0]

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(submit, jobs))
    return time.monotonic() - started, ids


async def fire(svc, requests: list[tuple[str, str, str, dict | None]], spread: float) -> list[Answer]:
    """Send every (user, method, path, body) at once (or evenly over ``spread`` seconds); one connection each,
    to the service's front-end socket, where a site's Apache connects: the bench's client stands in its place.
    (Through the test harness's stand-in front end, a thread per connection in this process, the bench measured
    that stand-in as much as pvhpc.)"""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.netutil import Resolver

    class FrontEndSocket(Resolver):
        """Every host name leads to the front-end socket."""

        def initialize(self, path: str) -> None:
            self.path = path

        async def resolve(self, host, port, family=socket.AF_UNSPEC):
            return [(socket.AF_UNIX, self.path)]

    url = svc.frontend_url   # for the request line's Host and the Origin only
    AsyncHTTPClient.configure(None, max_clients=len(requests), resolver=FrontEndSocket(path=str(svc.frontend_socket)))
    http = AsyncHTTPClient()

    async def one(i: int, user: str, method: str, path: str, body: dict | None) -> Answer:
        if spread:
            await asyncio.sleep(spread * i / len(requests))
        request = HTTPRequest(url + path, method=method, body=None if body is None else json.dumps(body),
                              # As the site's own page through the front end's socket (Origin: the site's).
                              headers={"X-Remote-User": user, "Content-Type": "application/json", "Origin": url},
                              connect_timeout=120, request_timeout=300)
        started = time.monotonic()
        response = await http.fetch(request, raise_error=False)
        finished = time.monotonic()
        try:
            answer = json.loads(response.body or b"{}")
        except ValueError:
            answer = {"error": (response.body or b"")[:200].decode(errors="replace")}
        return Answer(user, started, finished, response.code, answer)

    try:
        return await asyncio.gather(*(one(i, *r) for i, r in enumerate(requests)))
    finally:
        http.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def wall(answers: list[Answer]) -> float:
    return max(a.finished for a in answers) - min(a.started for a in answers)


def live_session_jobs(env: dict) -> list[str]:
    """Ids of the pvhpc-* jobs Slurm has not ended (earlier rounds' cancelled jobs stay listed a while)."""
    return [i for i, n, state in squeue(env, "-t", "all", "-o", "%i|%j|%T")
            if n.startswith("pvhpc-") and state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")]


def check_no_duplicates(answers: list[Answer], env: dict, staff_client) -> list[str]:
    """Problems found: every session with its own job, and the pvhpc-* jobs in Slurm exactly those."""
    problems = []
    job_ids = [a.body.get("job_id") for a in answers if a.status == 201]
    if None in job_ids:
        problems.append(f"{job_ids.count(None)} sessions have no job id")
    if len(set(job_ids)) != len(job_ids):
        problems.append(f"{len(job_ids) - len(set(job_ids))} job ids are shared by two sessions")
    slurm_jobs = live_session_jobs(env)
    if sorted(slurm_jobs) != sorted(job_ids):
        problems.append(f"Slurm holds {len(slurm_jobs)} pvhpc-* jobs for {len(job_ids)} sessions "
                        f"({len(set(slurm_jobs) - set(job_ids))} not a session's)")
    listed = staff_client.list(state="live", all_users=True)
    if len(listed) != len(job_ids):
        problems.append(f"the service lists {len(listed)} live sessions, {len(job_ids)} were created")
    return problems


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def plot(latencies: list[float], rates: dict[str, float], users: int, path: Path) -> None:
    """The latencies of one round (the one with the median p50), the rates' medians over the rounds."""
    from bench.report import pyplot, save

    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    ordered = sorted(latencies)
    left.plot(ordered, [(i + 1) / len(ordered) * 100 for i in range(len(ordered))], drawstyle="steps-post")
    for k, q in enumerate((0.5, 0.9, 0.99)):
        left.axvline(percentile(latencies, q), color="grey", linestyle=":", linewidth=1)
        left.text(percentile(latencies, q), 3 + 10 * k, f" p{round(q * 100)}", fontsize=8, color="grey")
    left.set_xlabel("API latency of POST /api/v1/sessions (s)")
    left.set_ylabel("% of requests answered")
    left.set_title(f"{users} users at once: API latency (median round)")
    bars = right.bar([label.replace(", ", "\n") for label in rates], list(rates.values()),
                     color=["#9ecae1", "#6baed6", "#fd8d3c"])
    right.bar_label(bars, fmt="%.0f", fontsize=8)
    right.set_ylabel("jobs queued per second")
    right.set_title("submission rate (median of rounds)")
    right.tick_params(axis="x", labelsize=8)
    save(fig, path)


def service_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds so far of the service itself, of its helper processes still running (the command spawner, the
    pyslurm backend's workers), and of the commands they or the service ran and waited for (the sbatch)."""
    own, ended = cpu_seconds(pid)
    helpers = 0.0
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            try:
                child_own, child_ended = cpu_seconds(int(child))
            except OSError:
                continue   # ended since the list was read: counted with the ended ones
            helpers += child_own
            ended += child_ended   # the spawner's sbatch
    return own, helpers, ended


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, every process: other people's too), /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in
                                                                Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def py_spy(pid: int, path: Path) -> subprocess.Popen:
    """py-spy recording ``pid``'s stacks (its children's too: the pyslurm workers) into ``path`` until SIGINT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # --nonblocking: the service is not stopped for each sample (stopping it made the burst several times slower);
    # --gil: only the threads holding the GIL, i.e. running Python (a thread waiting on a pipe or the disk is not).
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--nonblocking",
                            "--gil", "--rate", "200", "--pid", str(pid), "--output", str(path),
                            # .txt: collapsed stacks, one line each, to count by frame; else a flame graph
                            "--format", "raw" if path.suffix == ".txt" else "flamegraph"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)   # attached before the first request
    return spy


def one_round(cfg, env: dict, svc, staff, users: list[str], spread: float, slurmctld: int,
              profile: Path | None = None) -> dict:
    """Both baselines, then the burst, its checks, and every session ended again."""
    result: dict = {"rates": {}, "load": os.getloadavg()[0]}
    # Each baseline's jobs are cancelled before the next measurement, so every one sees the same queue.
    for label, threads in (("sbatch, one after another", 1), (f"sbatch, {len(users)} at once", len(users))):
        seconds, ids = sbatch_baseline(cfg, env, len(users), threads)
        subprocess.run(["scancel", *ids], env=env, check=True, stderr=subprocess.DEVNULL)
        result["rates"][label] = len(users) / seconds

    # CPU seconds during the burst: the service's own, its children's (the sbatch it ran), slurmctld's.
    spy = py_spy(svc.proc.pid, profile) if profile else None
    before = service_cpu(svc.proc.pid) + (cpu_seconds(slurmctld)[0], machine_busy())
    answers = asyncio.run(fire(svc, [(u, "POST", "/api/v1/sessions", REQUEST) for u in users], spread))
    if spy:
        spy.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
        spy.wait(30)
    after = service_cpu(svc.proc.pid) + (cpu_seconds(slurmctld)[0], machine_busy())
    result["cpu"] = [b - a for a, b in zip(before, after)]
    created = [a for a in answers if a.status == 201]
    result["rates"][f"pvhpc, {len(users)} users at once"] = len(created) / wall(answers)
    result["latencies"] = [a.latency for a in answers]
    result["wall"] = wall(answers)
    result["created"] = len(created)
    result["job_ids"] = len({a.body.get("job_id") for a in created})
    result["errors"] = {}
    for a in answers:
        if a.status != 201:
            result["errors"].setdefault(f"{a.status} {a.body.get('error', '')[:100]}", []).append(a.user)
    result["problems"] = check_no_duplicates(answers, env, staff)

    ended = asyncio.run(fire(svc, [(a.user, "DELETE", f"/api/v1/sessions/{a.body['id']}", None)
                                       for a in created], 0)) if created else []
    result["end_wall"] = wall(ended) if ended else 0.0
    result["not_ended"] = sum(1 for a in ended if a.status != 200 or a.body.get("state") != "ended")
    result["jobs_left"] = len(live_session_jobs(env))
    result["sessions_left"] = len(staff.list(state="live", all_users=True))
    return result


def print_results(rounds: list[dict], users: int, spread: float) -> None:
    print(f"\nBurst: {users} users, one POST /api/v1/sessions each, "
          + (f"over {spread:g} s" if spread else "all at once")
          + f"; {len(rounds)} rounds, median (min-max) over the rounds")
    answers = len(rounds) * users
    created = sum(r["created"] for r in rounds)
    errors = sum(len(who) for r in rounds for who in r["errors"].values())
    print(f"  answers 201: {created} of {answers}; errors: {errors}")
    for r in rounds:
        for what, who in r["errors"].items():
            print(f"    {len(who)} x {what}")
    for q, label in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (1.0, "max")):
        print(f"  API latency {label}: {report.spread([percentile(r['latencies'], q) * 1000 for r in rounds])} ms")
    print(f"  burst, first request to last answer: {report.spread([r['wall'] for r in rounds], '{:.2f}')} s")
    own, helpers, commands, ctld, machine = ([r["cpu"][i] for r in rounds] for i in range(5))
    print(f"  CPU seconds during the burst: the service {report.spread(own, '{:.2f}')} "
          f"({statistics.median(own) / users * 1000:.1f} ms per session), its helper processes (the command spawner "
          f"or pyslurm workers) {report.spread(helpers, '{:.2f}')}, the commands they ran (sbatch) "
          f"{report.spread(commands, '{:.2f}')}, slurmctld {report.spread(ctld, '{:.2f}')}; the whole machine "
          f"{report.spread(machine, '{:.2f}')} of {report.spread([r['wall'] * os.cpu_count() for r in rounds], '{:.2f}')} "
          f"({os.cpu_count()} cores)")
    loads = ", ".join(f"{r['load']:.2f}" for r in rounds)
    print(f"  1-minute load average at each round's start: {loads}")
    problems = [p for r in rounds for p in r["problems"]]
    sessions = ", ".join(str(r["created"]) for r in rounds)
    job_ids = ", ".join(str(r["job_ids"]) for r in rounds)
    print(f"  duplicates: {'none' if not problems else '; '.join(problems)} "
          f"(sessions per round: {sessions}; distinct job ids: {job_ids})")
    print(f"\nSubmissions per second (jobs queued / wall time), {users} jobs, median (min-max) over the rounds")
    base = statistics.median(r["rates"]["sbatch, one after another"] for r in rounds)
    for label in rounds[0]["rates"]:
        rates = [r["rates"][label] for r in rounds]
        print(f"  {label:<28} {report.spread(rates):>16}/s  {statistics.median(rates) / base:5.2f}x")
    label = f"pvhpc, {users} users at once"
    ratios = [r["rates"][label] / r["rates"]["sbatch, one after another"] for r in rounds]
    print(f"\nRATIO pvhpc / sequential sbatch of the same round: median {statistics.median(ratios):.2f}x "
          f"({', '.join(f'{x:.2f}x' for x in ratios)}; goal 1.5x)")
    print(f"\nEnding every session through the API (DELETE, all at once): "
          f"{report.spread([r['end_wall'] for r in rounds], '{:.2f}')} s; "
          f"not ended: {sum(r['not_ended'] for r in rounds)}; "
          f"pvhpc-* jobs left in the queue: {sum(r['jobs_left'] for r in rounds)}; "
          f"live sessions left: {sum(r['sessions_left'] for r in rounds)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200,
                        help="users, one session request each (default 200; at most 1000, as many as the API lists)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of baselines + burst (default 3)")
    parser.add_argument("--spread", type=float, default=0,
                        help="start the requests evenly over this many seconds (default 0: all at once)")
    parser.add_argument("--plot", type=Path, help="draw the figure into this PNG file")
    parser.add_argument("--slurm", default=None, help="the Slurm the cluster runs: a release or a prefix "
                        "(default: the newest installed)")
    parser.add_argument("--backend", choices=("slurm", "pyslurm"), default="slurm",
                        help="the service's scheduler backend (default slurm: the command-line tools)")
    parser.add_argument("--py-spy", type=Path, dest="py_spy",
                        help="record the service's stacks during each burst into this flame graph (round N: -N added)")
    args = parser.parse_args()

    from tests.harness.ports import free_port_block
    from tests.backends import scheduler_section
    from tests.harness.service import ServiceProcess, site_config

    work = Path(tempfile.mkdtemp(prefix="pvhpc-burst-"))
    with Teardown(work) as undo:
        undo.add(lambda: shutil.rmtree(work, ignore_errors=True), "remove the work directory")
        cluster = start_cluster(undo, LocalCluster(work / "cluster", base_port=free_port_block(5), slurm=args.slurm))
        env = dict(os.environ, **cluster.environment())
        occupy_cpu_nodes(env)

        config = site_config(cluster, work / "svc", paths.runtime_dir(), poll_interval=5,
                             scheduler={k: v for k, v in scheduler_section(cluster, args.backend).items()
                                        if k != "command_timeout"},   # the site default timeouts
                             auth={"kind": "header", "header": "X-Remote-User", "staff": [STAFF]})
        cfg = site_config_parser.parse(config, "<burst>")
        svc = ServiceProcess(work / "svc", config)
        undo.add(svc.stop, "stop the service")
        svc.start()
        staff = svc.user_client(STAFF)
        users = [f"user{i:04d}" for i in range(args.users)]

        slurmctld = next(d.pid for d in cluster.status() if d.name == "slurmctld")
        rounds = []
        for i in range(args.rounds):
            profile = args.py_spy.with_stem(f"{args.py_spy.stem}-{i + 1}") if args.py_spy else None
            r = one_round(cfg, env, svc, staff, users, args.spread, slurmctld, profile)
            rounds.append(r)
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in r["rates"].items())
                  + f"; API p50 {percentile(r['latencies'], 0.5) * 1000:.0f} ms, "
                  f"max {max(r['latencies']) * 1000:.0f} ms", flush=True)
        print(f"{cluster.slurm.describe()}; the service's backend: {args.backend}")
        print_results(rounds, args.users, args.spread)
        warnings = [line for line in svc.log.read_text(errors="replace").splitlines()
                    if " WARNING " in line or " ERROR " in line]
        print(f"  service log: {len(warnings)} warnings or errors" + "".join(f"\n    {w[:200]}" for w in warnings[:5]))
        if args.plot:
            median_round = sorted(rounds, key=lambda r: percentile(r["latencies"], 0.5))[len(rounds) // 2]
            plot(median_round["latencies"],
                 {k: statistics.median(r["rates"][k] for r in rounds) for k in rounds[0]["rates"]},
                 args.users, args.plot)
        ok = not any(r["errors"] or r["problems"] or r["not_ended"] or r["jobs_left"] or r["sessions_left"]
                     for r in rounds)
        print("\nOK: every answer 201, no duplicate job, nothing left queued" if ok else "\nFAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
