"""What pvhpc needs from a batch scheduler, and nothing more.

A backend answers five questions: submit this script, how are these jobs,
which jobs carry these names, how did this finished job end, and what
partitions are there. Every call that could not reach the scheduler raises
SchedulerUnavailable, which callers must never read as "job gone".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class SchedulerUnavailable(Exception):
    """The scheduler could not be asked (down, timed out, unreachable). The jobs' fate is unknown."""


class ControllerDown(SchedulerUnavailable):
    """A submission never reached the controller (no connection at all): certainly nothing was queued."""


class SubmitRefused(Exception):
    """The scheduler answered and refused the job (bad partition, limits...). Nothing was queued."""


@dataclass(frozen=True)
class JobRequest:
    script: str
    name: str
    partition: str
    time_limit_minutes: int
    output: str
    gpus: int = 0
    gpu_type: str | None = None
    cpus: int = 1
    memory_mb: int | None = None
    account: str | None = None
    qos: str | None = None
    comment: str | None = None
    workdir: str | None = None
    user: str | None = None        # submit as this user (when the site runs jobs as their users)


# Slurm's job states grouped by what they mean for a session.
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
                            "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING"})


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str                     # Slurm's state name, e.g. PENDING, RUNNING, CANCELLED
    reason: str = ""               # Slurm's reason code, e.g. Resources, Priority
    nodes: str = ""
    name: str = ""
    expected_start: datetime | None = None
    exit_code: str = ""

    @property
    def is_pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def is_running(self) -> bool:
        return self.state == "RUNNING"

    @property
    def is_finished(self) -> bool:
        return not self.is_pending and not self.is_running and self.state != "COMPLETING"


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
    """The interface every backend implements."""

    #: how a backend is named in config and messages
    name = "scheduler"

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

    async def node_addresses(self) -> dict[str, set[str]]:
        """Every node's names and addresses (NodeName, NodeAddr, NodeHostname), for checking where a job says it is."""
        raise NotImplementedError
