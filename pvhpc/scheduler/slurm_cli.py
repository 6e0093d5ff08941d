"""Slurm through its command-line tools (sbatch, squeue, sacct, scancel, sinfo, scontrol).

The default backend: it works with any Slurm release, needs no build against
Slurm's libraries, and runs wherever a CommandRunner can run a command (here,
as another user through sudo, or on a login node over SSH).

Releases differ in what their tools print (docs/scheduler.md lists what pvhpc met in 22.05 and 25.11);
the backend asks the tools' version once (``sinfo --version``) and says which Slurm it speaks.
"""

from __future__ import annotations

import re
from datetime import datetime

from pvhpc.jobs.durations import parse_minutes as _parse_minutes
from pvhpc.scheduler.runners import CommandRunner, CommandResult, CommandUnavailable, SudoRunner
from pvhpc.scheduler.base import (ChangeRefused, JobInfo, JobRequest, PartitionInfo, Scheduler, SchedulerUnavailable,
                                  SubmitRefused, unavailable)
from pvhpc.scheduler.slurm_install import SlurmVersion, tool_path
from pvhpc.scheduler.slurm_states import job_info

SQUEUE_FORMAT = "%i|%T|%r|%N|%S|%j"

# Messages of Slurm's client tools that mean "the controller did not answer", as opposed to "it said no".
UNREACHABLE = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Zero Bytes were transmitted|Connection refused"
    r"|Communication connection failure|Slurm backup controller in standby|slurm_receive_msg|"
    r"Unable to establish controller machine|Transport endpoint|Connection timed out|Resource temporarily unavailable"
    # 25.11, a controller going down under a submission: the request may or may not have been taken.
    r"|Connection reset by peer",
    re.IGNORECASE,
)
INVALID_JOB_ID = "Invalid job id specified"


def parse_time(text: str) -> datetime | None:
    if not text or text in ("N/A", "Unknown", "None", "(null)"):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_squeue(stdout: str) -> list[JobInfo]:
    jobs = []
    for line in stdout.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        job_id, state, reason, nodes, start, name = (f.strip() for f in fields[:6])
        jobs.append(job_info(job_id, state, reason, nodes, name, expected_start=parse_time(start)))
    return jobs


def latest_by_name(jobs: list[JobInfo]) -> dict[str, JobInfo]:
    """Jobs keyed by name. A resubmission would make two of a name; the live one (or the newest) is kept."""
    found: dict[str, JobInfo] = {}
    for job in jobs:
        if job.name not in found or not job.is_finished:
            found[job.name] = job
    return found


# Linux refuses a single argument longer than 128 KiB (MAX_ARG_STRLEN): at about 16,000 job ids one
# comma-separated list no longer fits, so longer lists go to squeue in parts of at most this size.
MAX_LIST_ARGUMENT = 100_000


def comma_lists(items: list[str], limit: int = MAX_LIST_ARGUMENT) -> list[str]:
    """``items`` joined by commas, in as few arguments of at most ``limit`` characters as it takes."""
    lists, current, size = [], [], 0
    for item in items:
        if current and size + len(item) + 1 > limit:
            lists.append(",".join(current))
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        lists.append(",".join(current))
    return lists


