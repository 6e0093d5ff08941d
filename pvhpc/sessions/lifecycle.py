"""How a session moves, decided from what the scheduler says about its job (pure logic, no I/O).

The tracker gathers facts (one batched query per poll cycle) and asks this
module what each fact means for each session; the store applies the answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pvhpc.db.store import Change, SessionRecord
from pvhpc.jobs.states import END_MESSAGES, EXIT_CAUSES, EndReason, SessionState
from pvhpc.scheduler import JobInfo, JobState
from pvhpc.scheduler.base import EndCause, QueueReason

S = SessionState

# How the scheduler says a job ended, as the reason a session ended. A cancel through pvhpc is recorded
# (CANCELLED) before the scheduler's word comes in, so a cancel the scheduler reports came from outside.
END_REASONS = {
    EndCause.COMPLETED: EndReason.COMPLETED,
    EndCause.CANCELLED: EndReason.CANCELLED_OUTSIDE,
    EndCause.TIMEOUT: EndReason.WALLTIME,
    EndCause.FAILED: EndReason.FAILED,
    EndCause.BOOT_FAIL: EndReason.NODE_FAILURE,
    EndCause.NODE_FAIL: EndReason.NODE_FAILURE,
    EndCause.PREEMPTED: EndReason.PREEMPTED,
    EndCause.OUT_OF_MEMORY: EndReason.OUT_OF_MEMORY,
}


# Why a job waits, in words a user understands.
QUEUE_WORDS = {
    QueueReason.NONE: "waiting to be scheduled",
    QueueReason.RESOURCES: "waiting for free nodes or GPUs",
    QueueReason.PRIORITY: "waiting behind jobs with higher priority",
    QueueReason.DEPENDENCY: "waiting for another job to finish",
    QueueReason.USER_JOB_LIMIT: "you have as many jobs running as your QoS allows",
    QueueReason.USER_GPU_LIMIT: "you use as many GPUs as your QoS allows",
    QueueReason.ACCOUNT_JOB_LIMIT: "your account has as many jobs running as it may",
    QueueReason.NODE_UNAVAILABLE: "a node the job needs is unavailable (drained, down or reserved)",
    QueueReason.PARTITION_DOWN: "the partition is down",
    QueueReason.PARTITION_INACTIVE: "the partition is inactive",
    QueueReason.OVER_TIME_LIMIT: "the walltime is over the partition's limit",
    QueueReason.HELD_BY_USER: "held by you",
    QueueReason.HELD_BY_ADMIN: "held by the administrators",
    QueueReason.BEGIN_TIME: "waiting for its start time",
    QueueReason.RESERVATION: "waiting for its reservation",
}


def explain_queue_reason(reason: QueueReason, scheduler_words: str = "") -> str:
    """Why the job waits; a reason pvhpc has no words for is shown in the scheduler's own."""
    return QUEUE_WORDS.get(reason) or scheduler_words or QUEUE_WORDS[QueueReason.NONE]



def ended(reason: EndReason, extra: str = "") -> Change:
    detail = END_MESSAGES[reason] + (f": {extra}" if extra else "")
    return Change.to(S.ENDED, detail, end_reason=reason)


def exited(code: int, cause: str | None) -> Change:
    """The job said its server exited with status ``code``, and, if the server said so, why."""
    how = f"killed by signal {code - 128}" if code > 128 else f"exit code {code}"
    if cause in EXIT_CAUSES:
        # It was stopping on purpose; a crash on the way out does not make the session a failure.
        reason, words = EXIT_CAUSES[cause]
        return ended(reason, words + ("" if code == 0 else f" (then {how} on the way out)"))
    if code == 0:
        return ended(EndReason.COMPLETED, "the server exited by itself (exit code 0)")
    return ended(EndReason.FAILED, f"the ParaView server stopped: {how}")


def ready(host: str, port: int, node: str | None, **fields) -> Change:
    return Change.to(S.READY, f"ParaView is listening on {node or host}", host=host, port=port, node=node or host,
                     **fields)


def from_job(session: SessionRecord, job: JobInfo, now: datetime, start_timeout: float) -> Change | None:
    """The move a session makes given its job's state in the queue."""
    state = session.session_state
    if state is S.ENDED:
        return None
    if job.is_pending:
        words = explain_queue_reason(job.queue_reason, job.reason)
        # Requeued after it ran: the old host and port are gone.
        return Change.to(S.QUEUED, words, expected_start=job.expected_start, host=None, port=None, node=None)
    if job.is_running:
        if session.host and session.port:
            return ready(session.host, session.port, session.node)
        since = session.running_since or now
        if (now - since) > timedelta(seconds=start_timeout):
            return None  # decided by start_timed_out, which also cancels the job
        return Change.to(S.STARTING, f"job running on {job.nodes}; starting ParaView", node=job.nodes,
                         running_since=since, expected_start=None)
    if job.state is JobState.ENDING:
        return None  # the final state follows in a moment
    reason = END_REASONS.get(job.end, EndReason.FAILED)
    # The scheduler's own words, for the user and staff: "Slurm state TIMEOUT, exit code 0:15".
    extra = ", ".join(part for part in (job.said, job.exit_code and f"exit code {job.exit_code}") if part)
    return ended(reason, extra)


def start_timed_out(session: SessionRecord, now: datetime, start_timeout: float) -> bool:
    return (session.session_state is S.STARTING and session.running_since is not None
            and now - session.running_since > timedelta(seconds=start_timeout))


def unreachable(session: SessionRecord, error: str) -> Change | None:
    """The scheduler could not be asked: keep the session, say so."""
    if session.session_state in (S.ENDED, S.UNKNOWN):
        return None
    return Change.to(S.UNKNOWN, f"cannot reach the scheduler ({error[:200]}); the session is kept")
