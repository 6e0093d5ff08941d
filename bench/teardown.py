"""Undo what a benchmark started, in reverse order, however the benchmark ends.

A benchmark that leaves a Slurm cluster, a service or jobs behind spoils the
next run and whatever else runs on the machine. So each script registers an
undo step right before it starts something, inside ``with Teardown() as undo:``;
the steps run on a normal end, on an error, on Ctrl-C and on SIGTERM/SIGHUP.
A second Ctrl-C during the clean-up is ignored rather than cutting it short.
Afterwards it lists any process still running from the benchmark's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def _interrupted(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def processes_under(directory: Path) -> list[str]:
    """Processes whose command line or environment names ``directory`` (daemons, job scripts, servers)."""
    marker = str(directory).encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if cmd and (marker in cmd or marker in env):
            words = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {words[:160]}")
    return found


class Teardown:
    def __init__(self, directory: Path | None = None):
        self.directory = directory      # checked for leftover processes once every step has run
        self.steps: list[tuple[Callable[[], object], str]] = []

    def add(self, step: Callable[[], object], what: str) -> None:
        self.steps.append((step, what))

    def __enter__(self) -> "Teardown":
        self._saved = {s: signal.signal(s, _interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
        # Ctrl-C too, even where the script started with SIGINT ignored (a background job of a script).
        self._saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc) -> bool:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        try:
            while self.steps:
                step, what = self.steps.pop()
                try:
                    step()
                except Exception as e:   # keep going: a cluster left running blocks the next run
                    print(f"clean-up: {what}: {e}", file=sys.stderr)
            if self.directory is not None:
                left = processes_under(self.directory)
                if left:
                    print("clean-up: still running:\n  " + "\n  ".join(left), file=sys.stderr)
        finally:
            for s, handler in self._saved.items():
                signal.signal(s, handler)
        return False


def start_cluster(undo: Teardown, cluster):
    """Start a benchmark's private local Slurm cluster, with its stop (which cancels every job) as an undo step."""
    undo.add(cluster.stop, "stop the cluster (cancels every job)")
    print("starting a local Slurm cluster ...", flush=True)
    cluster.start()
    return cluster


def start_bench_cluster(undo: Teardown, work: Path, single_host: bool):
    """A benchmark's private cluster under ``work`` (its nodes hosts of their own unless ``single_host``), its shape
    said, and the runtime its nodes need installed: (cluster, runtime directory)."""
    from pvhpc import paths, runtime
    from pvhpc.localcluster.cluster import LocalCluster
    from tests.harness.ports import free_port_block

    cluster = start_cluster(undo, LocalCluster(work / "cluster", base_port=free_port_block(5),
                                               hosts=False if single_host else None))
    print(f"the cluster's {cluster.describe_shape()}", flush=True)
    runtime_dir = paths.runtime_dir()
    runtime.install(runtime_dir)
    return cluster, runtime_dir


def wait_idle(env: dict, timeout: float = 90) -> None:
    """Until Slurm holds no job: each round starts on an idle cluster."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.2)
    raise RuntimeError(f"jobs still in the queue after {timeout:.0f} s")
