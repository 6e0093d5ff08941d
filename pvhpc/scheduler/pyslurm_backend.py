"""Slurm through pyslurm's C bindings: no sbatch/squeue process per call, for sites that can build pyslurm.

Optional. pyslurm X.Y builds only against Slurm X.Y (docs/scheduler.md says how a
site installs the matching release). It answers the same interface, with the same
answers, as the command-line backend (tests/test_scheduler_backends.py runs the
same contract against both).

pyslurm itself never runs in the service's process: ``import pyslurm`` ends a
process whose slurm.conf cannot be found, and every pyslurm call holds the GIL
while libslurm waits for slurmctld, which would stall the event loop. So a few
long-lived worker processes (pyslurm_worker.py) hold it, started with
``scheduler.environment``; each call goes to one of them from a thread of this
backend's own pool, so the event loop only waits on a pipe. A worker that does
not answer within ``scheduler.command_timeout`` is killed and replaced, and the
call reads as "could not ask", like a timed-out squeue.

The workers run under ``scheduler.pyslurm_python`` (default: pvhpc's own python): one environment
holds one pyslurm, and pyslurm X.Y works only with Slurm X.Y, so a machine with two Slurms keeps a
pyslurm environment per Slurm (install.sh: /opt/pvhpc/pyslurm-RELEASE). The worker is one file of the
standard library and pyslurm, run by its path, so that environment needs nothing of pvhpc's. At start
the backend checks that pyslurm's release is the one of the site's Slurm tools (``sinfo --version``).

Jobs are the service account's: pyslurm acts as the user of the process that
calls it, so ``scheduler.submit_as: user`` needs the command-line backend
(the config check says so).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from pvhpc.errors import PvhpcError
from pvhpc.scheduler.base import (ChangeRefused, JobInfo, JobRequest, PartitionInfo, Scheduler, SchedulerUnavailable,
                                  SubmitRefused, unavailable)
from pvhpc.scheduler.runners import CommandUnavailable, LocalRunner, SudoRunner
from pvhpc.scheduler.slurm_cli import UNREACHABLE, _gres_gpus, latest_by_name, time_limit_argv
from pvhpc.scheduler.slurm_install import SlurmVersion, tool_path
from pvhpc.scheduler.slurm_states import job_info

#: worker processes, so that a burst of submissions does not queue behind one RPC at a time
WORKERS = 4
#: how long a worker may take to import pyslurm and say hello
START_TIMEOUT = 60.0
#: run by its path under scheduler.pyslurm_python (-I: nothing of that environment's PYTHONPATH or of the
#: directory the file is in, which holds modules named like the standard library's site)
WORKER = Path(__file__).with_name("pyslurm_worker.py")


class PySlurmUnavailable(PvhpcError):
    """pyslurm cannot be used here: not installed, or it cannot start with this site's scheduler.environment."""

    status = 503


