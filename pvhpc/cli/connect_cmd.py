"""``pvhpc connect``: ParaView's desktop client to a desktop session, with no tunnel made by hand (docs/desktop.md).

    pvhpc connect ID [--port N] [--launch] [--ssh [--login HOST]]
    pvhpc connect --new [APPLICATION] -p PARTITION [-N NODES] [-n RANKS] [-t WALLTIME] [--port N] [--launch]

It listens on 127.0.0.1 (pvhpc.client.desktop: only this user's connections are taken where that can be checked),
prints ``cs://localhost:PORT`` for ParaView, carries each of ParaView's connections over a websocket to the session's
bridge (through the site's front end with the user's login, or with ``--ssh`` through an SSH tunnel via the login
host: pvhpc's own, pvhpc/frontends/tunnel.py over pvhpc/scheduler/ssh.py), and exits when the session ends. With
``--new`` it submits the session first, follows it as ``submit --wait`` does, and cancels it when it stops (Ctrl-C,
SIGTERM, or the session's end), so no job is left behind. A ``.pvsc`` server configuration may run it as
``pvhpc connect --new ... --port $PV_SERVER_PORT$``: keep these option names.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from pvhpc.client.api import Client, ClientError
from pvhpc.client.desktop import DesktopError, open_desktop, session_problem
from pvhpc.cli import exit_codes, progress, session_format
from pvhpc.cli.base import CommandError, common_options, make_client, run_guarded
from pvhpc.cli.command_help import add_command
from pvhpc.cli.session_cmds import as_arg, finish_wait, follow, request_options, request_fields, resolve_id
from pvhpc.cli.token_cmds import front_end_login

# How each kind of DesktopError ends the command (exit_codes): a session that is not for the desktop client is
# the user's wrong input; one that is not ready, has ended or refused is not usable.
PROBLEM_CODES = {"not_desktop": exit_codes.USAGE, "not_ready": exit_codes.FAILED, "ended": exit_codes.FAILED,
                 "refused": exit_codes.FAILED, "unreachable": exit_codes.FAILED}
SSH_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
WATCH_RETRY = 5   # seconds between asks while the service does not answer


def say(line: str) -> None:
    print(f"pvhpc connect: {session_format.shown(line)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM taken as Ctrl-C is: stop, and cancel what --new submitted."""
    def on_term(signum, frame):
        raise KeyboardInterrupt()

    before = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def desktop_application(client: Client) -> str:
    """The site's first application for the desktop client (``pvhpc connect --new`` without one)."""
    names = [a["name"] for a in client.applications() if a.get("desktop")]
    if not names:
        raise CommandError("this site offers no application for ParaView's desktop client ('pvhpc applications' "
                           "lists what it offers)", code=exit_codes.USAGE)
    return names[0]


def ssh_forward(args, settings, session: dict):
    """An SSH link to the login host and a loopback forward over it to the session's node and port (pvhpc's own
    tunnel, as SSH mode's built-in proxy uses); the words checked as ``pvhpc url``'s ssh -L line checks them."""
    from pvhpc.frontends.tunnel import LoopbackForward
    from pvhpc.scheduler.ssh import SSHError, SSHLink

    login = args.login or settings.login_host or urlsplit(settings.url).hostname or "localhost"
    host, port = session.get("host") or session.get("node"), session.get("port")
    try:
        session_format.forward_command(host, port, login, ssh_port=args.ssh_port)
    except ValueError as e:
        raise CommandError(str(e), code=exit_codes.USAGE) from None
    user, _, name = login.rpartition("@")
    home = Path.home() / ".ssh"
    key = args.ssh_key or next((str(home / k) for k in SSH_KEYS if (home / k).is_file()), None)
    if key is None:
        raise CommandError(f"no SSH key for {login}: none of {', '.join(SSH_KEYS)} is in {home}; give --ssh-key",
                           code=exit_codes.USAGE)
    link = SSHLink(name, user or getpass.getuser(), Path(key), Path(args.known_hosts or home / "known_hosts"),
                   port=args.ssh_port)
    try:
        link.transport()   # the host key and the login checked now, with their own words
    except SSHError as e:
        link.close()
        raise CommandError(str(e), code=exit_codes.UNREACHABLE) from None
    return link, LoopbackForward(link, host, port)


