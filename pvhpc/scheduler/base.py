"""What pvhpc needs from a batch scheduler, and nothing more, in pvhpc's own words.

A backend answers five questions: submit this script, how are these jobs,
which jobs carry these names, how did this finished job end, and what
partitions are there. Every call that could not reach the scheduler raises
SchedulerUnavailable, which callers must never read as "job gone".

Each backend maps its scheduler's states into the small neutral vocabulary
below (JobState, EndCause, QueueReason), as ood_core's adapters do with their
STATE_MAP: the code that decides what a session does (sessions/lifecycle.py,
the tracker, the service, web and CLI) never sees a scheduler's own state
words. The scheduler's own text is kept beside them, for messages only.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from pvhpc.errors import PvhpcError


class SchedulerUnavailable(PvhpcError):
    """The scheduler could not be asked (down, timed out, unreachable). The jobs' fate is unknown."""

    status = 503


class ControllerDown(SchedulerUnavailable):
    """A request never reached the controller (no connection at all): certainly nothing was done, no job queued
    and none cancelled. Slurm's own clients have already retried the connection by then."""


class NoAnswer(SchedulerUnavailable):
    """A request went out and Slurm's client gave up waiting for the answer ("Socket timed out", a busy
    controller): it may or may not have been carried out."""


def unavailable(message: str) -> SchedulerUnavailable:
    """What Slurm's words of a request that failed to get through mean: ControllerDown for its "connect
    failure", NoAnswer for its "Socket timed out", else SchedulerUnavailable."""
    if "(connect failure)" in message:
        return ControllerDown(message)
    if "Socket timed out" in message:
        return NoAnswer(message)
    return SchedulerUnavailable(message)


class SubmitRefused(PvhpcError):
    """The scheduler answered and refused the job (bad partition, limits...). Nothing was queued."""

    status = 400


class ChangeRefused(PvhpcError):
    """The scheduler answered and refused to change a job (not allowed, over a limit, job not running): its
    own words are the message. Nothing was changed."""

    status = 409


#: how pvhpc may raise a running job's time limit (a partition's ``extend_walltime``): as a Slurm operator
#: itself, or through the fixed helper (deploy/pvhpc-extend-job) that the site's sudoers rule lets it run as root
TIME_LIMIT_WAYS = ("operator", "sudo")


class JobState(str, Enum):
    """Where a job is, as far as a session cares."""

    PENDING = "pending"     # waits to run: queued, held, requeued, suspended, nodes being set up
    RUNNING = "running"
    ENDING = "ending"       # finished, the scheduler is still cleaning up: the final word follows
    ENDED = "ended"         # for good; JobInfo.end says how

    def __str__(self) -> str:
        return self.value


class EndCause(str, Enum):
    """How a job ended, in the scheduler's account of it."""

    COMPLETED = "completed"     # its script exited 0
    CANCELLED = "cancelled"     # by someone (pvhpc records its own cancels apart)
    TIMEOUT = "timeout"         # time limit or deadline reached
    NODE_FAIL = "node_fail"
    BOOT_FAIL = "boot_fail"     # its node could not be booted
    PREEMPTED = "preempted"
    OUT_OF_MEMORY = "out_of_memory"
    FAILED = "failed"           # non-zero exit, or any end the backend has no better word for

    def __str__(self) -> str:
        return self.value


class QueueReason(str, Enum):
    """Why a pending job waits."""

    NONE = "none"                       # no reason given yet: waiting to be scheduled
    RESOURCES = "resources"             # for free nodes, GPUs, memory
    PRIORITY = "priority"               # behind jobs with higher priority
    DEPENDENCY = "dependency"
    USER_JOB_LIMIT = "user_job_limit"   # the user runs as many jobs as their QoS allows
    USER_GPU_LIMIT = "user_gpu_limit"   # the user uses as many GPUs as their QoS allows
    ACCOUNT_JOB_LIMIT = "account_job_limit"
    NODE_UNAVAILABLE = "node_unavailable"   # a node it needs is drained, down or reserved
    PARTITION_DOWN = "partition_down"
    PARTITION_INACTIVE = "partition_inactive"
    OVER_TIME_LIMIT = "over_time_limit"     # its walltime is over the partition's limit
    HELD_BY_USER = "held_by_user"
    HELD_BY_ADMIN = "held_by_admin"
    BEGIN_TIME = "begin_time"
    RESERVATION = "reservation"
    OTHER = "other"                     # none of these: JobInfo.reason has the scheduler's own word

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class JobRequest:
    script: str
    name: str
    partition: str
    time_limit_minutes: int
    output: str
    gpus: int = 0
    gpu_type: str | None = None
    cpus: int = 1                  # per task
    memory_mb: int | None = None
    nodes: int = 1                 # a parallel session's ParaView server spans several nodes ...
    ntasks: int = 1                # ... with one task per MPI rank
    account: str | None = None
    qos: str | None = None
    comment: str | None = None
    workdir: str | None = None
    user: str | None = None        # submit as this user (when the site runs jobs as their users)


