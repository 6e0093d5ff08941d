"""How the session service says it did not do what it was asked, by what happened; the web layer picks each one's
HTTP status (pvhpc/web/errors.py), the service never does."""

from __future__ import annotations

from pvhpc.errors import PvhpcError


class ServiceError(PvhpcError):
    """A request that is fine but that the service did not carry out. Raised as one of the kinds below; the root
    itself answers 503 (try again)."""

    status = 503


class NotAllowed(ServiceError):
    """Not for this caller: an unknown session or a wrong report token (alike, so that ids cannot be probed), a
    report from another job or host than the session's, a user with no account here to run a job as, a file the
    user (or the service, for them) may not read, a saved state others could have written."""


class WrongState(ServiceError):
    """The session is not in a state for it: it has ended, it already reported ready, its job is not running."""


class OverLimit(ServiceError):
    """The user's limits (limits.sessions_per_user, limits.gpus_per_user) do not allow one more session now."""


class SchedulerAway(ServiceError):
    """The scheduler could not be asked (nothing was done, or it is not known to be): try again shortly."""


class CannotReadNow(ServiceError):
    """A file the request names could not be read just now (the command that reads it as its user could not be
    run): nothing was done, try again shortly."""


class NotRecorded(ServiceError):
    """The scheduler did what was asked, but pvhpc's database could not record it just now (locked, unreachable):
    it stands in the scheduler, and asking again the same is safe."""


class JobRefused(ServiceError):
    """The scheduler refused the job as it was asked for (an account, a partition's limit)."""


class JobScriptFailed(ServiceError):
    """The job script could not be made from the site's template: the site's to fix, not the user's."""