def watch_session(client: Client, session_id: str, loop: asyncio.AbstractEventLoop, ended: asyncio.Event,
                  last: dict) -> None:
    """Follow the session's events in a thread of its own (the client is blocking) until it ends."""
    def run() -> None:
        while True:
            try:
                session = client.wait(session_id, until=("ended",), timeout=24 * 3600)
            except ClientError as e:
                if e.status != 404:
                    time.sleep(WATCH_RETRY)   # the service is away for a moment: ask again, not at once
                    continue
                session = {"id": session_id, "state": "ended", "end_reason": None, "detail": str(e)}
            if session.get("state") == "ended":
                last.update(session)
                loop.call_soon_threadsafe(ended.set)
                return

    threading.Thread(target=run, name="pvhpc-connect-watch", daemon=True).start()


async def connect(client: Client, settings, session_id: str, args) -> int:
    link = forward = None
    websocket_url = None
    if args.ssh:
        session = await asyncio.get_running_loop().run_in_executor(None, client.get, session_id)
        problem = session_problem(session)
        if problem:
            raise problem
        link, forward = ssh_forward(args, settings, session)
        websocket_url = f"ws://127.0.0.1:{forward.local_port}/ws"
    try:
        try:
            connection = await open_desktop(client, session_id, args.port or 0, websocket_url, log=say)
        except OSError as e:
            raise CommandError(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror}", code=exit_codes.USAGE) from None
        loop = asyncio.get_running_loop()
        ended, last = asyncio.Event(), {}
        watch_session(client, session_id, loop, ended, last)
        if args.json:
            print(json.dumps({"url": connection.server_url, "port": connection.port, "session": session_id}),
                  flush=True)
        else:
            print(connection.server_url, flush=True)
            say(f"ParaView's server for session {session_id} is {connection.server_url}: in ParaView, File > Connect "
                f"(or paraview --server-url={connection.server_url}); this ends with the session (Ctrl-C: "
                "disconnect)")
        paraview = None
        if args.launch:
            paraview = subprocess.Popen(["paraview", f"--server-url={connection.server_url}"],
                                        stdin=subprocess.DEVNULL)
        serving = asyncio.ensure_future(connection.serve())
        try:
            while not ended.is_set():
                if paraview is not None and paraview.poll() is not None:
                    say(f"ParaView has exited ({paraview.returncode})")
                    break
                if serving.done():
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ended.wait(), 0.5)
        finally:
            serving.cancel()
            await connection.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await serving
        if not ended.is_set():
            return exit_codes.OK
        say(f"session {session_id} has ended ({last.get('end_reason')}): {last.get('detail') or ''}".rstrip(": "))
        if connection.connections == 0 and connection.last_refusal:
            return exit_codes.FAILED
        return exit_codes.FAILED if session_format.ended_badly(last) else exit_codes.OK
    finally:
        if forward is not None:
            forward.close()
        if link is not None:
            link.close()


@run_guarded
def cmd_connect(args) -> int:
    if (args.session is None) == (args.new is None):
        raise CommandError("give a session id, or --new [APPLICATION] to start one (not both)", code=exit_codes.USAGE)
    client, settings = make_client(args)
    if args.frontend_user:
        client = Client(settings.url, token="", headers=front_end_login(args, settings.url))
    submitted = None
    with terminate_as_interrupt():
        try:
            if args.new is not None:
                session = client.create(args.new or desktop_application(client), **request_fields(args))
                submitted = session["id"]
                say(f"submitted session {submitted}")
                outcome, session = follow(client, session, ("ready",), args.timeout, args)
                if session.get("state") != "ready":
                    return finish_wait(args, outcome, session, "ready", args.timeout)
                session_id = submitted
            else:
                session_id = resolve_id(client, args.session)
            return asyncio.run(connect(client, settings, session_id, args))
        except DesktopError as e:
            raise CommandError(str(e), code=PROBLEM_CODES.get(e.problem, exit_codes.FAILED)) from None
        except KeyboardInterrupt:
            say("stopped")
            return exit_codes.INTERRUPTED
        finally:
            if submitted is not None:
                cancel(client, submitted)