def expand_node_list(text: str) -> list[str]:
    """A compressed node list (Slurm's, and most schedulers' notation): ``cpu[01-03,7],gpu1`` -> cpu01, ..."""
    names: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]*)\[([^\]]*)\][^,]*|([^,\[\]]+)", text):
        if plain:
            names.append(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if not high:
                names.append(prefix + low)
            elif low.isdigit() and high.isdigit() and int(high) - int(low) < 100000:
                names.extend(f"{prefix}{i:0{len(low)}d}" for i in range(int(low), int(high) + 1))
    return names


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: JobState
    name: str = ""
    nodes: str = ""
    expected_start: datetime | None = None      # for a pending job, when the scheduler expects it to start
    queue_reason: QueueReason = QueueReason.NONE   # for a pending job: why it waits
    end: EndCause | None = None                 # for an ended job: how
    exit_code: str = ""
    reason: str = ""       # the scheduler's own reason text, e.g. Slurm's "Resources"; for messages only
    said: str = ""         # what the scheduler said of the job in its own words, e.g. "Slurm state TIMEOUT"

    @property
    def is_pending(self) -> bool:
        return self.state is JobState.PENDING

    @property
    def is_running(self) -> bool:
        return self.state is JobState.RUNNING

    @property
    def is_finished(self) -> bool:
        return self.state is JobState.ENDED


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    available: bool
    max_time_minutes: int | None
    default_time_minutes: int | None
    nodes: tuple[str, ...]
    idle_nodes: int
    gpu_types: dict[str, int] = field(default_factory=dict)   # type -> GPUs per node (max over nodes)
    gpus_total: int = 0
    gpus_used: int = 0


class Scheduler:
    """The interface every backend implements.

    Backends are plug-ins (entry-point group ``pvhpc.schedulers``, see pvhpc/plugins.py), all built the
    same way: ``from_config(scheduler_config, runner, runner_for_user)``.
    """

    #: how a backend is named in config and messages
    name = "scheduler"

    @classmethod
    def from_config(cls, scheduler_config, runner, runner_for_user=None) -> "Scheduler":
        """Build the backend for a site's ``scheduler:`` section (pvhpc.config.SchedulerConfig). ``runner``
        runs a command where the scheduler's tools run; ``runner_for_user(user)`` runs one as that user."""
        raise NotImplementedError

    async def submit(self, request: JobRequest) -> str:
        """Queue the job; return its id. SubmitRefused if the scheduler said no, SchedulerUnavailable if unsure."""
        raise NotImplementedError

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """One call for many jobs. A job missing from the answer is no longer known to the scheduler's queue."""
        raise NotImplementedError

    async def find_by_name(self, names: list[str]) -> dict[str, JobInfo]:
        """Jobs by name, for submissions whose answer was lost. Keyed by job name."""
        raise NotImplementedError

    async def lookup_finished(self, job_id: str) -> JobInfo | None:
        """A second look for a job gone from the queue (accounting). None where there is no record."""
        raise NotImplementedError

    async def cancel(self, job_id: str, user: str | None = None) -> None:
        """Cancel the job (as ``user`` when the site runs jobs as their users). Fine if it already ended."""
        raise NotImplementedError

    async def partitions(self) -> list[PartitionInfo]:
        raise NotImplementedError

    async def set_time_limit(self, job_id: str, minutes: int, through: str) -> None:
        """Make a running job's whole time limit ``minutes`` (the total, not an addition: asked twice, it is
        the same). ``through`` one of TIME_LIMIT_WAYS. ChangeRefused with the scheduler's words when it said
        no, SchedulerUnavailable when it could not be asked (then the limit may or may not have changed)."""
        raise NotImplementedError

    async def node_addresses(self) -> dict[str, set[str]]:
        """Every node's names and addresses (NodeName, NodeAddr, NodeHostname), for checking where a job says it is."""
        raise NotImplementedError

    def node_names(self, nodes: str) -> list[str]:
        """The node names in a JobInfo's ``nodes`` (a job on several nodes has a list such as cpu[01-02],a7)."""
        return expand_node_list(nodes)

    async def about(self) -> dict:
        """Which backend this is and what it speaks to (for /api/v1/health and pvhpc doctor), e.g. {"backend":
        "slurm", "slurm": "25.11.7", ...}. Never raises: what it cannot find out it says so in its values."""
        return {"backend": self.name}

    def close(self) -> None:
        """Let go of what the backend holds (worker processes); it may be used again after, and starts them anew."""
