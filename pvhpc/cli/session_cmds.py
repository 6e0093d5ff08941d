"""The users' commands: submit, submit-batch, status, list, wait, cancel, logs, url, applications.

Each talks to a pvhpc service through pvhpc.client.api (API calls here), and shows
what it got through session_format (wording) and progress (the live display).
With --json a command prints the API's objects as they are; without, words.
Errors go to standard error as one line (with --json: as a JSON object on
standard output), and the exit code says what kind of error it was (exit_codes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from pvhpc.client.api import Client
from pvhpc.cli import batch_submit, exit_codes, progress, session_format
from pvhpc.cli.command_help import add_command
from pvhpc.cli.base import CommandError, common_options, emit, make_client, run_guarded

FULL_ID_LENGTH = 32   # ids are secrets.token_urlsafe(24); a shorter argument is taken as a prefix


def request_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-p", "--partition", help="partition (default: the application's default partition)")
    p.add_argument("-g", "--gpus", type=int, help="number of GPUs (default: the partition's default)")
    p.add_argument("-t", "--walltime", help="walltime: minutes or HH:MM:SS (default: the partition's default)")
    p.add_argument("-A", "--account", help="Slurm account to charge (only the partition's allowed accounts)")
    p.add_argument("--qos", help="Slurm QoS (only the partition's allowed QoS)")
    p.add_argument("-N", "--nodes", type=int, help="a parallel session: nodes its ParaView server spans")
    p.add_argument("-n", "--ranks", type=int,
                   help="a parallel session: MPI ranks of its ParaView server (where the partition allows)")
    p.add_argument("--saved-state", metavar="PATH",
                   help="start from a saved ParaView state (.pvsm; 'pvhpc states' lists yours)")
    # --app-version, not --version: that one would read as pvhpc's own version.
    p.add_argument("--app-version", metavar="VERSION",
                   help="the application's version to run (its environment modules; 'pvhpc applications' lists "
                        "them; default: the application's default version)")
    # Its old name, beside `pvhpc list --state` (a session's state): still taken, hidden, with a note.
    p.add_argument("--state", dest="deprecated_saved_state", metavar="PATH", help=argparse.SUPPRESS)
    return p


def request_fields(args) -> dict:
    saved_state = args.saved_state
    if args.deprecated_saved_state is not None:
        if saved_state is not None:
            raise CommandError("--saved-state and --state were both given; --state is the deprecated old name of "
                               "--saved-state: give --saved-state only", code=exit_codes.USAGE)
        print(f"pvhpc {args.command}: --state is deprecated, use --saved-state", file=sys.stderr)
        saved_state = args.deprecated_saved_state
    fields = {"partition": args.partition, "gpus": args.gpus, "walltime": args.walltime,
              "account": args.account, "qos": args.qos, "nodes": args.nodes, "ranks": args.ranks,
              "saved_state": saved_state, "version": args.app_version}
    return {k: v for k, v in fields.items() if v is not None}


def data_path(text: str) -> str:
    """A data file as the service should see it: a path that exists here, relative to the current
    directory, is made absolute (the service checks it is under a data root); anything else is sent as
    given, for the service to read relative to the application's first data root."""
    if not os.path.isabs(text) and os.path.exists(text):
        return os.path.abspath(text)
    return text


def as_arg(session_id: str) -> str:
    """A session id as a command-line argument: ids may start with '-', which only follows '--' safely."""
    return f"-- {session_id}" if session_id.startswith("-") else session_id