def check_import(environment: dict[str, str], timeout: float = START_TIMEOUT, python: str | None = None) -> str:
    """Import pyslurm in a child process of ``python`` with ``environment``; return its version, or raise
    PySlurmUnavailable with what the child said (libslurm's "fatal: ..." when slurm.conf cannot be found)."""
    python = python or sys.executable
    if not os.access(python, os.X_OK):
        raise PySlurmUnavailable(f"scheduler.pyslurm_python: {python} is not an executable python",
                                 field="scheduler.pyslurm_python")
    env = dict(os.environ, **environment)
    conf = env.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        # libslurm would retry for a minute before giving up on it.
        raise PySlurmUnavailable(f"scheduler.backend 'pyslurm': SLURM_CONF {conf} is not a file "
                                 f"(set scheduler.environment.SLURM_CONF)", field="scheduler.backend")
    try:
        child = subprocess.run([python, "-I", "-c", "import pyslurm; print(pyslurm.__version__)"], env=env,
                               capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PySlurmUnavailable(f"scheduler.backend 'pyslurm': importing pyslurm took over {timeout:.0f} s",
                                 field="scheduler.backend") from None
    if child.returncode == 0:
        return child.stdout.strip()
    said = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
    if "No module named 'pyslurm'" in child.stderr:
        raise PySlurmUnavailable(f"scheduler.backend 'pyslurm' needs the pyslurm module matching this Slurm "
                                 f"release: {said} in {python} (see docs/scheduler.md)", field="scheduler.backend")
    conf = conf or "Slurm's default slurm.conf"
    raise PySlurmUnavailable(f"scheduler.backend 'pyslurm': pyslurm cannot start with {conf} "
                             f"(set scheduler.environment.SLURM_CONF): {said}", field="scheduler.backend")


def check_release(pyslurm_version: str, environment: dict[str, str], prefix=None) -> SlurmVersion | None:
    """The site's Slurm, as its tools say (``sinfo --version``), if pyslurm's release is the same; PySlurmUnavailable
    if not: libslurm of another release does not speak to this slurmctld. None where the tools are not here
    to ask (a host with pyslurm but no Slurm commands): nothing to compare with then."""
    try:
        said = subprocess.run([tool_path(prefix, "sinfo"), "--version"], env=dict(os.environ, **environment),
                              capture_output=True, text=True, timeout=30)
        slurm = SlurmVersion.parse(said.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    # pyslurm numbers its releases as Slurm's without the leading zero: 22.5.x is for Slurm 22.05.
    built_for = SlurmVersion.parse(pyslurm_version + ".0" * (2 - pyslurm_version.count(".")))
    if (built_for.major, built_for.minor) != (slurm.major, slurm.minor):
        raise PySlurmUnavailable(f"pyslurm {pyslurm_version} is for Slurm {built_for.release}, and this site's "
                                 f"Slurm is {slurm} (sinfo --version): set scheduler.pyslurm_python to a python with "
                                 f"pyslurm {slurm.release}.* (docs/scheduler.md)", field="scheduler.pyslurm_python")
    return slurm


class _Worker:
    """One pyslurm_worker process, used by one thread at a time."""

    def __init__(self, env: dict[str, str], python: str):
        self.proc = subprocess.Popen([python, "-I", str(WORKER)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = self._read(START_TIMEOUT)
        if not hello.get("ok"):
            self.kill()
            raise SchedulerUnavailable(f"the pyslurm worker could not start: {hello.get('error')}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise SchedulerUnavailable(f"pyslurm: no answer from Slurm within {timeout:.0f} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    code = self.proc.wait()
                    raise SchedulerUnavailable(f"the pyslurm worker exited (status {code}); see the service's log")
                return json.loads(line)

    def call(self, op: str, args: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            code = self.proc.wait()
            raise SchedulerUnavailable(f"the pyslurm worker exited (status {code}); see the service's log") from None
        return self._read(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class PySlurm(Scheduler):
    name = "pyslurm"

    def __init__(self, environment: dict[str, str] | None = None, timeout: float = 30, workers: int = WORKERS,
                 python: str | os.PathLike | None = None, prefix: str | os.PathLike | None = None,
                 extend_helper: str | os.PathLike | None = None):
        self.environment = dict(environment or {})
        # pyslurm acts as this process's user: the sudo way to raise a time limit is the helper's, as a command.
        self.extend_helper = str(extend_helper) if extend_helper else None
        self.python = str(python or sys.executable)
        self.version = check_import(self.environment, python=self.python)
        self.slurm_version = check_release(self.version, self.environment, prefix)
        self.timeout = timeout
        self.workers = workers
        self._env = dict(os.environ, **self.environment)
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._started: list[_Worker] = []
        self._lock = threading.Lock()
        #: requests sent, by operation: what the tracker's batching is measured by
        self.calls: dict[str, int] = {}

    @classmethod
    def from_config(cls, scheduler_config, runner=None, runner_for_user=None) -> "PySlurm":
        # pyslurm talks to slurmctld itself: it needs no command runner, only the environment.
        return cls(scheduler_config.environment, timeout=scheduler_config.command_timeout,
                   python=getattr(scheduler_config, "pyslurm_python", None),
                   prefix=getattr(scheduler_config, "slurm_prefix", None),
                   extend_helper=getattr(scheduler_config, "extend_helper", None))

    async def about(self) -> dict:
        return {"backend": self.name, "pyslurm": self.version, "python": self.python,
                "slurm": str(self.slurm_version) if self.slurm_version else "unknown (no sinfo to ask)"}

    # -- the worker processes ------------------------------------------------
    def _blocking_call(self, op: str, args: dict):
        worker = getattr(self._local, "worker", None)
        if worker is None or not worker.alive():
            worker = self._local.worker = _Worker(self._env, self.python)
            with self._lock:
                self._started = [w for w in self._started if w.alive()] + [worker]
        answer = worker.call(op, args, self.timeout)
        if answer.get("ok"):
            return answer.get("result")
        raise _Refusal(answer.get("kind", ""), answer.get("error", ""))

    async def _call(self, op: str, **args):
        self.calls[op] = self.calls.get(op, 0) + 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pyslurm")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._blocking_call, op, args)
        except _Refusal as e:
            if UNREACHABLE.search(e.error):
                raise unavailable(f"pyslurm {op}: {e.error}") from None
            raise

    def close(self) -> None:
        with self._lock:
            started, self._started = self._started, []
        for worker in started:
            worker.kill()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
            self._local = threading.local()

    # -- the interface ---------------------------------------------------------
    @staticmethod
    def description(request: JobRequest) -> dict:
        """pyslurm's JobSubmitDescription for the job, option for option what SlurmCLI.sbatch_argv asks."""
        d = dict(
            name=request.name, partitions=request.partition, time_limit=request.time_limit_minutes,
            standard_output=request.output, cpus_per_task=request.cpus, nodes=request.nodes, ntasks=request.ntasks,
            # sbatch --export=NONE: the user's own login environment, never the service's; --no-requeue.
            environment="NONE", is_requeueable=False, script=request.script,
        )
        if request.gpus:
            d["gres_per_node"] = {f"gpu:{request.gpu_type}" if request.gpu_type else "gpu": request.gpus}
        optional = dict(memory_per_node=request.memory_mb, account=request.account, qos=request.qos,
                        comment=request.comment, working_directory=request.workdir)
        d.update((k, v) for k, v in optional.items() if v)
        return d

    async def submit(self, request: JobRequest) -> str:
        try:
            return await self._call("submit", description=self.description(request))
        except _Refusal as e:
            raise SubmitRefused(f"slurm_submit_batch_job: {e.error}") from None

    async def _jobs(self, **which) -> list[JobInfo]:
        try:
            found = await self._call("jobs", **which)
        except _Refusal as e:
            raise SchedulerUnavailable(f"pyslurm Jobs.load: {e.error}") from None
        return [_job_info(j) for j in found]

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        if not job_ids:
            return {}
        return {job.job_id: job for job in await self._jobs(ids=list(job_ids))}

    async def find_by_name(self, names: list[str]) -> dict[str, JobInfo]:
        if not names:
            return {}
        return latest_by_name(await self._jobs(names=list(names)))

    async def lookup_finished(self, job_id: str) -> JobInfo | None:
        try:
            found = await self._call("finished", job_id=str(job_id))
        except _Refusal as e:
            raise SchedulerUnavailable(f"pyslurm db.Job.load {job_id}: {e.error}") from None
        return _job_info(found) if found else None

    async def cancel(self, job_id: str, user: str | None = None) -> None:
        try:
            await self._call("cancel", job_id=str(job_id))
        except _Refusal as e:
            raise SchedulerUnavailable(f"pyslurm cancel {job_id}: {e.error}") from None

    async def set_time_limit(self, job_id: str, minutes: int, through: str) -> None:
        argv = time_limit_argv(job_id, minutes, through, self.extend_helper)   # checks the numbers for both ways
        if through == "sudo":
            try:
                result = await SudoRunner(LocalRunner(self.environment), "root").run(argv, timeout=self.timeout)
            except CommandUnavailable as e:
                raise SchedulerUnavailable(str(e)) from None
            if not result.ok:
                if UNREACHABLE.search(result.stderr):
                    raise SchedulerUnavailable(result.describe())
                raise ChangeRefused(result.describe())
            return
        try:
            await self._call("set_time_limit", job_id=str(job_id), minutes=int(minutes))
        except _Refusal as e:
            raise ChangeRefused(f"slurm_update_job {job_id}: {e.error}") from None

    async def _nodes(self) -> list[dict]:
        try:
            return await self._call("nodes")
        except _Refusal as e:
            raise SchedulerUnavailable(f"pyslurm Nodes.load: {e.error}") from None

    async def node_addresses(self) -> dict[str, set[str]]:
        return {n["name"]: {n["name"], *(a for a in (n["address"], n["hostname"]) if a and a != "(null)")}
                for n in await self._nodes()}

    async def partitions(self) -> list[PartitionInfo]:
        try:
            found = await self._call("partitions")
        except _Refusal as e:
            raise SchedulerUnavailable(f"pyslurm Partitions.load: {e.error}") from None
        nodes = sorted(found["nodes"], key=lambda n: n["name"])
        out = []
        for p in found["partitions"]:
            members = [n for n in nodes if p["name"] in n["partitions"]]
            gpu_types: dict[str, int] = {}
            total = used = 0
            for n in members:
                for gtype, count in _gres_gpus(",".join(n["gres"])):
                    gpu_types[gtype] = max(gpu_types.get(gtype, 0), count)
                    total += count
                used += sum(count for _, count in _gres_gpus(",".join(n["gres_used"])))
            out.append(PartitionInfo(
                name=p["name"], available=p["state"].upper() == "UP",
                max_time_minutes=_minutes(p["max_time"]), default_time_minutes=_minutes(p["default_time"]),
                nodes=tuple(n["name"] for n in members),
                idle_nodes=sum(1 for n in members if _idle(n["state"])),
                gpu_types=gpu_types, gpus_total=total, gpus_used=used,
            ))
        return out


class _Refusal(PvhpcError):
    """libslurm (or pyslurm) said no: ``error`` is its message. Never leaves this module: each call turns it
    into "could not ask" or a refusal of its own."""

    def __init__(self, kind: str, error: str):
        # libslurm's messages are one line; anything longer is not one of them and is not passed on.
        self.kind, self.error = kind, error if len(error) <= 500 else error[:500] + "…"
        super().__init__(self.error)


def _job_info(job: dict) -> JobInfo:
    start = job.get("start")
    return job_info(job["id"], job["state"], job["reason"], job["nodes"], job["name"],
                    expected_start=datetime.fromtimestamp(start) if start else None,
                    exit_code=job.get("exit_code", ""))


def _minutes(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None   # "UNLIMITED", None


def _idle(state: str) -> bool:
    """Idle as sinfo's compact state says 'idle' (also 'idle*', 'idle~'): not drained, reserved, in maintenance,
    nor planned by the backfill scheduler for a waiting job (IDLE+PLANNED, which sinfo shows as 'plnd')."""
    base, *flags = (state or "").upper().split("+")
    return base.rstrip("*~#$@!%") == "IDLE" and not set(flags) & {"DRAIN", "RESERVED", "MAINT", "FAIL", "PLANNED"}
