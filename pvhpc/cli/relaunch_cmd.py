"""``pvhpc relaunch SESSION [--with-state]``: a new session with a past one's settings (application, version,
partition, GPUs, nodes and ranks, walltime, data file), optionally from the newest ParaView state it saved; any
request option given (``-t 2:00:00``, ``-p gpu`` ...) replaces that one setting. The service checks the request
again as any other: what is no longer offered is refused with the field it names, before anything is submitted.

Its own command rather than ``pvhpc submit --like``: ``submit`` takes the application as its first argument, and a
relaunch's application is the past session's."""

from __future__ import annotations

from pvhpc.cli import exit_codes, session_cmds
from pvhpc.cli.base import CommandError, common_options, emit, make_client, run_guarded
from pvhpc.cli.command_help import add_command

# The settings a session's answer carries and a new request takes under the same names.
SETTINGS = ("version", "partition", "gpus", "walltime", "data")


def last_saved_state(session_id: str, states: list[dict]) -> dict | None:
    """The newest state the session saved, of the user's list (any order)."""
    own = [s for s in states if s.get("session") == session_id]
    return max(own, key=lambda s: s["saved_at"]) if own else None


def relaunch_request(past: dict, states: list[dict] | None, overrides: dict) -> dict:
    """The request (its application apart, under "application") of a new session like ``past``; with ``states``
    (the user's saved states) it starts from the newest one ``past`` saved. ``overrides``: options given."""
    fields = {k: past[k] for k in SETTINGS if past.get(k) not in (None, "")}
    if past.get("ranks"):   # 0: one process, as a request without ranks
        fields.update(nodes=past["nodes"], ranks=past["ranks"])
    if states is not None:
        state = last_saved_state(past["id"], states)
        if state is None:
            raise CommandError(f"session {past['id']} saved no ParaView state (a session saves one when its job is "
                               "ended after it was ready; 'pvhpc states' lists yours); relaunch it without "
                               "--with-state", code=exit_codes.NOT_FOUND)
        fields["saved_state"] = state["path"]
        fields.pop("data", None)   # the state opens its own data: the file again would be a second reader
    fields.update(overrides)
    return {"application": past["application"], **fields}


def cap_walltime(request: dict, past: dict, partitions: list[dict]) -> str | None:
    """A session given more time (``pvhpc extend``) reports its extended total as its walltime, which may be more
    than its partition lets a new job ask for: then ``request`` asks for the partition's most instead, and the
    words saying so are returned. Not when the walltime was given as an option: that is the user's to answer for."""
    limits = next((p for p in partitions if p.get("name") == request.get("partition")), None)
    minutes = past.get("walltime_minutes")
    if limits is None or minutes is None or request.get("walltime") != past.get("walltime"):
        return None
    most = limits["walltime_minutes"]["max"]
    if minutes <= most:
        return None
    request["walltime"] = limits["walltime"]["max"]
    return (f"walltime {past['walltime']} (session {past['id']}'s, more time included) is more than partition "
            f"{limits['name']} allows: asking for its most, {limits['walltime']['max']}")


@run_guarded
def cmd_relaunch(args) -> int:
    client, _ = make_client(args)
    past = client.get(session_cmds.resolve_id(client, args.session))
    overrides = session_cmds.request_fields(args)
    if args.data:
        overrides["data"] = session_cmds.data_path(args.data)
    if args.with_state and "saved_state" in overrides:
        raise CommandError("--with-state and --saved-state were both given: choose one", code=exit_codes.USAGE)
    request = relaunch_request(past, client.saved_states() if args.with_state else None, overrides)
    if "walltime" not in overrides:
        capped = cap_walltime(request, past, client.partitions()["partitions"])
        if capped:
            print(f"pvhpc: {capped}", file=session_cmds.progress_stream(args))
    session = client.create(request.pop("application"), **request)
    started = f" from {request['saved_state']}" if "saved_state" in request else ""
    if not args.wait:
        emit(args, session, f"submitted: session {session['id']} like {past['id']}{started}, "
                            f"follow it: pvhpc wait {session_cmds.as_arg(session['id'])}")
        return exit_codes.OK
    outcome, session = session_cmds.follow(client, session, ("ready",), args.timeout, args)
    return session_cmds.finish_wait(args, outcome, session, "ready", args.timeout)


def register(sub) -> None:
    p = add_command(
        sub, "relaunch", "a new session with a past session's settings (and its last saved state, if you like)",
        "Submits a new session with the settings of SESSION (yours; it may have ended): its application and "
        "version, partition, GPUs, nodes and ranks, walltime and data file. With --with-state it starts from the "
        "newest ParaView state SESSION saved (its pipeline as it was when its job was ended); the command "
        "refuses if it saved none. A walltime more than the partition now allows (a session given more time "
        "reports its extended total) is cut to the partition's most, and the command says so. "
        "A request option given replaces that setting. The service checks the request "
        "as any other, so a setting no longer offered is refused with its name and nothing is submitted.",
        [("pvhpc relaunch 3fQk --with-state --wait", "the same session again, from where it was, and wait"),
         ("pvhpc relaunch 3fQk -t 4:00:00", "the same settings with four hours")],
        parents=[common_options(), session_cmds.request_options()])
    p.add_argument("session", help="the past session's id (or a unique start of it)")
    p.add_argument("--with-state", action="store_true", help="start from the newest ParaView state it saved")
    p.add_argument("-d", "--data", help="another data file to open, under the application's data directories")
    p.add_argument("-w", "--wait", action="store_true", help="follow the new session until it is ready or ended")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up waiting after this long (exit 7; the session is kept)")
    p.set_defaults(func=cmd_relaunch)