def resolve_id(client: Client, text: str, all_users: bool = False) -> str:
    """A full session id, from itself or a unique prefix of one of the caller's sessions."""
    if len(text) >= FULL_ID_LENGTH:
        return text
    matches = [s["id"] for s in client.list(all_users=all_users) if s["id"].startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CommandError(f"no session {text}", code=exit_codes.NOT_FOUND)
    raise CommandError(f"{text!r} is the start of {len(matches)} sessions; give more of the id", code=exit_codes.USAGE)


def progress_stream(args):
    # With --json, standard output carries only the JSON result.
    return sys.stderr if args.json else sys.stdout


def follow(client: Client, session: dict, until: tuple[str, ...], timeout: float | None, args,
           quiet: bool = False) -> tuple[str, dict]:
    display = None if quiet else progress.ProgressDisplay(progress_stream(args))
    if display and not display.live:
        display.show(session)
    sid = session["id"]
    return progress.follow(lambda: client.events(sid, timeout=max(timeout or 0, 3600) + 60, warnings=True),
                           until, timeout,
                           display, lambda: client.get(sid))


def finish_wait(args, outcome: str, session: dict, until: str, timeout: float | None) -> int:
    """Print how a wait ended; return its exit code."""
    sid = session["id"]
    if outcome == progress.Outcome.TIMED_OUT:
        message = (f"session {sid} is still {session['state']} after {timeout:g} s; it is kept "
                   f"(pvhpc wait {as_arg(sid)}, or pvhpc cancel {as_arg(sid)})")
        if args.json:
            emit(args, {**session, "timed_out": True}, "")
        print(f"pvhpc {args.command}: {message}", file=sys.stderr)
        return exit_codes.TIMEOUT
    if outcome == progress.Outcome.ENDED and (until != "ended" or session_format.ended_badly(session)):
        emit(args, session, "")
        print(f"pvhpc {args.command}: session {sid} ended ({session_format.shown(session.get('end_reason'))}): "
              f"{session_format.shown(session.get('detail'))}; its job's output: pvhpc logs {as_arg(sid)}",
              file=sys.stderr)
        return exit_codes.FAILED
    emit(args, session, ready_text(session) if session["state"] == "ready" else session_format.status_words(session))
    return exit_codes.OK


def ready_text(session: dict) -> str:
    shown = session_format.shown
    return (f"ready: session {session['id']} on {shown(session.get('node'))} (job {shown(session.get('job_id'))})\n"
            f"sessionURL: {session.get('sessionURL')}\n"
            f"secret, browser page and ssh tunnel: pvhpc url {as_arg(session['id'])}")


# -- the commands ---------------------------------------------------------------------------------------

@run_guarded
def cmd_submit(args) -> int:
    client, _ = make_client(args)
    fields = request_fields(args)
    if args.data:
        fields["data"] = data_path(args.data)
    if getattr(args, "continue_on", False):
        fields["continue"] = True
    session = client.create(args.application, **fields)
    if not args.wait:
        emit(args, session, f"submitted: session {session['id']}, {session_format.status_words(session)}\n"
                            f"follow it: pvhpc wait {as_arg(session['id'])}")
        return exit_codes.OK
    try:
        outcome, session = follow(client, session, ("ready",), args.timeout, args)
    except KeyboardInterrupt:
        print(f"\npvhpc submit: stopped waiting; session {session['id']} is kept "
              f"(pvhpc wait {as_arg(session['id'])}, or pvhpc cancel {as_arg(session['id'])})", file=sys.stderr)
        return exit_codes.INTERRUPTED
    code = finish_wait(args, outcome, session, "ready", args.timeout)
    if code == exit_codes.OK and not args.json and session.get("state") == "ready":
        print_served_url(client, session)
    return code


def served_application(client: Client, session: dict) -> dict | None:
    """The session's application as the API describes it, if its server serves its own client (a trame app)."""
    app = {a["name"]: a for a in client.applications()}.get(session.get("application"), {})
    return app if app.get("opens") == "served" else None


def serves_own_client(client: Client, session: dict) -> bool:
    return served_application(client, session) is not None


def print_served_url(client: Client, session: dict) -> None:
    """Where to open a session of an application that serves its own client (a trame app), as pvhpc's page
    does: the static copy of that client at /apps/<name>/, attached to the session (it gets the secret in the
    launcher's answer, so none is in the URL); without one, /session/<id>/, whose client takes the secret from
    its URL, as trame's clients do."""
    app = served_application(client, session) if session.get("secret") else None
    if app is None:
        return
    base = client.url.rstrip("/")
    if app.get("client_url"):
        page = f"{base}/{app['client_url']}?" + urlencode({"attach": session["id"],
                                                         "sessionManagerURL": f"{base}/paraview/"})
    else:
        page = session_format.page_with_secret(f"{base}/session/{session['id']}/", session["secret"])
    print(f"open in your browser: {session_format.shown(page)}")


@run_guarded
def cmd_submit_batch(args) -> int:
    client, _ = make_client(args)
    files = list(args.files)
    if args.files_from:
        source = sys.stdin if args.files_from == "-" else None
        try:
            text = source.read() if source else Path(args.files_from).read_text()
        except OSError as e:
            raise CommandError(f"--files-from {args.files_from}: {e.strerror}", code=exit_codes.USAGE) from None
        files += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not files:
        raise CommandError("no data files: name them as arguments or with --files-from", code=exit_codes.USAGE)
    if args.parallel < 1 or args.rate <= 0:
        raise CommandError("--parallel must be at least 1 and --rate above 0", code=exit_codes.USAGE)
    base = request_fields(args)
    items = [(f, {"application": args.application, **base, "data": data_path(f)}) for f in files]
    on_result = None if args.json else (lambda r: print(session_format.batch_line(r), flush=True))
    results = batch_submit.submit_all(client, items, args.parallel, args.rate, wait_until=args.wait,
                                      wait_timeout=args.timeout, limit_patience=args.limit_patience,
                                      on_result=on_result)
    failed = sum(1 for r in results if not r["ok"])
    if args.json:
        emit(args, {"results": results, "submitted": sum(1 for r in results if r["session"]), "failed": failed}, "")
    else:
        print(f"{len(results) - failed} of {len(results)} succeeded" + (f", {failed} failed" if failed else ""))
    return batch_submit.overall_exit_code(results)


@run_guarded
def cmd_status(args) -> int:
    client, _ = make_client(args)
    session = client.get(resolve_id(client, args.session, args.all))
    emit(args, session, session_format.details(session))
    return exit_codes.OK


@run_guarded
def cmd_list(args) -> int:
    client, _ = make_client(args)
    sessions = client.list(state=args.state or "", all_users=args.all)
    with_user = args.all or len({s.get("user") for s in sessions}) > 1
    emit(args, {"sessions": sessions}, session_format.table(sessions, with_user=with_user))
    return exit_codes.OK


@run_guarded
def cmd_wait(args) -> int:
    client, _ = make_client(args)
    session = client.get(resolve_id(client, args.session))
    until = args.until
    if session["state"] == until or session["state"] == "ended":
        return finish_wait(args, progress.Outcome.REACHED if session["state"] == until else progress.Outcome.ENDED,
                           session, until, args.timeout)
    try:
        outcome, session = follow(client, session, (until,), args.timeout, args, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\npvhpc wait: stopped waiting; session {session['id']} is kept", file=sys.stderr)
        return exit_codes.INTERRUPTED
    return finish_wait(args, outcome, session, until, args.timeout)


@run_guarded
def cmd_cancel(args) -> int:
    client, _ = make_client(args)
    ended = []
    for text in args.sessions:
        session = client.cancel(resolve_id(client, text, args.all))
        ended.append(session)
        if not args.json:
            print(f"{session['id']}: {session_format.status_words(session)}")
    emit(args, {"sessions": ended}, "")
    return exit_codes.OK


@run_guarded
def cmd_continue(args) -> int:
    client, _ = make_client(args)
    session = client.set_continue(resolve_id(client, args.session, False), not args.off)
    words = ("goes on in a successor job before its walltime" if session.get("continue")
             else "ends at its walltime")
    emit(args, session, f"{session['id']}: {words}")
    return exit_codes.OK


@run_guarded
def cmd_logs(args) -> int:
    client, _ = make_client(args)
    record = client.log_record(resolve_id(client, args.session, args.all))
    if args.json:
        emit(args, record, "")
        return exit_codes.OK
    if record.get("truncated"):
        print("[... earlier output cut: the last 256 KiB follow ...]")
    # What the job printed, the user's programs included: its control characters are written out, not obeyed.
    sys.stdout.write(session_format.shown(record.get("log"), lines=True))
    if not record.get("log"):
        print(f"(no output yet from job {session_format.shown(record.get('job_id')) or '(not submitted)'})",
              file=sys.stderr)
    return exit_codes.OK


@run_guarded
def cmd_url(args) -> int:
    client, settings = make_client(args)
    session = client.get(resolve_id(client, args.session))
    if session["state"] not in ("ready", "unknown") or not session.get("port"):
        raise CommandError(f"session {session['id']} is {session_format.status_words(session)}: "
                           "it has no URL" + (f" yet (pvhpc wait {as_arg(session['id'])})"
                                              if session["state"] != "ended" else ""), code=exit_codes.FAILED)
    login = settings.login_host or urlsplit(settings.url).hostname or "localhost"
    try:
        tunnel = session_format.tunnel(session, login, args.local_port, serves_own_client(client, session))
    except ValueError as e:
        raise CommandError(f"no tunnel line for session {session['id']}: {e}", code=exit_codes.FAILED) from None
    data = {
        "id": session["id"], "state": session["state"], "node": session.get("node"), "host": session.get("host"),
        "port": session.get("port"),
        "sessionURL": session_format.connect_url(session.get("sessionURL"), settings.url),
        "secret": session.get("secret"), "page_url": settings.url.rstrip("/") + "/", **tunnel,
    }
    text = (f"sessionURL:  {data['sessionURL']}\n"
            f"secret:      {data['secret']}\n"
            f"web page:    {data['page_url']}\n"
            f"tunnel:      {data['ssh_command']}\n"
            + (f"             (run on your laptop; then open {data['tunnel_url']} in your browser)"
               if data["tunnel_opens_in_browser"] else
               f"             (run on your laptop; then connect to {data['tunnel_url']} with the secret)"))
    emit(args, data, text)
    return exit_codes.OK


@run_guarded
def cmd_applications(args) -> int:
    client, _ = make_client(args)
    apps = client.applications()
    text = "\n".join(f"{a['name']:<16} partitions {', '.join(a['partitions'])} (default {a['default_partition']})"
                     + (f"; versions {', '.join(a['versions'])} (default {a['default_version']})"
                        if a.get("versions") else "")
                     + (f"  {a['description']}" if a.get("description") else "") for a in apps)
    emit(args, {"applications": apps}, text or "no applications")
    return exit_codes.OK


# -- the parsers ----------------------------------------------------------------------------------------


def _session_argument(p, staff_all: bool = True) -> None:
    """SESSION (an id or a unique start of it) and, for staff, --all to look among every user's sessions."""
    p.add_argument("session", help="session id (or a unique start of it; one that starts with '-' goes after '--')")
    if staff_all:
        p.add_argument("--all", action="store_true", help="staff: find the id among every user's sessions")


def register(sub) -> None:
    common = common_options()
    req = request_options()

    p = add_command(
        sub, "submit", "ask for a ParaView session (optionally wait until it is ready)",
        "Asks the pvhpc service for a session of APPLICATION; pvhpc submits it as a Slurm job. Without --wait "
        "the command returns as soon as the session is recorded and prints its id.\n\n"
        "With --wait it follows the session through Slurm's queue: on a terminal a status line is redrawn every "
        "second with the state, Slurm's reason in plain words (for example 'waiting for free nodes or GPUs') "
        "and the expected start; when standard output is a file or a pipe one line is printed per change. It "
        "ends when the session is ready (its sessionURL is printed) or ended (the reason is printed, exit 1). "
        "Ctrl-C stops waiting but keeps the session.",
        [("pvhpc submit paraview", "submit on the default partition and return at once"),
         ("pvhpc submit paraview -p gpu -g 2 -t 2:00:00 --data run1/out.vtu --wait",
          "two GPUs for two hours, open run1/out.vtu, wait until ready"),
         ("pvhpc submit paraview --app-version 5.11-egl -p gpu",
          "one of the application's versions (its environment modules; 'pvhpc applications' lists them)"),
         ("pvhpc submit paraview --wait --timeout 600 --json | jq -r .sessionURL",
          "for scripts: the session as JSON once ready (exit 7 if not ready within 10 minutes)")],
        parents=[common, req])
    p.add_argument("application", help="the application to run (see 'pvhpc applications')")
    p.add_argument("-d", "--data", help="a data file to open, under the application's data directories")
    p.add_argument("-w", "--wait", action="store_true", help="follow the session until it is ready or ended")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up waiting after this long (exit 7; the session is kept)")
    p.add_argument("--continue", dest="continue_on", action="store_true",
                   help="go on in a successor Slurm job shortly before the walltime, with the same id, URL and "
                        "secret, starting from the state saved (where the site allows it; see 'pvhpc continue')")
    p.set_defaults(func=cmd_submit)

    p = add_command(
        sub, "submit-batch", "submit one session per data file, at a bounded pace",
        "Submits one session of APPLICATION per data file (for example for off-line rendering), without "
        "overloading the service or Slurm: at most --parallel submissions (each with its wait, when --wait is "
        "given) are in flight at once, and new ones start no faster than --rate per second. When the site's "
        "request limit answers 'too many requests', the batch waits as long as the service says and goes on. "
        "When your per-user session limit is reached, each file keeps trying for --limit-patience seconds "
        "(so that sessions of the batch can end and make room) and is then reported as failed.\n\n"
        "One line is printed per file as it finishes (with --json: one object with every result at the end). "
        "The exit status is 0 when every file succeeded, else the exit status of the first file that failed.",
        [("pvhpc submit-batch paraview run*/out.vtu", "one session per file, default pace (4 at once, 2 per second)"),
         ("find . -name '*.vtu' | pvhpc submit-batch paraview --files-from - -p cpu --parallel 2 --rate 0.5",
          "files from standard input, gently"),
         ("pvhpc submit-batch paraview a.vtu b.vtu --wait ended --limit-patience 3600 --json",
          "wait for each session to end; queue behind the session limit for up to an hour")],
        parents=[common, req])
    p.add_argument("application", help="the application to run for each file")
    p.add_argument("files", nargs="*", metavar="FILE", help="data files, one session each")
    p.add_argument("--files-from", metavar="LIST", help="read more data files from LIST, one per line ('-': stdin)")
    p.add_argument("--parallel", type=int, default=4, metavar="N",
                   help="at most N submissions (and their waits) at once (default 4)")
    p.add_argument("--rate", type=float, default=2.0, metavar="PER_SECOND",
                   help="start at most this many submissions per second (default 2)")
    p.add_argument("--wait", choices=("ready", "ended"), default=None,
                   help="wait for each session to be ready, or to end, before its slot is free")
    p.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                   help="with --wait: how long to wait for each session (default 3600)")
    p.add_argument("--limit-patience", type=float, default=0, metavar="SECONDS",
                   help="keep retrying a file this long while the per-user session limit is reached (default 0)")
    p.set_defaults(func=cmd_submit_batch)

    p = add_command(
        sub, "status", "show one session: state, job, node, URL and its history",
        "Shows one of your sessions: its state with Slurm's reason in words and the expected start while "
        "queued, its job, node, sessionURL and every state it went through. SESSION is the id or a unique "
        "start of it.",
        [("pvhpc status Xy3k", "a session by the start of its id"),
         ("pvhpc status Xy3kQ... --json | jq .state", "the state, for a script")],
        parents=[common])
    _session_argument(p)
    p.set_defaults(func=cmd_status)

    p = add_command(
        sub, "list", "list your sessions",
        "Lists your sessions, newest first: id, state (ended ones with their end reason), partition, GPUs, "
        "job, node, when created and the latest detail.",
        [("pvhpc list", "all your sessions"), ("pvhpc list --state live", "only those not ended"),
         ("pvhpc list --json | jq -r '.sessions[].id'", "ids for a script")],
        parents=[common])
    p.add_argument("--state", help="only sessions in this state (submitting, queued, starting, ready, unknown, "
                                   "ended) or 'live' (every state but ended)")
    p.add_argument("--all", action="store_true", help="staff: every user's sessions (others see their own)")
    p.set_defaults(func=cmd_list)

    p = add_command(
        sub, "wait", "wait until a session is ready (or has ended)",
        "Follows a session with the same live display as 'submit --wait' until it is ready (or, with "
        "--until ended, until it has ended). Exit 0 when it got there; 1 when it ended instead (with "
        "--until ended: when it ended badly, i.e. not cancelled or completed); 7 on --timeout.",
        [("pvhpc wait Xy3k", "until ready"),
         ("pvhpc wait Xy3k --until ended --timeout 7200", "until the session is over, at most two hours")],
        parents=[common])
    _session_argument(p, staff_all=False)
    p.add_argument("--until", choices=("ready", "ended"), default="ready", help="what to wait for (default ready)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up after this long (exit 7)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display, only the result")
    p.set_defaults(func=cmd_wait)

    p = add_command(
        sub, "cancel", "end sessions and cancel their Slurm jobs",
        "Ends each session and cancels its job. Cancelling a session that has already ended changes nothing "
        "and is not an error.",
        [("pvhpc cancel Xy3k", "one session"),
         ("pvhpc list --state live --json | jq -r '.sessions[].id' | xargs pvhpc cancel --", "all your live sessions")],
        parents=[common])
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="session ids (or unique starts of them)")
    p.add_argument("--all", action="store_true", help="staff: find the ids among every user's sessions")
    p.set_defaults(func=cmd_cancel)

    p = add_command(
        sub, "continue", "let a session go on in a successor job before its walltime (or stop it)",
        "Asks that the session go on in a successor Slurm job shortly before its walltime: the same partition, "
        "resources, account and application; the successor starts from the state the session's job saves as it "
        "is ended, and the session keeps its id, URL and secret (an application's page opened from it comes back "
        "by itself). Where staff allow it and within the total they set (service.continue_max_total). --off "
        "stops asking: the session then ends at its walltime, and a successor already queued is cancelled.",
        [("pvhpc continue Xy3k", "go on past the walltime"), ("pvhpc continue Xy3k --off", "end at the walltime")],
        parents=[common])
    _session_argument(p, staff_all=False)   # the owner's decision: staff do not prolong others' sessions
    p.add_argument("--off", action="store_true", help="stop asking: the session ends at its walltime")
    p.set_defaults(func=cmd_continue)

    p = add_command(
        sub, "logs", "print a session job's output (the ParaView server's log)",
        "Prints the output of the session's job: the ParaView server's log, the first place to look when a "
        "session ended badly. At most the last 256 KiB are shown.",
        [("pvhpc logs Xy3k", ""), ("pvhpc logs Xy3k | grep -i error", "")],
        parents=[common])
    _session_argument(p)
    p.set_defaults(func=cmd_logs)

    p = add_command(
        sub, "url", "how to connect: sessionURL, secret, web page and an ssh -L tunnel line",
        "Prints what a ParaViewWeb client needs to connect to a ready session: its sessionURL and secret, the "
        "service's web page, and an 'ssh -L' command to run on a laptop that cannot reach the compute nodes: "
        "it forwards a local port through the login host to the session's node and port, after which the "
        "session answers at ws://localhost:PORT/ws (an application that serves its own page, such as trame, "
        "opens in a browser at http://localhost:PORT/?secret=...). The login host comes from --login, PVHPC_LOGIN_HOST or "
        "login_host: in the client config file, else the service URL's host.",
        [("pvhpc url Xy3k", ""),
         ("pvhpc url Xy3k --login login.example.org --local-port 9000", "tunnel through login.example.org to local port 9000"),
         ("eval \"$(pvhpc url Xy3k --json | jq -r .ssh_command) &\"", "open the tunnel from a script")],
        parents=[common])
    _session_argument(p, staff_all=False)
    p.add_argument("--login", metavar="HOST", help="the login host to tunnel through ([user@]host)")
    p.add_argument("--local-port", type=int, metavar="PORT", help="local port of the tunnel (default: the session's port)")
    p.set_defaults(func=cmd_url)

    p = add_command(
        sub, "applications", "list the applications you can submit",
        "Lists the site's applications with the partitions each may run on, and the versions it offers "
        "(pvhpc submit --app-version).",
        [("pvhpc applications", "")], parents=[common])
    p.set_defaults(func=cmd_applications)
