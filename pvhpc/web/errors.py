"""How any exception a request handler raises becomes its answer: one place, through Tornado's public hooks.

The ParaViewWeb JS client shows only JSON errors with an "error" key; anything
else (an HTML 500, a plain 404) it hides and silently falls back to a wrong URL.
So every error answer is ``{"error": ..., "field"?: ...}``:

- a ``PvhpcError`` answers with its message and field, and the status of its kind: the session service's
  outcomes by OUTCOME_STATUS below, any other with the status it carries;
- a Tornado ``HTTPError`` (405 for a method a URL does not take, 404 for a missing
  static file, ...) with its reason phrase and the request, never a bare "OK"
  (its ``log_message`` goes to the log only, as Tornado intends);
- a locked or unreachable database with 503 and ``retry_after``;
- anything else with 500 and a generic message; its traceback goes to the log, once.

Handlers get this by mixing in ``ErrorAnswers``: Tornado calls ``log_exception``
and then ``write_error`` for every uncaught exception.
"""

from __future__ import annotations

import errno
import json
import logging
from dataclasses import dataclass, field as dataclass_field

from sqlalchemy.exc import OperationalError
from tornado import httputil
from tornado.web import HTTPError, RequestHandler

from pvhpc.errors import PvhpcError
from pvhpc.sessions import outcomes
from pvhpc.web.accesslog import LONG_RANDOM, scrub

log = logging.getLogger("pvhpc.web")

INTERNAL = "internal error in pvhpc; the service log has the details"
DATABASE_DOWN = "the database is busy or unavailable; nothing was changed, retry shortly"
DATABASE_RETRY_AFTER = 2   # seconds: a locked SQLite or a PostgreSQL failover is usually over by then
MAX_ECHOED_PATH = 200      # a hostile path is not worth echoing in full
NAME_TOO_LONG = "a file name in the request is longer than the file system takes (255 bytes a name, 4096 a path)"


# The session service names what happened (pvhpc/sessions/outcomes.py); what each is in HTTP is said here.
OUTCOME_STATUS = (
    (outcomes.NotAllowed, 403),
    (outcomes.WrongState, 409),
    (outcomes.OverLimit, 429),
    (outcomes.SchedulerAway, 503),
    (outcomes.CannotReadNow, 503),
    (outcomes.NotRecorded, 503),
    (outcomes.JobRefused, 400),
    (outcomes.JobScriptFailed, 500),
)


def status_of(error: PvhpcError) -> int:
    """The HTTP status ``error`` answers with: its outcome's, else the status it carries."""
    for kind, status in OUTCOME_STATUS:
        if isinstance(error, kind):
            return status
    return error.status


class APIError(PvhpcError):
    """A request the web layer itself refuses (not logged in, body too large, no such session ...).

    ``extra`` adds keys to the answer, e.g. ``retry_after`` (also sent as a Retry-After header).
    """

    status = 400

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None,
                 extra: dict | None = None):
        super().__init__(message, field=field, status=status)
        self.extra = dict(extra or {})


@dataclass
class ErrorAnswer:
    status: int
    body: dict
    headers: dict[str, str] = dataclass_field(default_factory=dict)


def error_answer(error: BaseException | None, status: int, method: str, path: str,
                 allowed: tuple[str, ...] = ()) -> ErrorAnswer:
    """The answer to ``error`` raised while serving ``method path``.

    ``status`` is what Tornado chose (used when there is no exception to go by);
    ``allowed`` lists the methods the URL takes, named in a 405's answer.
    """
    if isinstance(error, PvhpcError):
        body = {"error": str(error)}
        if error.field:
            body["field"] = error.field
        if isinstance(error, APIError):
            body.update(error.extra)
        if isinstance(error, outcomes.NotRecorded):   # the database's to get over, as below
            body["retry_after"] = DATABASE_RETRY_AFTER
        # An error made for another use (a client's "no answer" is status 0) must still answer as an error.
        status = status_of(error)
        answer = ErrorAnswer(status if 400 <= status <= 599 else 500, body)
    elif isinstance(error, OperationalError):
        answer = ErrorAnswer(503, {"error": DATABASE_DOWN, "retry_after": DATABASE_RETRY_AFTER})
    elif isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        # A path a client named (a data file, a directory to list) that the system refuses outright.
        answer = ErrorAnswer(400, {"error": NAME_TOO_LONG})
    elif isinstance(error, HTTPError) or error is None:
        # Tornado's log_message is for the log only (it may hold file paths): the answer names the request.
        code = error.status_code if error is not None else status
        reason = (error.reason if error is not None else None) or httputil.responses.get(code, "error")
        answer = ErrorAnswer(code, {"error": f"{reason.lower()}: {method} {path[:MAX_ECHOED_PATH]}"})
        if code == 405 and allowed:
            answer.body["error"] += f" (this URL takes {', '.join(allowed)})"
            answer.headers["Allow"] = ", ".join(allowed)
    else:
        answer = ErrorAnswer(500, {"error": INTERNAL})
    if "retry_after" in answer.body:
        answer.headers["Retry-After"] = str(answer.body["retry_after"])
    return answer


class ErrorAnswers(RequestHandler):
    """Mixed into every pvhpc handler (before Tornado's class) so its errors answer as described above.

    It also sets the headers every answer carries: no page of pvhpc's may be framed by another site's
    (a framed page can be clicked through by a page laid over it).
    """

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", "frame-ancestors 'self'")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("X-Content-Type-Options", "nosniff")

    def log_exception(self, typ, value, tb) -> None:
        where = f"{self.request.method} {scrub(self.request.path)}"
        if isinstance(value, PvhpcError):
            # Explained errors need no traceback; a refused request (4xx) is in the access log already.
            # A 503 says "try again" (a session still queued, Slurm briefly away): worth a line, not a warning.
            status = status_of(value)
            if status >= 500:
                log.log(logging.INFO if status == 503 else logging.WARNING, "%s answered %d: %s",
                        where, status, LONG_RANDOM.sub("…", str(value))[:500])
        elif isinstance(value, OSError) and value.errno == errno.ENAMETOOLONG:
            return   # the client's doing, answered 400
        elif isinstance(value, OperationalError):
            # Nothing was half-written: each change is one transaction.
            log.warning("database unavailable during %s: %s", where, str(value).splitlines()[0][:200])
        elif isinstance(value, HTTPError):
            if value.get_message():
                log.warning("%s answered %d: %s", where, value.status_code, value.get_message())
        else:
            # Not Tornado's own logging: it would print the request with its headers (tokens, cookies).
            log.error("unexpected error in %s", where, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs["exc_info"][1] if "exc_info" in kwargs else None
        answer = error_answer(error, status_code, self.request.method or "", self.request.path,
                              self.allowed_methods())
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.write_answer(answer)

    def write_answer(self, answer: ErrorAnswer) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(answer.body, default=str))

    def allowed_methods(self) -> tuple[str, ...]:
        """The methods this handler implements (Tornado's base class answers 405 for the others)."""
        return tuple(m for m in self.SUPPORTED_METHODS
                     if getattr(type(self), m.lower(), None) is not getattr(RequestHandler, m.lower(), None))
