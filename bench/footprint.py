"""What tracking many sessions costs the service itself: memory, CPU and poll cycle time.

    /opt/pvhpc/venv/bin/python bench/footprint.py [--sizes 0,100,1000,10000] [--window 60] [--plot FILE.png]

A site's service follows every live session for hours, most of them queued
or idle. This measures what that costs the service process, against the same
service tracking no session, in the same run, on a private local cluster:

  RSS        VmRSS from /proc/PID/status at the end of the window (and VmHWM, the peak)
  CPU        utime+stime from /proc/PID/stat over the window, as % of one core;
             its children's too (cutime+cstime: the squeue it runs each cycle),
             and slurmctld's over the same window
  poll cycle each Tracker.poll_once of the service, timed in the service process
  API stall  after the window, the latency of GET /api/v1/applications (no database work)
             asked every 0.1 s over two poll cycles: how long a request (or a job's
             ready report) can wait while a cycle holds the event loop

Each tracked session stands for a real Slurm job: as many jobs as the largest N are
submitted held (``sbatch --hold``, from a few threads, as bench/tracker_load.py
does) and stay queued through every size, as other users' jobs would on a busy
cluster (squeue's cost follows the jobs slurmctld holds, the service's the
sessions it tracks). For each size, N session rows pointing at N of them are
written into a fresh SQLite store as the tracker itself leaves a queued
session (state, queue reason in words, history entry), so the service starts
as after a restart and each poll cycle finds nothing to change. The service is
``pvhpc serve`` (INFO log) run by this script in a child process, with
Tracker.poll_once wrapped to time each cycle. The first cycles after start are
left out; then the window is measured.

Slurm keeps at most MaxJobCount jobs (default 10,000: the 10,000th held job is
refused), so the cluster started here adds a higher MaxJobCount to its own
slurm.conf (RoomyCluster below; pvhpc/localcluster/cluster.py is unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Only the standard library at the top: the service's child process runs this file too, and what it
# imports counts in the RSS measured.

TICKS = os.sysconf("SC_CLK_TCK")


# -- the service's process ----------------------------------------------------------------------------

def serve_child(config_path: str, cycles_path: str) -> int:
    """Run ``pvhpc serve`` with each poll cycle's start, duration and session count appended to cycles_path."""
    from pvhpc.cli import main as pvhpc_main
    from pvhpc.sessions.tracker import Tracker

    poll_once = Tracker.poll_once

    async def timed(self):
        started = time.monotonic()
        stats = await poll_once(self)
        with open(cycles_path, "a") as f:
            f.write(f"{started:.3f} {time.monotonic() - started:.4f} {stats.sessions}\n")
        return stats

    Tracker.poll_once = timed
    return pvhpc_main(["serve", "--config", config_path])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own utime+stime, its waited-for children's cutime+cstime), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])   # fields 14-17 of proc(5)
    return (utime + stime) / TICKS, (cutime + cstime) / TICKS


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
            if line.startswith(("VmRSS:", "VmHWM:"))}


def probe_latencies(url: str, seconds: float) -> list[float]:
    """Latencies of back-to-back cheap API requests, one every 0.1 s, over ``seconds``."""
    import urllib.request

    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        urllib.request.urlopen(url + "/api/v1/applications", timeout=60).read()
        latencies.append(time.monotonic() - started)
        time.sleep(max(0.0, 0.1 - latencies[-1]))
    return latencies


def read_cycles(path: Path) -> list[tuple[float, float, int]]:
    if not path.exists():
        return []
    return [(float(a), float(b), int(c)) for a, b, c in (line.split() for line in path.read_text().splitlines())]


# -- the sessions --------------------------------------------------------------------------------------

def write_sessions(database_url: str, job_ids: list[str], held_job) -> None:
    """Session rows for these held jobs, as the tracker leaves a queued session: one transaction for them all."""
    import secrets

    from pvhpc.sessions import lifecycle
    from pvhpc.sessions.service import new_session_id, token_hash
    from pvhpc.db.store import SessionEvent, SessionRecord, Store, utcnow

    store = Store(database_url)
    store.open()
    if not job_ids:
        return
    now = utcnow()
    # What the tracker would make of a held job: its words for the queue reason and the fields it sets.
    change = lifecycle.from_job(SessionRecord(state="queued"), held_job, now, 300)
    with store.transaction() as db:
        for i, job_id in enumerate(job_ids):
            session_id = new_session_id()
            db.add(SessionRecord(
                id=session_id, user=f"user{i % 500:03d}", application="paraview", partition="cpu", gpus=0,
                walltime_minutes=30, request_key=secrets.token_hex(32), state=change.state.value,
                detail=change.detail, job_name=f"pvhpc-bench-{i}", job_id=job_id, secret=secrets.token_urlsafe(24),
                report_token_hash=token_hash(secrets.token_urlsafe(32)), created_at=now, updated_at=now,
                **dict(change.fields)))
            db.add(SessionEvent(session_id=session_id, state=change.state.value, detail=change.detail, at=now))
    store.engine.dispose()


