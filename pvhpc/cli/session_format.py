"""Sessions as the command line shows them to people. Pure functions: no I/O, no API calls.

The --json output is the API's own session object, unchanged; everything here
is for eyes only and may change wording between releases.
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone
from urllib.parse import urlencode

from pvhpc.client.api import connect_url  # noqa: F401  (the session URL as clients dial it; pvhpc url shows it)
from pvhpc.jobs.ids import HOST
from pvhpc.jobs.states import EndReason, SessionState

LIVE_STATES = tuple(state.value for state in SessionState if state.live)
# How a session may end without anything having gone wrong.
GOOD_ENDINGS = (EndReason.CANCELLED.value, EndReason.COMPLETED.value, EndReason.IDLE.value)
# What a terminal acts on instead of showing: C0 and C1 controls (ESC starts OSC 52, which writes the clipboard,
# and CSI, which moves the cursor; CR and LF start a fake row), DEL, and the Unicode controls that reorder or
# break a line (bidirectional overrides, isolates and marks; line and paragraph separators).
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
UNSAFE = re.compile(f"[\t\n{_CONTROLS}]")
UNSAFE_IN_LINES = re.compile(f"[{_CONTROLS}]")
NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(value, lines: bool = False) -> str:
    """``value`` as text that is safe to print: every control character written out as an escape (``\\x1b``,
    ``\\n``, ``\\u202e``), so what users wrote (a reason, a file name, a log line) is seen, never obeyed, as the
    page shows it as text. With ``lines``, line breaks and tabs are kept (a log, several lines of ours)."""
    text = "" if value is None else str(value)
    return (UNSAFE_IN_LINES if lines else UNSAFE).sub(_escape, text)


def _escape(match: re.Match) -> str:
    c = match.group()
    return NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def clock(value: datetime) -> str:
    """A moment in local time: the hour alone today, the date too otherwise."""
    local = value.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def relative(target: datetime, now: datetime) -> str:
    seconds = (target - now).total_seconds()
    if seconds < 60:
        return "any moment" if seconds > -60 else "overdue"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"in {minutes} min"
    return f"in {minutes / 60:.1f} h"


def expected_start(session: dict, now: datetime | None = None) -> str:
    """'expected start 14:05:00 (in 3 min)', or '' when Slurm gave no estimate."""
    start = parse_time(session.get("expected_start"))
    if start is None or session.get("state") != "queued":
        return ""
    return f"expected start {clock(start)} ({relative(start, now or datetime.now(timezone.utc))})"


def time_left(session: dict, now: datetime | None = None) -> str:
    """'time left 42:10 (walltime ends 15:30:00)' for a session whose job runs; '' otherwise."""
    end = parse_time(session.get("ends_at"))
    if end is None or session.get("state") == "ended":
        return ""
    left = (end - (now or datetime.now(timezone.utc))).total_seconds()
    return f"time left {duration(left)} (walltime ends {clock(end)})"


def warning_line(warning: dict) -> str:
    """A warning of the push channel (walltime near, idle) as one line."""
    return f"warning: {shown(warning.get('message') or warning.get('reason'))}"


def status_words(session: dict, now: datetime | None = None) -> str:
    """One line: the state, Slurm's reason in words, the expected start, the time left and the job."""
    parts = [shown(session.get("state", "?"))]
    detail = shown(session.get("detail"))
    if detail:
        parts.append(f": {detail}")
    start = expected_start(session, now)
    if start:
        parts.append(f"; {start}")
    left = time_left(session, now) if session.get("state") == "ready" else ""
    if left:
        parts.append(f"; {left}")
    if session.get("state") == "ended" and session.get("end_reason"):
        parts.append(f" [{shown(session['end_reason'])}]")
    where = []
    job = shown(session.get("job_id"))
    if job and f"job {job}" not in detail:
        where.append(f"job {job}")
    if session.get("node") and session.get("state") != "ended":
        where.append(f"on {shown(session['node'])}")
    if where:
        parts.append(f" ({' '.join(where)})")
    return "".join(parts)


def ended_badly(session: dict) -> bool:
    return session.get("state") == "ended" and session.get("end_reason") not in GOOD_ENDINGS


def table(sessions: list[dict], with_user: bool = False) -> str:
    columns = ["ID", *(["USER"] if with_user else []), "STATE", "PARTITION", "GPUS", "JOB", "NODE", "CREATED",
               "DETAIL"]
    rows = []
    for s in sessions:
        created = parse_time(s.get("created_at"))
        state = s.get("state", "")
        if state == "ended" and s.get("end_reason"):
            state = f"ended:{s['end_reason']}"
        row = [s.get("id", ""), *([s.get("user") or ""] if with_user else []), state,
               s.get("partition") or "", str(s.get("gpus", "")), s.get("job_id") or "-",
               s.get("node") or "-", clock(created) if created else "-", s.get("detail") or ""]
        rows.append([shown(cell) for cell in row])   # one row each, whatever a reason or a name holds
    if not rows:
        return "no sessions"
    widths = [max(len(str(r[i])) for r in [columns] + rows) for i in range(len(columns) - 1)]

    def line(r):
        return "  ".join(str(v).ljust(w) for v, w in zip(r, widths)) + "  " + str(r[-1])

    return "\n".join(line(r).rstrip() for r in [columns] + rows)


