"""What a job reports back to pvhpc (``POST /api/v1/sessions/<id>/report``; pvhpc/node/jobhelper.py sends it),
and that report's JSON read into what it says (``parse``), checked field by field before anything acts on it."""

from __future__ import annotations

from dataclasses import dataclass

from pvhpc.errors import PvhpcError
from pvhpc.jobs.ids import HOST
from pvhpc.jobs.states import EXIT_CAUSES

READY = "ready"                # the server listens: host and port
FAILED = "failed"              # the server could not start, and why
EXITED = "exited"              # the server stopped by itself, and why (states.EXIT_CAUSES)
IDLE_WARNING = "idle_warning"  # the server will stop as idle soon unless someone uses it

EVENTS = (READY, FAILED, EXITED, IDLE_WARNING)

MAX_IDLE_WARNING = 86400       # seconds
MAX_REASON = 1000              # characters of a failure's reason kept


class ReportError(PvhpcError):
    """A report that does not say what a job's report says; ``field`` names the part at fault."""

    status = 400


@dataclass(frozen=True)
class Report:
    """What every report may carry: the job it comes from and the node it runs on (either may be None)."""

    job_id: str | None
    node: str | None


@dataclass(frozen=True)
class Ready(Report):
    host: str
    port: int


@dataclass(frozen=True)
class Exited(Report):
    code: int                  # the server's exit status, 0-255
    cause: str | None          # a key of states.EXIT_CAUSES, when the server said why


@dataclass(frozen=True)
class Failed(Report):
    reason: str


@dataclass(frozen=True)
class IdleWarning(Report):
    seconds_left: int


def parse(payload: object) -> Report:
    """The report ``payload`` (the request's JSON) says, or ReportError naming the field that is wrong."""
    if not isinstance(payload, dict):
        raise ReportError("the report must be a JSON object")
    event = payload.get("event")
    job_id = payload.get("job_id") or None
    if job_id is not None and (not isinstance(job_id, str) or not job_id.isdigit()):
        raise ReportError("must be a job id", field="job_id")
    node = payload.get("node") or None
    if node is not None and (not isinstance(node, str) or not HOST.match(node)):
        raise ReportError("must be a node name", field="node")
    if event == READY:
        host, port = payload.get("host"), payload.get("port")
        if not isinstance(host, str) or not HOST.match(host):
            raise ReportError("must be a host name or address", field="host")
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port < 65536:
            raise ReportError("must be a port number between 1024 and 65535", field="port")
        return Ready(job_id, node, host, port)
    if event == EXITED:
        code = payload.get("code")
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
            raise ReportError("must be an exit status from 0 to 255", field="code")
        cause = payload.get("cause")
        if cause is not None and cause not in EXIT_CAUSES:
            raise ReportError(f"must be one of {', '.join(EXIT_CAUSES)}", field="cause")
        return Exited(job_id, node, code, cause)
    if event == FAILED:
        reason = payload.get("reason")
        if not isinstance(reason, str):
            raise ReportError("must be a string", field="reason")
        return Failed(job_id, node, reason[:MAX_REASON])
    if event == IDLE_WARNING:
        return IdleWarning(job_id, node, seconds_left(payload.get("seconds_left")))
    raise ReportError("must be " + ", ".join(f"'{name}'" for name in EVENTS[:-1]) + f" or '{EVENTS[-1]}'",
                      field="event")


def seconds_left(value: object) -> int:
    """An idle warning's seconds before the server stops (pvhpc/node/input_idle.py)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_IDLE_WARNING:
        raise ReportError(f"must be whole seconds from 0 to {MAX_IDLE_WARNING}", field="seconds_left")
    return value
