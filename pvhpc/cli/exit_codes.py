"""The exit codes of pvhpc's client and staff commands: stable, documented in docs/cli.md.

Scripts branch on these numbers, so a number never changes meaning. A service
error becomes a code by its HTTP status alone, never by its message text.
"""

from __future__ import annotations

OK = 0
FAILED = 1          # the session ended (or will not become usable); a check found a problem
USAGE = 2           # bad input: wrong arguments, a request the service refused as invalid, a bad config file
NOT_FOUND = 3       # no such session (or not yours)
LIMIT = 4           # a limit of the site was hit (HTTP 429): sessions or GPUs per user, requests per minute
UNREACHABLE = 5     # no answer from the service at all
DENIED = 6          # not logged in or not allowed (HTTP 401/403): check the token
TIMEOUT = 7         # --timeout passed before the session got where it was waited for; it is left as it is
SERVICE = 8         # the service answered with an error of its own (HTTP 5xx) or something unexpected
INTERRUPTED = 130   # Ctrl-C

MEANINGS = {
    OK: "success",
    FAILED: "the session ended or is not usable; or a check found a problem",
    USAGE: "bad input or usage (the message names the argument, field or config key)",
    NOT_FOUND: "no such session",
    LIMIT: "a site limit was hit (HTTP 429)",
    UNREACHABLE: "the pvhpc service could not be reached",
    DENIED: "not logged in or not allowed (HTTP 401/403)",
    TIMEOUT: "timed out waiting; the session was left as it is",
    SERVICE: "the service failed (HTTP 5xx)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def for_status(status: int) -> int:
    """The exit code for a client error's HTTP status (0: the service did not answer)."""
    if status == 0:
        return UNREACHABLE
    if status == 404:
        return NOT_FOUND
    if status == 429:
        return LIMIT
    if status in (401, 403):
        return DENIED
    if 400 <= status < 500:
        return USAGE
    return SERVICE


def epilog() -> str:
    """The EXIT STATUS section every command's --help ends with."""
    rows = "\n".join(f"  {code:<3}  {text}" for code, text in MEANINGS.items())
    return f"exit status:\n{rows}"
