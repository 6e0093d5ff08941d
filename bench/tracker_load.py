"""How hard does tracking sessions hit slurmctld? And how fast is a client told its session is ready?

    python bench/tracker_load.py [--sizes 1,100,1000] [--cycles 3] [--ready-samples 5]

Starts a local Slurm cluster of its own, then:
1. For each size N, N held jobs stand for N tracked sessions. It counts the
   controller's RPCs (from sdiag, reset before each measurement) for one poll
   cycle of pvhpc's tracker, and for a baseline poller that asks about each
   job on its own (one squeue per session), in the same run.
2. Starts real sessions through a real pvhpc service and measures, for each,
   the delay from the job's ready report leaving the node to the client
   (following the session's server-sent events) being told "ready".
Prints a table of figures and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pvhpc import config as site_config, paths  # noqa: E402
from pvhpc import runtime  # noqa: E402
from pvhpc.sessions.events import EventBus  # noqa: E402
from pvhpc.localcluster.cluster import LocalCluster  # noqa: E402
from pvhpc.scheduler.runners import LocalRunner  # noqa: E402
from pvhpc.scheduler.slurm_cli import SlurmCLI  # noqa: E402
from pvhpc.sessions.service import SessionService  # noqa: E402
from pvhpc.jobs.states import SessionState  # noqa: E402
from pvhpc.db.store import Change, SessionRecord, Store  # noqa: E402
from pvhpc.sessions.tracker import Tracker  # noqa: E402
from tests.harness.ports import free_port_block  # noqa: E402

QUERY_RPCS = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO", "REQUEST_FED_INFO")


def sdiag_counts(env) -> dict[str, int]:
    out = subprocess.run(["sdiag"], env=env, capture_output=True, text=True, check=True).stdout
    section = out.split("Remote Procedure Call statistics by message type", 1)[1].split("Remote Procedure Call statistics by user")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\w+)\s+\(\s*\d+\)\s+count:(\d+)", section, re.M)}


def settled_counts(env) -> dict[str, int]:
    # slurmctld records an RPC in its statistics after answering it: let the last one land.
    time.sleep(0.5)
    return sdiag_counts(env)


def query_rpcs(before: dict, after: dict) -> tuple[int, int]:
    """(query RPCs, all RPCs) between two sdiag readings."""
    queries = sum(after.get(k, 0) - before.get(k, 0) for k in QUERY_RPCS)
    total = sum(after.values()) - sum(before.values())
    return queries, total


def submit_held_jobs(env, count: int) -> list[str]:
    def one(i: int) -> str:
        out = subprocess.run(["sbatch", "--parsable", "--hold", "-p", "cpu", "-J", f"pvhpc-bench-{i}", "-o", "/dev/null",
                              "--wrap", "true"], env=env, capture_output=True, text=True, check=True).stdout
        return out.strip().split(";")[0]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def measure_rpcs(cluster: LocalCluster, sizes: list[int], cycles: int, workdir: Path) -> list[tuple]:
    env = dict(os.environ, **cluster.environment())
    job_ids = submit_held_jobs(env, max(sizes))
    cfg = site_config.parse({
        "scheduler": {"environment": cluster.environment()},
        "partitions": {"cpu": {}},
        "applications": {"paraview": {"data_roots": [str(workdir)]}},
    }, "<bench>")
    rows = []
    try:
        for n in sizes:
            store = Store(f"sqlite:///{workdir / f'bench-{n}.sqlite'}")
            store.open()
            for i, job_id in enumerate(job_ids[:n]):
                store.add(SessionRecord(id=f"bench-{n}-{i}", user="bench", application="paraview", partition="cpu",
                                        gpus=0, walltime_minutes=60, request_key="k", state=SessionState.SUBMITTING.value,
                                        detail="", job_name=f"pvhpc-bench-{i}", secret="x", report_token_hash="h"))
                store.change(f"bench-{n}-{i}", Change.to(SessionState.QUEUED, "", job_id=job_id))
            slurm = SlurmCLI(LocalRunner(cluster.environment()))
            tracker = Tracker(cfg, store, slurm, SessionService(cfg, store, slurm, EventBus()))
            asyncio.run(tracker.poll_once())   # settle: details filled in once
            tracked, seconds = [], []
            for _ in range(cycles):
                before = settled_counts(env)
                started = time.perf_counter()
                asyncio.run(tracker.poll_once())
                seconds.append(time.perf_counter() - started)
                tracked.append(query_rpcs(before, settled_counts(env)))
            # Baseline: the per-session poller that users of other portals complain about.
            before = settled_counts(env)
            started = time.perf_counter()
            for job_id in job_ids[:n]:
                subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T|%r"], env=env,
                               capture_output=True, check=True)
            baseline_seconds = time.perf_counter() - started
            baseline = query_rpcs(before, settled_counts(env))
            rows.append((n, statistics.median(q for q, _ in tracked), statistics.median(t for _, t in tracked),
                         baseline[0], baseline[1], statistics.median(seconds), baseline_seconds))
    finally:
        subprocess.run(["scancel", *job_ids], env=env, capture_output=True)
    return rows


def measure_ready_delay(cluster: LocalCluster, samples: int, workdir: Path) -> list[float]:
    from pvhpc.app import PvhpcApp
    from pvhpc.client.api import Client

    runtime.install(paths.runtime_dir())
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port_block(1)
    cfg = site_config.parse({
        "service": {"listen": f"127.0.0.1:{port}", "database": f"sqlite:///{workdir / 'ready.sqlite'}",
                    "job_output_dir": str(workdir / "jobs"), "poll_interval": 5},
        "scheduler": {"environment": cluster.environment()},
        "partitions": {"cpu": {}},
        "applications": {"paraview": {"data_roots": [str(data)]}},
    }, "<bench>")
    loop = asyncio.new_event_loop()
    app = PvhpcApp(cfg)
    ready = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(app.start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(30)
    client = Client(f"http://127.0.0.1:{port}")
    delays = []
    try:
        for _ in range(samples):
            session = client.create("paraview")
            told = None
            for event in client.events(session["id"], timeout=120):
                if event["state"] in ("ready", "ended"):
                    told = time.time()
                    break
            out = (workdir / "jobs" / f"{app.ctx.store.get(session['id']).job_name}.out").read_text()
            sent = float(re.search(r"PVHPC_READY .* at=([\d.]+)", out).group(1))
            delays.append(told - sent)
            client.cancel(session["id"])
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    return delays


def plot(rows, poll_interval: float, path: Path) -> None:
    """Controller RPCs per minute by tracked sessions: pvhpc against one query per session (log scales)."""
    from bench.report import pyplot, save

    plt = pyplot()
    sizes = [n for n, *_ in rows]
    ours = [t * 60 / poll_interval for n, q, t, bq, bt, s, bs in rows]
    theirs = [bt * 60 / max(poll_interval, bs) for n, q, t, bq, bt, s, bs in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(sizes, theirs, "o-", color="#fd8d3c", label="one squeue per session")
    ax.plot(sizes, ours, "o-", color="#3182bd", label="pvhpc: one squeue per cycle")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tracked sessions")
    ax.set_ylabel("slurmctld RPCs per minute")
    ax.set_title(f"scheduler load (sdiag), one cycle every {poll_interval:g} s")
    ax.legend(fontsize=8)
    save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--ready-samples", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="for RPCs per minute: cycles per minute at this interval (the site default, 5 s)")
    parser.add_argument("--plot", type=Path, help="draw the figure into this PNG file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="pvhpc-bench-"))
    cluster = LocalCluster(workdir / "cluster", base_port=free_port_block(5))
    cluster.start()
    try:
        rows = measure_rpcs(cluster, sizes, args.cycles, workdir)
        print("\nScheduler load: controller RPCs for one poll cycle (sdiag), pvhpc against one squeue per session")
        print(f"{'sessions':>9} {'pvhpc query RPCs':>17} {'pvhpc all RPCs':>15} {'per-session query RPCs':>23} "
              f"{'per-session all RPCs':>21} {'ratio (queries)':>16} {'pvhpc cycle s':>14} {'per-session s':>14}")
        for n, q, t, bq, bt, s, bs in rows:
            print(f"{n:>9} {q:>17} {t:>15} {bq:>23} {bt:>21} {bq / max(q, 1):>15.0f}x {s:>14.3f} {bs:>14.3f}")
        # A per-session poller cannot keep the interval once a cycle takes longer than it: it then
        # asks as fast as squeue answers, which is what the second figure says.
        per_minute = 60 / args.poll_interval
        print(f"\nController RPCs per minute at one cycle every {args.poll_interval:g} s")
        print(f"{'sessions':>9} {'pvhpc':>8} {'one query per session':>22} {'ratio':>8}")
        for n, q, t, bq, bt, s, bs in rows:
            ours = t * per_minute
            theirs = bt * 60 / max(args.poll_interval, bs)
            print(f"{n:>9} {ours:>8.0f} {theirs:>22.0f} {theirs / max(ours, 1):>7.0f}x")
        if args.plot:
            plot(rows, args.poll_interval, args.plot)
        if args.ready_samples:
            delays = measure_ready_delay(cluster, args.ready_samples, workdir)
            print(f"\nReady delay: job's report leaves the node -> client told 'ready' (SSE), {len(delays)} sessions")
            print(f"  median {statistics.median(delays) * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms "
                  f"(poll interval 5 s: without the push, the wait would average 2.5 s)")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
