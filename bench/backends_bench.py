"""The two scheduler backends side by side, in one run: command-line tools (slurm) against pyslurm.

    python bench/backends_bench.py [--slurm 25.11] [--sizes 10,100,1000] [--cycles 5] [--burst 200]

Starts a local Slurm cluster of its own (on the Slurm ``--slurm`` names, default the newest installed;
pyslurm from install.sh's environment for that release), then for each backend:
1. For each size N, N held jobs stand for N tracked sessions. One poll cycle of pvhpc's
   tracker is timed; slurmctld's RPCs in it are counted (sdiag, before and after); the
   CPU it costs is measured in this process, in the commands it ran (squeue) and in the
   pyslurm worker processes, and given per minute at the default poll interval (5 s).
2. A burst: ``--burst`` submissions at once (the 200-user burst of bench/burst.py, at the
   scheduler's interface): latency of each submission (median, 95th percentile) and
   throughput (submissions per second over the whole burst).
Prints one table; ratios are pyslurm's figure over the command-line backend's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pvhpc.db.store import Change, SessionRecord, Store  # noqa: E402
from pvhpc.scheduler import JobRequest, make_scheduler  # noqa: E402
from pvhpc.localcluster.cluster import LocalCluster  # noqa: E402
from pvhpc.scheduler.runners import LocalRunner  # noqa: E402
from pvhpc.sessions.events import EventBus  # noqa: E402
from pvhpc.sessions.service import SessionService  # noqa: E402
from pvhpc.jobs.states import SessionState  # noqa: E402
from pvhpc.sessions.tracker import Tracker  # noqa: E402
from bench.tracker_load import settled_counts, submit_held_jobs  # noqa: E402
from tests.harness.ports import free_port_block  # noqa: E402

POLL_INTERVAL = 5.0      # service.poll_interval's default
TICKS = os.sysconf("SC_CLK_TCK")


def rpcs_between(before: dict, after: dict) -> int:
    return sum(after.values()) - sum(before.values())


def worker_cpu(scheduler) -> float:
    """CPU seconds used so far by the pyslurm backend's worker processes (none for the CLI backend)."""
    total = 0.0
    for worker in getattr(scheduler, "_started", []):
        try:
            fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
        except OSError:
            pass
    return total


def cpu_now(scheduler) -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime + worker_cpu(scheduler)


def tracker_for(cfg, store, scheduler) -> Tracker:
    return Tracker(cfg, store, scheduler, SessionService(cfg, store, scheduler, EventBus()))


def scheduler_section(backend: str, cluster: LocalCluster, timeout: float) -> SimpleNamespace:
    """The ``scheduler:`` section for ``backend`` on the cluster, with the pyslurm for its Slurm (tests/backends.py)."""
    from tests import backends

    section = backends.scheduler_section(cluster, backend, timeout)
    return SimpleNamespace(submit_as="service", **section)


def poll_cycles(backend: str, cluster: LocalCluster, job_ids: list[str], sizes: list[int], cycles: int,
                workdir: Path) -> list[dict]:
    from pvhpc import config as site_config

    env = dict(os.environ, **cluster.environment())
    cfg = site_config.parse({
        "scheduler": cluster.scheduler_config(),
        "partitions": {"cpu": {}},
        "applications": {"paraview": {"data_roots": [str(workdir)]}},
    }, "<bench>")
    section = scheduler_section(backend, cluster, timeout=30)
    scheduler = make_scheduler(section, LocalRunner(section.environment))
    rows = []
    try:
        for n in sizes:
            store = Store(f"sqlite:///{workdir / f'{backend}-{n}.sqlite'}")
            store.open()
            for i, job_id in enumerate(job_ids[:n]):
                store.add(SessionRecord(id=f"b-{n}-{i}", user="bench", application="paraview", partition="cpu",
                                        gpus=0, walltime_minutes=60, request_key="k",
                                        state=SessionState.SUBMITTING.value, detail="", job_name=f"pvhpc-bench-{i}",
                                        secret="x", report_token_hash="h"))
                store.change(f"b-{n}-{i}", Change.to(SessionState.QUEUED, "", job_id=job_id))
            tracker = tracker_for(cfg, store, scheduler)
            asyncio.run(tracker.poll_once())   # settle: workers started, details filled in once
            seconds, cpu, rpcs = [], [], []
            for _ in range(cycles):
                before = settled_counts(env)
                cpu_before, started = cpu_now(scheduler), time.perf_counter()
                asyncio.run(tracker.poll_once())
                seconds.append(time.perf_counter() - started)
                cpu.append(cpu_now(scheduler) - cpu_before)
                rpcs.append(rpcs_between(before, settled_counts(env)))
            # Every session must still be followed (none read as gone), or the figures mean nothing.
            assert len(store.live()) == n and all(r.state == "queued" for r in store.live()), (backend, n)
            rows.append({"backend": backend, "sessions": n, "cycle_s": statistics.median(seconds),
                         "rpcs": statistics.median(rpcs), "cpu_per_min": statistics.median(cpu) * 60 / POLL_INTERVAL})
    finally:
        scheduler.close()
    return rows


