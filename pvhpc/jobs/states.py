"""Session states, the moves between them, and why a session ended: defined here and nowhere else."""

from __future__ import annotations

from enum import Enum

from pvhpc.errors import PvhpcError


class SessionState(str, Enum):
    SUBMITTING = "submitting"   # recorded; sbatch sent, answer not yet in
    QUEUED = "queued"           # the job waits in Slurm's queue
    STARTING = "starting"       # the job runs; its server has not reported yet
    READY = "ready"             # the server listens at host:port
    UNKNOWN = "unknown"         # the scheduler could not be asked; the session is kept as it was
    ENDED = "ended"             # for good; end_reason says why

    @property
    def live(self) -> bool:
        return self is not SessionState.ENDED


S = SessionState
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.SUBMITTING: frozenset({S.QUEUED, S.STARTING, S.READY, S.UNKNOWN, S.ENDED}),
    S.QUEUED: frozenset({S.STARTING, S.READY, S.UNKNOWN, S.ENDED}),
    S.STARTING: frozenset({S.QUEUED, S.READY, S.UNKNOWN, S.ENDED}),   # QUEUED: requeued by Slurm
    # READY -> STARTING: a successor job took over (pvhpc/sessions/continuation.py); its server starts.
    S.READY: frozenset({S.QUEUED, S.STARTING, S.UNKNOWN, S.ENDED}),
    S.UNKNOWN: frozenset({S.QUEUED, S.STARTING, S.READY, S.ENDED}),
    S.ENDED: frozenset(),
}


class IllegalTransition(PvhpcError):
    """A state change the session's lifecycle does not allow: a bug in pvhpc, never the user's doing."""


def check_transition(old: SessionState, new: SessionState) -> None:
    if new is not old and new not in TRANSITIONS[old]:
        raise IllegalTransition(f"a session cannot go from {old.value} to {new.value}")


class EndReason(str, Enum):
    CANCELLED = "cancelled"               # by its user, through pvhpc
    CANCELLED_OUTSIDE = "cancelled_outside"  # scancel or staff, not through pvhpc
    COMPLETED = "completed"               # the server exited by itself, most often because its client asked
    IDLE = "idle"                         # the server stopped after no client used it for its idle timeout
    WALLTIME = "walltime"                 # the job hit its time limit
    FAILED = "failed"                     # the job failed
    START_FAILED = "start_failed"         # the server could not start (the job said why)
    START_TIMEOUT = "start_timeout"       # the server did not report ready in time
    NODE_FAILURE = "node_failure"
    PREEMPTED = "preempted"
    OUT_OF_MEMORY = "out_of_memory"
    SUBMIT_FAILED = "submit_failed"       # the scheduler refused or never queued the job
    LOST = "lost"                         # the job left the queue and no record tells how
    SUCCESSOR_FAILED = "successor_failed"  # a continued session's successor job never started


END_MESSAGES = {
    EndReason.CANCELLED: "cancelled by its user",
    EndReason.CANCELLED_OUTSIDE: "the job was cancelled outside pvhpc (scancel or staff)",
    EndReason.COMPLETED: "the session's server stopped normally",
    EndReason.IDLE: "the session's server stopped because no client used it for its idle timeout",
    EndReason.WALLTIME: "the job reached its walltime",
    EndReason.FAILED: "the job failed",
    EndReason.START_FAILED: "the session's server could not start",
    EndReason.START_TIMEOUT: "the session's server did not report ready in time",
    EndReason.NODE_FAILURE: "the node failed",
    EndReason.PREEMPTED: "the job was preempted",
    EndReason.OUT_OF_MEMORY: "the job ran out of memory",
    EndReason.SUBMIT_FAILED: "the job could not be submitted",
    EndReason.LOST: "the job left the queue and no record says how it ended",
    EndReason.SUCCESSOR_FAILED: "its successor job never started (its saved state is kept)",
}

# Why a server says it stopped by itself (pvhpc/node/wslink_exits.py), as the reason its session ended.
EXIT_CAUSES = {
    "client": (EndReason.COMPLETED, "its client asked it to stop"),
    "idle": (EndReason.IDLE, "no client was connected for its idle timeout"),
    "input_idle": (EndReason.IDLE, "nobody used it (no user input) for its input_idle_timeout"),
}
