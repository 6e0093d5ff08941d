"""Sessions as the APIs show them."""

from __future__ import annotations

from datetime import datetime, timezone

from pvhpc.db.store import SessionRecord
from pvhpc.jobs.durations import format_minutes
from pvhpc.jobs.states import END_MESSAGES, SessionState
from pvhpc.sessions.walltime_warnings import ends_at, time_left


# Why a session ended, in the words every client shows (the page, too): an ended session's detail begins with them.
END_WORDS = {reason.value: words for reason, words in END_MESSAGES.items()}


def _iso(value: datetime | None) -> str | None:
    return value.replace(tzinfo=timezone.utc).isoformat() if value else None


def session_json(record: SessionRecord, frontend, with_secret: bool = True,
                 desktop: frozenset[str] = frozenset(), more_time: dict | None = None) -> dict:
    """``desktop``: the applications whose sessions are for ParaView's desktop client (config.desktop_applications).
    ``more_time``: what more time the owner may ask for now (sessions/more_time.py offer), shown to the owner."""
    data = {
        "id": record.id,
        "user": record.user,
        "application": record.application,
        "version": record.version,   # the application's version (its modules); null where it offers none
        "partition": record.partition,
        "gpus": record.gpus,
        # A parallel session's request: ranks MPI ranks over nodes nodes; ranks 0 is one process.
        "nodes": record.nodes,
        "ranks": record.ranks,
        "walltime": format_minutes(record.walltime_minutes),
        "walltime_minutes": record.walltime_minutes,
        "data": record.data_file,
        "state": record.state,
        "detail": record.detail,
        "end_reason": record.end_reason,
        "end_reason_text": END_WORDS.get(record.end_reason),   # null while live
        "job_id": record.job_id,
        "node": record.node,
        "host": record.host,
        "port": record.port,
        "sessionURL": frontend.session_url(record),
        # A session for ParaView's desktop client (pvhpc connect): its sessionURL leads to a pvserver's bridge.
        "desktop": record.application in desktop,
        "expected_start": _iso(record.expected_start),
        "created_at": _iso(record.created_at),
        "ready_at": _iso(record.ready_at),
        "ended_at": _iso(record.ended_at),
        # When the walltime ends a running session's job, and the seconds until then (null before it runs).
        "ends_at": _iso(ends_at(record)),
        "time_left": None if (left := time_left(record)) is None else round(left),
        # Continuation (pvhpc/sessions/continuation.py): asked for, successors that took over, one queued.
        "continue": bool(record.continue_wanted),
        "continuations": record.continuations or 0,
        "successor_job_id": record.successor_job_id,
    }
    if more_time is not None:
        # {"allowed": bool, "most_minutes": N, "why": words or null}: POST .../extend answers the same.
        data["more_time"] = more_time
    if with_secret and record.state != SessionState.ENDED.value:
        data["secret"] = record.secret
    return data