def burst(backend: str, cluster: LocalCluster, count: int, workdir: Path) -> dict:
    section = scheduler_section(backend, cluster, timeout=60)
    scheduler = make_scheduler(section, LocalRunner(section.environment))
    env = dict(os.environ, **cluster.environment())

    async def one(i: int) -> tuple[float, str]:
        started = time.perf_counter()
        job_id = await scheduler.submit(JobRequest(script="#!/bin/bash\ntrue\n", name=f"pvhpc-burst-{backend}-{i}",
                                                   partition="cpu", time_limit_minutes=1, output="/dev/null"))
        return time.perf_counter() - started, job_id

    async def all_at_once():
        await scheduler.query(["1"])   # workers started before the clock runs, as in a running service
        started = time.perf_counter()
        answers = await asyncio.gather(*(one(i) for i in range(count)))
        return answers, time.perf_counter() - started

    try:
        answers, wall = asyncio.run(all_at_once())
    finally:
        scheduler.close()
    subprocess.run([cluster.slurm.program("scancel"), *[job_id for _, job_id in answers]], env=env,
                   capture_output=True)
    latencies = sorted(seconds for seconds, _ in answers)
    return {"backend": backend, "median_s": statistics.median(latencies),
            "p95_s": latencies[int(0.95 * (len(latencies) - 1))], "per_s": count / wall,
            "distinct": len({job_id for _, job_id in answers})}


def print_table(rows: list[dict], bursts: list[dict], count: int) -> None:
    by = {(r["backend"], r["sessions"]): r for r in rows}
    print("\npoll cycle (median of cycles), per backend; ratio = pyslurm / slurm")
    print(f"{'sessions':>8} | {'cycle slurm':>11} {'pyslurm':>9} {'ratio':>6} | {'RPCs slurm':>10} {'pyslurm':>8} | "
          f"{'CPU s/min slurm':>15} {'pyslurm':>8} {'ratio':>6}")
    for n in sorted({r["sessions"] for r in rows}):
        a, b = by.get(("slurm", n)), by.get(("pyslurm", n))
        if not a or not b:
            continue
        print(f"{n:>8} | {a['cycle_s'] * 1000:>9.1f}ms {b['cycle_s'] * 1000:>7.1f}ms {b['cycle_s'] / a['cycle_s']:>6.2f} | "
              f"{a['rpcs']:>10.0f} {b['rpcs']:>8.0f} | {a['cpu_per_min']:>15.3f} {b['cpu_per_min']:>8.3f} "
              f"{b['cpu_per_min'] / max(a['cpu_per_min'], 1e-9):>6.2f}")
    print(f"\nburst of {count} submissions at once")
    print(f"{'backend':>8} | {'median':>8} {'p95':>8} | {'per second':>10} | distinct job ids")
    for r in bursts:
        print(f"{r['backend']:>8} | {r['median_s'] * 1000:>6.0f}ms {r['p95_s'] * 1000:>6.0f}ms | {r['per_s']:>10.1f} | "
              f"{r['distinct']}")
    if len(bursts) == 2:
        print(f"pyslurm / slurm: throughput {bursts[1]['per_s'] / bursts[0]['per_s']:.2f}x, "
              f"median latency {bursts[1]['median_s'] / bursts[0]['median_s']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--slurm", default=None, help="the Slurm the cluster runs: a release or a prefix")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="pvhpc-backends-bench-"))
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="pvhpc-bb-")), base_port=free_port_block(5), slurm=args.slurm)
    cluster.start()
    print(f"{cluster.slurm.describe()}; backends: slurm (its tools), pyslurm "
          f"({scheduler_section('pyslurm', cluster, 30).pyslurm_python})")
    try:
        env = dict(os.environ, **cluster.environment())
        job_ids = submit_held_jobs(env, max(sizes))
        rows = []
        for backend in ("slurm", "pyslurm"):
            rows += poll_cycles(backend, cluster, job_ids, sizes, args.cycles, workdir)
        subprocess.run([cluster.slurm.program("scancel"), *job_ids], env=env, capture_output=True)
        bursts = [burst(backend, cluster, args.burst, workdir) for backend in ("slurm", "pyslurm")]
        print_table(rows, bursts, args.burst)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