def history_rows(database_url: str) -> int:
    from sqlalchemy import func, select

    from pvhpc.db.store import SessionEvent, Store

    store = Store(database_url)
    with store.transaction() as db:
        count = db.scalar(select(func.count()).select_from(SessionEvent))
    store.engine.dispose()
    return count


# -- one measurement ------------------------------------------------------------------------------------

def stopper(proc: subprocess.Popen):
    def stop():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
    return stop


def measure(job_ids: list[str], held_job, cluster, directory: Path, config: dict, window: float, settle_cycles: int,
            undo) -> dict:
    """Start the service on a store tracking these jobs, let it settle, measure it over the window."""
    import urllib.request

    import yaml

    n = len(job_ids)
    database = config["service"]["database"]
    poll_interval = config["service"]["poll_interval"]
    write_sessions(database, job_ids, held_job)
    config_path = directory / "site.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cycles_path = directory / "cycles.txt"
    url = f"http://{config['service']['listen']}"

    started = time.monotonic()
    with open(directory / "service.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(config_path), "--cycles", str(cycles_path)],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    undo.add(stopper(proc), f"stop the service ({n} sessions)")
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited: {(directory / 'service.log').read_text()[-2000:]}")
        try:
            health = json.loads(urllib.request.urlopen(url + "/api/v1/health", timeout=5).read())
            break
        except OSError:
            if time.monotonic() - started > 600:
                raise RuntimeError("the service did not answer within 600 s") from None
            time.sleep(0.2)
    start_seconds = time.monotonic() - started
    if health["live_sessions"] != n:
        raise RuntimeError(f"the service tracks {health['live_sessions']} sessions, not {n}")
    # The start-up reconcile is the first cycle; leave out the first few after it.
    while len(read_cycles(cycles_path)) < 1 + settle_cycles:
        if proc.poll() is not None:
            raise RuntimeError("the service exited")
        time.sleep(0.2)

    ctld = next(d.pid for d in cluster.status() if d.name == "slurmctld")
    t0, (own0, kids0), ctld0 = time.monotonic(), cpu_seconds(proc.pid), cpu_seconds(ctld)[0]
    time.sleep(window)
    t1, (own1, kids1), ctld1 = time.monotonic(), cpu_seconds(proc.pid), cpu_seconds(ctld)[0]
    memory = memory_kib(proc.pid)
    cycles = [seconds for at, seconds, _ in read_cycles(cycles_path) if t0 <= at and at + seconds <= t1]
    cycle = statistics.median(cycles) if cycles else 0.0
    stalls = probe_latencies(url, 2 * (poll_interval + cycle) + 1)
    proc.terminate()
    proc.wait(20)
    elapsed = t1 - t0
    return {
        "sessions": n, "start_seconds": start_seconds,
        "rss_mib": memory["VmRSS"] / 1024, "peak_mib": memory["VmHWM"] / 1024,
        "cpu_pct": (own1 - own0) / elapsed * 100, "squeue_cpu_pct": (kids1 - kids0) / elapsed * 100,
        "slurmctld_cpu_pct": (ctld1 - ctld0) / elapsed * 100,
        "cycles": len(cycles), "cycle_median": cycle, "cycle_max": max(cycles) if cycles else 0.0,
        "stall_median": statistics.median(stalls), "stall_max": max(stalls),
        "writes": history_rows(database) - n,   # history entries the service added: none expected
    }


# -- reporting -------------------------------------------------------------------------------------------

def print_results(rows: list[dict], window: float, poll_interval: float) -> None:
    base = rows[0]
    print(f"\nThe service tracking N sessions (held Slurm jobs): {window:g} s window, poll interval "
          f"{poll_interval:g} s; against {base['sessions']} sessions in the same run")
    print(f"{'sessions':>9} {'RSS MiB':>8} {'vs base':>8} {'peak MiB':>9} {'CPU % service':>14} {'+ squeue':>9} "
          f"{'slurmctld':>10} {'poll cycle s median (max)':>26} {'cycles':>7} {'API ms median (max)':>20} "
          f"{'start s':>8} {'writes':>7}")
    for r in rows:
        cycle = f"{r['cycle_median']:.3f} ({r['cycle_max']:.3f})" if r["cycles"] else "- (window too short)"
        stall = f"{r['stall_median'] * 1000:.1f} ({r['stall_max'] * 1000:.0f})"
        print(f"{r['sessions']:>9} {r['rss_mib']:>8.1f} {r['rss_mib'] / base['rss_mib']:>7.2f}x {r['peak_mib']:>9.1f} "
              f"{r['cpu_pct']:>14.2f} {r['squeue_cpu_pct']:>9.2f} {r['slurmctld_cpu_pct']:>10.2f} {cycle:>26} "
              f"{r['cycles']:>7} {stall:>20} {r['start_seconds']:>8.1f} {r['writes']:>7}")
    print("CPU % is of one core; '+ squeue' is the squeue the service runs each cycle; 'slurmctld' is the "
          "controller over the same window (everything it does, not only answering the service). "
          "'API ms': GET /api/v1/applications every 0.1 s over two cycles (its max: the longest a request waited "
          "for the event loop). 'writes': history entries the service added (0: nothing changed, as expected).")


def plot(rows: list[dict], poll_interval: float, path: Path) -> None:
    from bench.report import pyplot, save

    plt = pyplot()

    labels = [f"{r['sessions']:,}" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    axes[0].bar(labels, [r["rss_mib"] for r in rows], color="#6baed6")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_title("memory")
    axes[1].bar(labels, [r["cpu_pct"] for r in rows], color="#fd8d3c", label="service")
    axes[1].bar(labels, [r["squeue_cpu_pct"] for r in rows], bottom=[r["cpu_pct"] for r in rows], color="#fdd0a2",
                label="its squeue")
    axes[1].set_ylabel("% of one core")
    axes[1].set_title("CPU")
    axes[1].legend(fontsize=8)
    x = range(len(rows))
    axes[2].bar([i - 0.2 for i in x], [r["cycle_median"] for r in rows], width=0.4, color="#74c476",
                label="poll cycle (median)")
    axes[2].bar([i + 0.2 for i in x], [r["stall_max"] for r in rows], width=0.4, color="#bdbdbd",
                label="longest API wait")
    axes[2].set_xticks(list(x), labels)
    axes[2].set_ylabel("seconds")
    axes[2].set_title(f"poll cycle (every {poll_interval:g} s + cycle)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("tracked sessions")
    save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0,100,1000,10000", help="sessions tracked; the first is the baseline")
    parser.add_argument("--window", type=float, default=60, help="seconds measured per size (default 60)")
    parser.add_argument("--settle", type=int, default=2, help="poll cycles left out after the start (default 2)")
    parser.add_argument("--poll-interval", type=float, default=5, help="the service's poll interval (default 5 s)")
    parser.add_argument("--plot", type=Path, help="draw the figure into this PNG file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--cycles", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_child(args.serve, args.cycles)

    import asyncio

    from bench.teardown import Teardown, start_cluster
    from bench.tracker_load import submit_held_jobs
    from pvhpc import paths
    from pvhpc.localcluster.cluster import LocalCluster
    from pvhpc.scheduler.runners import LocalRunner
    from pvhpc.scheduler.slurm_cli import SlurmCLI
    from tests.harness.ports import free_port_block
    from tests.harness.service import site_config

    class RoomyCluster(LocalCluster):
        """The local cluster, with room for more jobs than Slurm's default MaxJobCount of 10,000."""

        def __init__(self, directory: Path, base_port: int, max_jobs: int):
            super().__init__(directory, base_port)
            self.max_jobs = max_jobs

        def write_config(self) -> None:
            super().write_config()
            with self.conf.open("a") as f:
                f.write(f"MaxJobCount={self.max_jobs}\n")

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="pvhpc-footprint-"))
    with Teardown(work) as undo:
        undo.add(lambda: shutil.rmtree(work, ignore_errors=True), "remove the work directory")
        cluster = start_cluster(undo, RoomyCluster(work / "cluster", free_port_block(5), max_jobs=max(sizes) + 10_000))
        env = dict(os.environ, **cluster.environment())

        started = time.monotonic()
        job_ids = submit_held_jobs(env, max(sizes)) if max(sizes) else []
        print(f"{len(job_ids)} held jobs submitted in {time.monotonic() - started:.0f} s", flush=True)
        held_job = None
        if job_ids:
            held_job = asyncio.run(SlurmCLI(LocalRunner(cluster.environment())).query(job_ids[:1]))[job_ids[0]]

        rows = []
        for n in sizes:
            directory = work / f"svc-{n}"
            config = site_config(cluster, directory, paths.runtime_dir(), poll_interval=args.poll_interval)
            row = measure(job_ids[:n], held_job, cluster, directory, config, args.window, args.settle, undo)
            rows.append(row)
            print(f"{n:>6} sessions: RSS {row['rss_mib']:.1f} MiB, CPU {row['cpu_pct']:.2f} % "
                  f"(+ squeue {row['squeue_cpu_pct']:.2f} %), poll cycle {row['cycle_median']:.3f} s, "
                  f"API max {row['stall_max'] * 1000:.0f} ms, start {row['start_seconds']:.1f} s", flush=True)
        print_results(rows, args.window, args.poll_interval)
        if args.plot:
            plot(rows, args.poll_interval, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
