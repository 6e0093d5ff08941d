"""``pvhpc share``, ``pvhpc unshare``, ``pvhpc shares``: let named users see (view) or drive (control) one of your
sessions with their own login, take it back, list who has it (docs/sharing.md)."""

from __future__ import annotations

from pvhpc.cli import exit_codes, session_format
from pvhpc.cli.base import CommandError, common_options, emit, make_client, run_guarded
from pvhpc.cli.command_help import add_command
from pvhpc.cli.session_cmds import resolve_id


def shares_text(shares: list[dict]) -> str:
    shown = session_format.shown   # names come from the service: printed as they are, nothing more
    return "\n".join(f"{shown(s['kind']):<5} {shown(s['name']):<24} {shown(s['role']):<7} since "
                     f"{shown(s['granted_at'])}" for s in shares) or "not shared with anyone"


def show_shares_after(args, change) -> int:
    """``change(client, session_id)`` on the session ``args`` names (a unique prefix, as every session command
    takes), then the shares it leaves, printed."""
    client, _ = make_client(args)
    session_id = resolve_id(client, args.session)
    shares = change(client, session_id)
    emit(args, {"id": session_id, "shares": shares}, shares_text(shares))
    return exit_codes.OK


@run_guarded
def cmd_share(args) -> int:
    if (args.user is None) == (args.group is None):
        raise CommandError("name one USER, or one group with --group GROUP", code=exit_codes.USAGE)
    return show_shares_after(args, lambda client, sid: client.share(sid, user=args.user, group=args.group,
                                                                     role=args.role))


@run_guarded
def cmd_unshare(args) -> int:
    return show_shares_after(args, lambda client, sid: client.unshare(sid, args.name, group=args.group))


@run_guarded
def cmd_shares(args) -> int:
    return show_shares_after(args, lambda client, sid: client.shares(sid))


def register(sub) -> None:
    p = add_command(sub, "share", "share one of your sessions with a user (view or control)",
                    "The user opens the session with their own login (it is in their session list, marked as "
                    "shared by you): --view lets them see the picture, their input never reaching the server; "
                    "--control lets them drive it too. Sharing again with another role replaces the first. "
                    "--group GROUP shares with every member of a Unix group, where the site allows it.",
                    [("pvhpc share 3f2a... bob --view", "bob sees the session"),
                     ("pvhpc share 3f2a... --group vislab --control", "every member of vislab drives it too")],
                    parents=[common_options()])
    p.add_argument("session", metavar="ID", help="the session's id, or a unique start of it")
    p.add_argument("user", metavar="USER", nargs="?", help="the user to share with")
    p.add_argument("--group", metavar="GROUP", help="a Unix group to share with instead of a user")
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--view", dest="role", action="store_const", const="view", help="sees the picture only")
    role.add_argument("--control", dest="role", action="store_const", const="control", help="drives it too")
    p.set_defaults(func=cmd_share)

    p = add_command(sub, "unshare", "stop sharing one of your sessions with a user",
                    "The user (or with --group, the group) loses the session: their connection is closed within "
                    "seconds and it leaves their list.",
                    [("pvhpc unshare 3f2a... bob", "bob is cut off")], parents=[common_options()])
    p.add_argument("session", metavar="ID", help="the session's id, or a unique start of it")
    p.add_argument("name", metavar="USER", help="the user (or the group, with --group)")
    p.add_argument("--group", action="store_true", help="NAME is a group")
    p.set_defaults(func=cmd_unshare)

    p = add_command(sub, "shares", "whom one of your sessions is shared with",
                    "Each share: user or group, its name, its role (view, control) and since when.",
                    [("pvhpc shares 3f2a...", "")], parents=[common_options()])
    p.add_argument("session", metavar="ID", help="the session's id, or a unique start of it")
    p.set_defaults(func=cmd_shares)
