"""``pvhpc extend SESSION MINUTES``: more time for a running session (POST /api/v1/sessions/<id>/extend)."""

from __future__ import annotations

import argparse

from pvhpc.cli import exit_codes, session_format
from pvhpc.cli.base import common_options, emit, make_client, run_guarded
from pvhpc.cli.command_help import add_command
from pvhpc.cli.session_cmds import resolve_id


def whole_minutes(text: str) -> int:
    """MINUTES as typed: a positive whole number, said here before anything is asked of the service."""
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of minutes, not {text!r}")
    return int(text)


@run_guarded
def cmd_extend(args) -> int:
    client, _ = make_client(args)
    session = client.extend(resolve_id(client, args.session), args.minutes)
    emit(args, session, f"{session['id']}: walltime now {session.get('walltime')}; "
                        f"{session_format.time_left(session) or 'its job does not run'}")
    return exit_codes.OK


def register(sub) -> None:
    p = add_command(
        sub, "extend", "give a running session more time (a longer walltime), where the site allows it",
        "Raises the walltime of one of your running sessions by MINUTES, in place: the same job, server and "
        "connection go on. Each partition's staff say whether pvhpc may do that and up to what whole walltime; "
        "the answer says why not (the partition does not allow it, or the most that can still be added). The "
        "new walltime and time left are printed.",
        [("pvhpc extend Xy3k 30", "half an hour more"),
         ("pvhpc extend Xy3k 60 --json | jq .ends_at", "when the walltime now ends, for a script")],
        parents=[common_options()])
    p.add_argument("session", help="session id (or a unique start of it; one that starts with '-' goes after '--')")
    p.add_argument("minutes", type=whole_minutes, help="how many minutes more")
    p.set_defaults(func=cmd_extend)