class SlurmCLI(Scheduler):
    name = "slurm"

    def __init__(self, runner: CommandRunner, timeout: float = 30, runner_for_user=None, prefix=None,
                 extend_helper=None):
        self.runner = runner
        # The fixed helper that raises a job's time limit as root through sudo (partitions' extend_walltime: sudo).
        self.extend_helper = str(extend_helper) if extend_helper else None
        # A Slurm not on PATH (scheduler.slurm_prefix): its tools by their full path, so that sudo's secure_path
        # or a login host's PATH cannot pick another release's.
        self.prefix = prefix
        #: the release of the tools, once asked (version())
        self.slurm_version: SlurmVersion | None = None
        # Submitting and cancelling as the session's user (sudo, SSH as the user); queries stay the service's.
        self.runner_for_user = runner_for_user
        self.timeout = timeout
        #: number of scheduler commands run, by command: what the tracker's batching is measured by
        self.calls: dict[str, int] = {}

    @classmethod
    def from_config(cls, scheduler_config, runner, runner_for_user=None) -> "SlurmCLI":
        return cls(runner, timeout=scheduler_config.command_timeout, runner_for_user=runner_for_user,
                   prefix=getattr(scheduler_config, "slurm_prefix", None),
                   extend_helper=getattr(scheduler_config, "extend_helper", None))

    async def _run(self, argv: list[str], input: str | None = None, user: str | None = None,
                   runner: CommandRunner | None = None) -> CommandResult:
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        runner = runner or (self.runner_for_user(user) if user and self.runner_for_user else self.runner)
        program = argv[0] if argv[0].startswith("/") else tool_path(self.prefix, argv[0])
        try:
            result = await runner.run([program, *argv[1:]], input=input, timeout=self.timeout)
        except CommandUnavailable as e:   # names the full path: a wrong scheduler.slurm_prefix shows
            raise SchedulerUnavailable(str(e)) from None
        result.argv = argv   # what Slurm said names the tool, not where it is installed
        return result

    async def version(self) -> SlurmVersion:
        """The release of the Slurm tools this backend runs, asked once; SchedulerUnavailable if they cannot
        say (not installed there, or no slurm.conf: the tools read it even for this)."""
        if self.slurm_version is None:
            result = await self._run(["sinfo", "--version"])
            try:
                self.slurm_version = SlurmVersion.parse(result.stdout)
            except ValueError:
                raise SchedulerUnavailable(f"cannot tell Slurm's version: {result.describe()}") from None
        return self.slurm_version

    async def about(self) -> dict:
        about = {"backend": self.name, "tools": f"{self.prefix}/bin" if self.prefix else "on PATH"}
        try:
            about["slurm"] = str(await self.version())
        except SchedulerUnavailable as e:
            about["slurm"] = f"unknown ({e})"
        return about

    def _unavailable_or(self, result: CommandResult, exc_type):
        if UNREACHABLE.search(result.stderr):
            return unavailable(result.describe())
        return exc_type(result.describe())

    @staticmethod
    def sbatch_argv(request: JobRequest) -> list[str]:
        argv = [
            "sbatch", "--parsable",
            f"--job-name={request.name}",
            f"--partition={request.partition}",
            f"--time={request.time_limit_minutes}",
            f"--output={request.output}",
            f"--cpus-per-task={request.cpus}",
            f"--nodes={request.nodes}", f"--ntasks={request.ntasks}",
            # The job gets the user's own login environment, never the service's.
            "--export=NONE",
            # A session's server cannot move: after a node failure its clients and port are gone, so the
            # session ends (node_failure) rather than coming back later somewhere else.
            "--no-requeue",
        ]
        if request.gpus:
            gres = f"gpu:{request.gpu_type}:{request.gpus}" if request.gpu_type else f"gpu:{request.gpus}"
            argv.append(f"--gres={gres}")
        if request.memory_mb:
            argv.append(f"--mem={request.memory_mb}")
        if request.account:
            argv.append(f"--account={request.account}")
        if request.qos:
            argv.append(f"--qos={request.qos}")
        if request.comment:
            argv.append(f"--comment={request.comment}")
        if request.workdir:
            argv.append(f"--chdir={request.workdir}")
        return argv

    async def submit(self, request: JobRequest) -> str:
        result = await self._run(self.sbatch_argv(request), input=request.script, user=request.user)
        if not result.ok:
            raise self._unavailable_or(result, SubmitRefused)
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SchedulerUnavailable(f"sbatch printed no job id: {result.stdout.strip()[:200]!r}")
        return job_id

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        jobs: dict[str, JobInfo] = {}
        for ids in comma_lists(job_ids):
            result = await self._run(["squeue", "-h", "-t", "all", "-j", ids, "-o", SQUEUE_FORMAT])
            if not result.ok:
                # squeue fails this way only when every id it was given is unknown.
                if INVALID_JOB_ID in result.stderr:
                    continue
                raise SchedulerUnavailable(result.describe())
            jobs.update((job.job_id, job) for job in parse_squeue(result.stdout))
        return jobs

    async def find_by_name(self, names: list[str]) -> dict[str, JobInfo]:
        listed = []
        for chunk in comma_lists(names):
            result = await self._run(["squeue", "-h", "-t", "all", "-n", chunk, "-o", SQUEUE_FORMAT])
            if not result.ok:
                raise SchedulerUnavailable(result.describe())
            listed += parse_squeue(result.stdout)
        return latest_by_name(listed)

    async def lookup_finished(self, job_id: str) -> JobInfo | None:
        result = await self._run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode,NodeList,JobName"])
        if not result.ok:
            if "accounting storage is disabled" in (result.stderr + result.stdout):
                return None
            raise SchedulerUnavailable(result.describe())
        for line in result.stdout.splitlines():
            fields = line.split("|")
            if len(fields) >= 5 and fields[0] == job_id:
                return job_info(job_id, fields[1], nodes=fields[3], name=fields[4], exit_code=fields[2])
        return None

    async def cancel(self, job_id: str, user: str | None = None) -> None:
        result = await self._run(["scancel", job_id], user=user)
        if not result.ok and INVALID_JOB_ID not in result.stderr:
            raise unavailable(result.describe())

    async def set_time_limit(self, job_id: str, minutes: int, through: str) -> None:
        argv, runner = time_limit_argv(job_id, minutes, through, self.extend_helper), None
        if through == "sudo":
            # As root, and only this one fixed command with its own argument check (docs/sudoers.pvhpc).
            runner = SudoRunner(self.runner, "root")
        result = await self._run(argv, runner=runner)
        if not result.ok:
            raise self._unavailable_or(result, ChangeRefused)

    async def node_addresses(self) -> dict[str, set[str]]:
        result = await self._run(["sinfo", "-h", "-N", "-o", "%N|%o|%n"])
        if not result.ok:
            raise SchedulerUnavailable(result.describe())
        nodes: dict[str, set[str]] = {}
        for line in result.stdout.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) == 3 and fields[0]:
                nodes.setdefault(fields[0], set()).update(f for f in fields if f and f != "(null)")
        return nodes

    async def partitions(self) -> list[PartitionInfo]:
        parts = await self._run(["scontrol", "show", "partition", "-o"])
        if not parts.ok:
            raise SchedulerUnavailable(parts.describe())
        nodes = await self._run(["sinfo", "-h", "-N", "-O", "NodeList:|,Partition:|,StateCompact:|,Gres:|,GresUsed:|"])
        if not nodes.ok:
            raise SchedulerUnavailable(nodes.describe())
        per_partition: dict[str, list[tuple[str, str, str, str]]] = {}
        for line in nodes.stdout.splitlines():
            f = [x.strip() for x in line.split("|")]
            if len(f) >= 5:
                per_partition.setdefault(f[1].rstrip("*"), []).append((f[0], f[2], f[3], f[4]))
        out = []
        for line in parts.stdout.splitlines():
            kv = dict(item.split("=", 1) for item in line.split() if "=" in item)
            name = kv.get("PartitionName", "")
            rows = per_partition.get(name, [])
            gpu_types: dict[str, int] = {}
            total = used = 0
            for _node, _state, gres, gres_used in rows:
                for gtype, count in _gres_gpus(gres):
                    gpu_types[gtype] = max(gpu_types.get(gtype, 0), count)
                    total += count
                used += sum(count for _, count in _gres_gpus(gres_used))
            out.append(PartitionInfo(
                name=name,
                available=kv.get("State") == "UP",
                max_time_minutes=_slurm_limit(kv.get("MaxTime", "")),
                default_time_minutes=_slurm_limit(kv.get("DefaultTime", "")),
                nodes=tuple(r[0] for r in rows),
                idle_nodes=sum(1 for r in rows if r[1].rstrip("*~#$@") == "idle"),
                gpu_types=gpu_types, gpus_total=total, gpus_used=used,
            ))
        return out


