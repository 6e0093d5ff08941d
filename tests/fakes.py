"""Stand-ins for the pure-logic tests, in one place (as JupyterHub keeps its own in mocking.py).

Tests that need the real Slurm use the ``cluster`` and ``slurm`` fixtures instead.
"""

from __future__ import annotations

from pvhpc.scheduler import ChangeRefused, EndCause, JobInfo, JobState, QueueReason, Scheduler, SchedulerUnavailable


def pending(job_id: str, reason: QueueReason = QueueReason.NONE, **fields) -> JobInfo:
    return JobInfo(job_id, JobState.PENDING, queue_reason=reason, **fields)


def running(job_id: str, **fields) -> JobInfo:
    return JobInfo(job_id, JobState.RUNNING, **fields)


def ended(job_id: str, cause: EndCause, **fields) -> JobInfo:
    return JobInfo(job_id, JobState.ENDED, end=cause, **fields)


class ScriptedScheduler(Scheduler):
    """A scheduler whose jobs a test sets by hand (``jobs``, ``finished``, ``down``); it records every call."""

    name = "scripted"

    def __init__(self):
        self.jobs: dict[str, JobInfo] = {}
        self.down = False
        self.calls: list[tuple] = []
        self.finished: dict[str, JobInfo] = {}

    async def query(self, job_ids):
        self.calls.append(("query", tuple(job_ids)))
        if self.down:
            raise SchedulerUnavailable("slurm_load_jobs error: Unable to contact slurm controller")
        return {j: self.jobs[j] for j in job_ids if j in self.jobs}

    async def find_by_name(self, names):
        self.calls.append(("find_by_name", tuple(names)))
        return {j.name: j for j in self.jobs.values() if j.name in names}

    async def lookup_finished(self, job_id):
        self.calls.append(("lookup_finished", job_id))
        return self.finished.get(job_id)

    async def cancel(self, job_id, user=None):
        self.calls.append(("cancel", job_id))
        self.jobs.pop(job_id, None)


class SubmittingScheduler(ScriptedScheduler):
    """A ScriptedScheduler that also takes jobs: each submit queues one (ids 1001, 1002, ...) and keeps its
    JobRequest in ``submitted``; ``start`` runs it on a node, as Slurm would once it has room. ``nodes`` is what
    node_addresses answers (node name -> its names and addresses), for checking where a ready job says it is."""

    name = "submitting"

    def __init__(self, nodes: dict[str, set[str]] | None = None):
        super().__init__()
        self.nodes = nodes or {}
        self.submitted: dict[str, object] = {}

    async def submit(self, request):
        job_id = str(1001 + len(self.submitted))
        self.calls.append(("submit", request.name))
        self.submitted[job_id] = request
        self.jobs[job_id] = pending(job_id, name=request.name)
        return job_id

    def start(self, job_id: str, node: str) -> None:
        self.jobs[job_id] = running(job_id, name=self.submitted[job_id].name, nodes=node)

    async def node_addresses(self):
        self.calls.append(("node_addresses",))
        return {name: set(names) for name, names in self.nodes.items()}


class Directory:
    """Unix users and groups for sharing's rules (pvhpc/sessions/sharing.py's UnixDirectory), without touching the
    machine's own accounts."""

    def __init__(self, users=("alice", "bob", "carol"), groups=None):
        self.users = set(users)
        self.groups = dict(groups or {})   # group -> members

    def user_exists(self, name):
        return name in self.users

    def group_exists(self, name):
        return name in self.groups

    def groups_of(self, user):
        return sorted(g for g, members in self.groups.items() if user in members)

    def members_of(self, group):
        return sorted(self.groups.get(group, ()))


class TimeLimitScheduler(ScriptedScheduler):
    """A ScriptedScheduler that records set_time_limit calls; ``refuse`` (Slurm's words) or ``down`` make it answer
    as Slurm refusing the change or not answering."""

    name = "time-limits"

    def __init__(self):
        super().__init__()
        self.refuse: str | None = None

    async def set_time_limit(self, job_id, minutes, through):
        self.calls.append(("set_time_limit", job_id, minutes, through))
        if self.down:
            raise SchedulerUnavailable("Unable to contact slurm controller")
        if self.refuse:
            raise ChangeRefused(self.refuse)