def cancel(client: Client, session_id: str) -> None:
    """End what --new submitted, whatever stopped the command (Ctrl-C and SIGTERM again are held off meanwhile)."""
    held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if client.get(session_id).get("state") != "ended":
            client.cancel(session_id)
            say(f"cancelled session {session_id}")
    except ClientError as e:
        say(f"could not cancel session {session_id}: {e}; cancel it with: pvhpc cancel {as_arg(session_id)}")
    finally:
        for s, before in held.items():
            signal.signal(s, before)


def register(sub) -> None:
    p = add_command(
        sub, "connect", "ParaView's desktop client to a desktop session: cs://localhost:PORT",
        "Connects ParaView's desktop client (the Qt GUI, or pvpython) to a desktop session (a pvserver on the "
        "compute nodes; 'pvhpc applications' says which applications are for the desktop client) with no tunnel "
        "made by hand. It listens on 127.0.0.1 (--port, else a free port), prints cs://localhost:PORT, and carries "
        "each ParaView connection to the session over a websocket through the site's front end with your login "
        "(PVHPC_TOKEN, or --frontend-user), or with --ssh through an SSH tunnel via the login host. Only your "
        "own connections to that port are taken (Linux). It exits when the session ends: when ParaView "
        "disconnects, the session's pvserver ends and the session with it (completed).\n\n"
        "With --new [APPLICATION] it first submits a session (the site's first desktop application unless named) "
        "with -p/-N/-n/-t as 'pvhpc submit' takes them, follows it until ready, and cancels it when the command "
        "stops for any reason (Ctrl-C, SIGTERM, an error): no job is left behind.",
        [("pvhpc connect Xy3k", "prints cs://localhost:PORT; connect ParaView there"),
         ("pvhpc connect --new -p cpu -N 2 -n 4 --launch", "a new 4-rank session over 2 nodes, then ParaView on it"),
         ("pvhpc connect --new pvserver -p cpu --port 11111", "for a .pvsc server: --port $PV_SERVER_PORT$"),
         ("pvhpc connect Xy3k --ssh --login alice@login1", "through an SSH tunnel via login1"),
         ("pvhpc connect Xy3k --json", "{\"url\", \"port\", \"session\"} on one line once it listens")],
        exit_notes="0    the session ended well (completed, cancelled, idle), or ParaView (--launch) exited\n"
                   "1    the session is not ready, has ended, or refused the connection\n"
                   "2    the session is not a desktop session, or bad options",
        parents=[common_options(), request_options()])
    p.add_argument("session", nargs="?", metavar="SESSION", help="the session id (or a unique start of it)")
    p.add_argument("--new", nargs="?", const="", metavar="APPLICATION",
                   help="submit a desktop session first (default: the site's first desktop application)")
    p.add_argument("--port", type=int, default=0, help="the local port ParaView connects to (default: a free one)")
    p.add_argument("--launch", action="store_true", help="start 'paraview --server-url=cs://localhost:PORT' too")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --new: give up waiting for the session after this long (exit 7; it is cancelled)")
    p.add_argument("--ssh", action="store_true",
                   help="reach the session through an SSH tunnel via the login host, not the front end")
    p.add_argument("--login", metavar="HOST", help="with --ssh: the login host ([user@]host; default "
                                                   "PVHPC_LOGIN_HOST, login_host:, else the service URL's host)")
    p.add_argument("--ssh-port", type=int, default=22, help="with --ssh: the login host's SSH port (default 22)")
    p.add_argument("--ssh-key", metavar="PATH", help="with --ssh: your private key (default ~/.ssh/id_ed25519, "
                                                     "id_ecdsa, id_rsa: the first there)")
    p.add_argument("--known-hosts", metavar="PATH", help="with --ssh: the login host's key (default "
                                                         "~/.ssh/known_hosts; an unknown key is refused)")
    p.add_argument("--frontend-user", metavar="USER",
                   help="log in at the site's front end as USER (HTTP Basic; the password is asked on the terminal)")
    p.add_argument("--password-stdin", action="store_true",
                   help="with --frontend-user: read the password from the first line of standard input")
    p.set_defaults(func=cmd_connect)