def time_limit_argv(job_id: str, minutes: int, through: str, helper: str | None) -> list[str]:
    """The command that makes job ``job_id``'s time limit ``minutes``: scontrol update as an operator, or the
    helper (deploy/pvhpc-extend-job, run through sudo as root), which takes the same two numbers and nothing else."""
    if not str(job_id).isdigit() or isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise ValueError(f"a job id and a positive whole number of minutes, not {job_id!r} and {minutes!r}")
    if through == "operator":
        return ["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}"]
    if through == "sudo":
        if not helper:
            raise ChangeRefused("no helper to raise a job's time limit through sudo (scheduler.extend_helper)")
        return [helper, str(job_id), str(minutes)]
    raise ValueError(f"{through!r} is not a way to raise a job's time limit (operator, sudo)")


def _gres_gpus(text: str) -> list[tuple[str, int]]:
    """'gpu:a100:2,foo:1' -> [('a100', 2)]; 'gpu:a100:1(IDX:0)' -> [('a100', 1)]; 'gpu:2' -> [('', 2)]."""
    found = []
    for item in re.split(r",(?![^(]*\))", text or ""):
        item = re.sub(r"\(.*\)", "", item).strip()
        parts = item.split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        try:
            if len(parts) == 2:
                found.append(("", int(parts[1])))
            else:
                found.append((parts[1], int(parts[2])))
        except ValueError:
            continue
    return found


def _slurm_limit(text: str) -> int | None:
    try:
        return _parse_minutes(text)
    except ValueError:
        return None  # NONE, N/A: no limit set
