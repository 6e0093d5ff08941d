"""Slurm's words in pvhpc's neutral vocabulary (base.JobState, EndCause, QueueReason).

Both Slurm backends (command-line tools and pyslurm) read the same state and
reason names from slurmctld, so both map them here; nothing outside
pvhpc/scheduler/ reads a Slurm state name.
"""

from __future__ import annotations

from datetime import datetime

from pvhpc.scheduler.base import EndCause, JobInfo, JobState, QueueReason

# Slurm's job states grouped by what they mean for a session. CONFIGURING (nodes booting) and the
# requeue and suspend states wait like a queued job; COMPLETING is on its way to a final state.
PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
                     "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"})
RUNNING = frozenset({"RUNNING"})
ENDING = frozenset({"COMPLETING"})

# Slurm's final states; any other final state is FAILED.
END_CAUSES = {
    "COMPLETED": EndCause.COMPLETED,
    "CANCELLED": EndCause.CANCELLED,
    "REVOKED": EndCause.CANCELLED,      # a federated sibling ran it instead
    "TIMEOUT": EndCause.TIMEOUT,
    "DEADLINE": EndCause.TIMEOUT,
    "FAILED": EndCause.FAILED,
    "SPECIAL_EXIT": EndCause.FAILED,
    "BOOT_FAIL": EndCause.BOOT_FAIL,
    "NODE_FAIL": EndCause.NODE_FAIL,
    "PREEMPTED": EndCause.PREEMPTED,
    "OUT_OF_MEMORY": EndCause.OUT_OF_MEMORY,
}

# Slurm's pending reasons (squeue %r, job_reason_string) that pvhpc explains in words of its own.
QUEUE_REASONS = {
    "None": QueueReason.NONE,
    "": QueueReason.NONE,
    "Resources": QueueReason.RESOURCES,
    "Priority": QueueReason.PRIORITY,
    "Dependency": QueueReason.DEPENDENCY,
    "QOSMaxJobsPerUserLimit": QueueReason.USER_JOB_LIMIT,
    "QOSMaxGRESPerUser": QueueReason.USER_GPU_LIMIT,
    "AssocMaxJobsLimit": QueueReason.ACCOUNT_JOB_LIMIT,
    "ReqNodeNotAvail": QueueReason.NODE_UNAVAILABLE,
    "PartitionDown": QueueReason.PARTITION_DOWN,
    "PartitionInactive": QueueReason.PARTITION_INACTIVE,
    "PartitionTimeLimit": QueueReason.OVER_TIME_LIMIT,
    "JobHeldUser": QueueReason.HELD_BY_USER,
    "JobHeldAdmin": QueueReason.HELD_BY_ADMIN,
    "BeginTime": QueueReason.BEGIN_TIME,
    "Reservation": QueueReason.RESERVATION,
}


def job_state(word: str) -> JobState:
    word = (word or "").split()[0].upper() if word else ""
    if word in PENDING:
        return JobState.PENDING
    if word in RUNNING:
        return JobState.RUNNING
    if word in ENDING:
        return JobState.ENDING
    return JobState.ENDED


def reason_word(text: str) -> str:
    """Slurm's reason code: 'None' and '(null)' are no reason; a description such as 'ReqNodeNotAvail,
    UnavailableNodes:gpu01' (pyslurm gives state_desc where squeue's %r gives the code) is its code."""
    text = (text or "").strip()
    if text in ("None", "(null)"):
        return ""
    return text.split(",")[0].split("(")[0].strip()


def job_info(job_id: str, state: str, reason: str = "", nodes: str = "", name: str = "",
             expected_start: datetime | None = None, exit_code: str = "") -> JobInfo:
    """A JobInfo from Slurm's own words for one job, as squeue, sacct or pyslurm give them."""
    word = (state or "").split()[0].upper() if state else ""
    neutral = job_state(word)
    code = reason_word(reason)
    said = f"Slurm state {word}" + (f", {code}" if code else "")
    return JobInfo(
        job_id=str(job_id), state=neutral, name=name or "",
        nodes="" if nodes in (None, "", "(null)") else nodes,
        expected_start=expected_start if neutral is JobState.PENDING else None,
        queue_reason=QUEUE_REASONS.get(code, QueueReason.OTHER) if neutral is JobState.PENDING else QueueReason.NONE,
        end=END_CAUSES.get(word, EndCause.FAILED) if neutral is JobState.ENDED else None,
        exit_code=exit_code or "", reason=code, said=said,
    )