def parallel_words(session: dict) -> str:
    """'2 ranks on 2 nodes' for a parallel session (an MPI pvserver); '' for one of a single process."""
    ranks, nodes = session.get("ranks") or 0, session.get("nodes") or 1
    if not ranks:
        return ""
    return f"{ranks} rank{'s' if ranks != 1 else ''} on {nodes} node{'s' if nodes != 1 else ''}"


def more_time_words(session: dict) -> str:
    """'up to 30 min (pvhpc extend)', or why not, for a session whose owner may ask; '' otherwise."""
    offer = session.get("more_time")
    if not offer or session.get("state") not in ("starting", "ready"):
        return ""
    return f"up to {offer.get('most_minutes')} min (pvhpc extend)" if offer.get("allowed") else str(offer.get("why"))


def details(session: dict) -> str:
    """Everything about one session, for ``pvhpc status``."""
    fields = [
        ("id", session.get("id")), ("user", session.get("user")), ("application", session.get("application")),
        ("version", session.get("version")),
        ("state", status_words(session)), ("partition", session.get("partition")), ("gpus", session.get("gpus")),
        ("parallel", parallel_words(session)), ("walltime", session.get("walltime")), ("data", session.get("data")), ("job", session.get("job_id")),
        ("node", session.get("node")), ("time left", time_left(session)[len("time left "):]),
        ("more time", more_time_words(session)),
        ("sessionURL", session.get("sessionURL")),
        ("created", session.get("created_at")), ("ready", session.get("ready_at")),
        ("ended", session.get("ended_at")),
    ]
    lines = [f"{name + ':':<13}{shown(value)}" for name, value in fields if value not in (None, "")]
    history = session.get("history") or []
    if history:
        lines.append("history:")
        for event in history:
            at = parse_time(event.get("at"))
            lines.append(f"  {clock(at) if at else '?':>16}  {shown(event.get('state'))}: "
                         f"{shown(event.get('detail'))}".rstrip())
    return "\n".join(lines)


def page_with_secret(url: str, secret: str | None) -> str:
    """A served client's page (trame's) with the session's secret in its query, where its client reads it."""
    return f"{url}?{urlencode({'secret': secret or ''})}"


def forward_command(host: object, port: object, login_host: str, local_port: int | None = None,
                    ssh_port: int = 22) -> str:
    """The ``ssh -L`` line a user runs on a laptop to bring a session's ``host:port`` to ``localhost:LOCAL_PORT``
    through the login host (``host`` or ``user@host``). Every word is checked before it is put on a line the
    user will paste into a shell: ValueError says which is wrong."""
    if not host or isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("the session has no server address yet (it is not ready)")
    if not isinstance(host, str) or not HOST.match(host):
        raise ValueError(f"{host!r} is not a host name")
    local_port = port if local_port is None else local_port
    if isinstance(local_port, bool) or not isinstance(local_port, int) or not 0 < local_port < 65536:
        raise ValueError(f"{local_port!r} is not a port")
    user, _, name = login_host.rpartition("@")
    if not HOST.match(name) or (user and not HOST.match(user.replace("_", "-"))):
        raise ValueError(f"{login_host!r} is not a login host ([user@]host)")
    argv = ["ssh", "-N", "-L", f"{local_port}:{host}:{port}"]
    if ssh_port != 22:
        argv += ["-p", str(ssh_port)]
    return shlex.join(argv + [login_host])


def tunnel(session: dict, login_host: str, local_port: int | None = None, in_browser: bool = False) -> dict:
    """The ``ssh -L`` line that brings the session's node:port to a laptop through the login host, and what to
    open at its end: the websocket a ParaViewWeb client connects to, or (``in_browser``: a server that serves
    its own page, as trame's) that page, whose client takes the secret from its URL. ValueError for a session
    or login host that cannot be put on that line."""
    host, port = session.get("host") or session.get("node"), session.get("port")
    local = local_port or port
    return {
        "login_host": login_host,
        "local_port": local,
        "ssh_command": forward_command(host, port, login_host, local),
        "tunnel_url": (page_with_secret(f"http://localhost:{local}/", session.get("secret")) if in_browser
                       else f"ws://localhost:{local}/ws"),
        "tunnel_opens_in_browser": in_browser,
    }


def batch_line(result: dict) -> str:
    """One line per item of a batch submission."""
    if result.get("ok"):
        s = result["session"]
        return f"{shown(result['data'])}: {shown(s['id'])} {status_words(s)}"
    return f"{shown(result['data'])}: FAILED ({shown(result['error'])})"
