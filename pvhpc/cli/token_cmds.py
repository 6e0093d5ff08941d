"""``pvhpc token create|list|revoke``: personal API tokens for users who script.

A token cannot make tokens (docs/security.md), so ``create`` never sends the token of
PVHPC_TOKEN or the client config. It is the user's own login that makes one: with
``auth.kind: local`` there is none to give (the service's one user); behind a front end,
``--login USER`` asks for the password on the terminal and sends it as HTTP Basic to the
service's public URL, where the front end (Apache) checks it as it does a browser's.
"""

from __future__ import annotations

import base64
import getpass
import sys
from urllib.parse import urlsplit

from pvhpc.client.api import Client, ClientError
from pvhpc.cli import exit_codes
from pvhpc.cli.session_format import shown
from pvhpc.cli.command_help import add_command
from pvhpc.cli.base import CommandError, common_options, emit, make_client, run_guarded

DENIED_HINT = ("a token cannot make tokens: log in through the site's front end with --login USER (the "
               "password is asked on the terminal), or make one on the web page")


def front_end_login(args, url: str) -> dict[str, str]:
    """Headers that log ``--login USER`` in at the front end: HTTP Basic, and the site's own Origin.

    The Origin is honest: the user runs this command on purpose, and the service refuses a state change
    with a front end's login from anything that does not name the site (a browser on a foreign page).
    """
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"password of {args.frontend_user} at {url}: ")
        except EOFError:
            password = ""
    if not password:
        raise CommandError("no password given: type it at the prompt, or pipe it with --password-stdin",
                           code=exit_codes.USAGE)
    basic = base64.b64encode(f"{args.frontend_user}:{password}".encode()).decode()
    parts = urlsplit(url)
    return {"Authorization": f"Basic {basic}", "Origin": f"{parts.scheme}://{parts.netloc}"}


def token_client(args, for_create: bool = False) -> Client:
    """The client of a token command: the front end's login with --login; else the configured token, except
    for ``create``, which sends none (a token cannot make tokens)."""
    client, settings = make_client(args)
    if args.frontend_user:
        return Client(settings.url, token="", headers=front_end_login(args, settings.url))
    if for_create:
        return Client(settings.url, token="")
    return client


def denied_as_hint(call):
    try:
        return call()
    except ClientError as e:
        if e.status in (401, 403):
            raise CommandError(f"{e.message} (HTTP {e.status}); {DENIED_HINT}", code=exit_codes.DENIED) from None
        raise


def describe_line(t: dict) -> str:
    day = lambda iso: (iso or "-")[:10]  # noqa: E731
    return (f"{t['id']:>4}  {shown(t['name'][:24]):<24}  {t['state']:<8}  created {day(t['created_at'])}  "
            f"expires {day(t['expires_at'])}  last used {day(t['last_used_at'])}")


@run_guarded
def cmd_create(args) -> int:
    client = token_client(args, for_create=True)
    made = denied_as_hint(lambda: client.create_token(args.name, args.days))
    if args.json:
        emit(args, made, "")
    else:
        # The token alone on standard output, so that $(pvhpc token create NAME) is the token.
        print(made["token"])
        print(f"token {made['id']} ({shown(made['name'])}), valid until {made['expires_at'][:10]}; it is shown this "
              f"once: keep it in PVHPC_TOKEN or as token: in a client config file only you can read "
              f"(chmod 600); pvhpc token revoke {made['id']} ends it", file=sys.stderr)
    return exit_codes.OK


@run_guarded
def cmd_list(args) -> int:
    client = token_client(args)
    listed = denied_as_hint(client.tokens)
    emit(args, {"tokens": listed}, "\n".join(describe_line(t) for t in listed) or "no tokens")
    return exit_codes.OK


@run_guarded
def cmd_revoke(args) -> int:
    client = token_client(args)
    revoked = denied_as_hint(lambda: client.revoke_token(args.id))
    emit(args, revoked, f"token {revoked['id']} ({revoked['name']}): {revoked['state']}")
    return exit_codes.OK


def login_options():
    p = common_options()
    p.add_argument("--login", dest="frontend_user", metavar="USER",
                   help="log in at the site's front end as USER (HTTP Basic; the password is asked on the terminal)")
    p.add_argument("--password-stdin", action="store_true",
                   help="with --login: read the password from the first line of standard input")
    return p


def register(sub) -> None:
    p = add_command(sub, "token", "make, list and revoke your personal API tokens (for scripts)",
                    "Personal API tokens let scripts and the pvhpc command act as you (PVHPC_TOKEN). A token "
                    "cannot make tokens: 'create' logs in the way a browser does (--login USER, through the "
                    "site's front end; nothing with auth.kind: local).",
                    [("pvhpc token create laptop --login alice", "a token valid 90 days; printed once"),
                     ("pvhpc token list", "your tokens (never their values)"),
                     ("pvhpc token revoke 3", "end token 3 at once")])
    commands = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    login = login_options()

    c = add_command(commands, "create", "make a token: printed once, on standard output",
                    "Makes a personal API token named NAME, valid for --days days, and prints it: only this "
                    "once (pvhpc keeps its SHA-256 alone). The token is the only line on standard output "
                    "(explanations go to standard error); with --json, the token's record with its value in "
                    "'token'. The token of PVHPC_TOKEN is never sent: a token cannot make tokens. Behind a "
                    "front end (Apache), --login USER logs in there with your site password; with "
                    "auth.kind: local there is no login.",
                    [("export PVHPC_TOKEN=$(pvhpc token create laptop --login alice)",
                      "make one and use it in this shell"),
                     ("pvhpc token create ci --days 30 --login alice --json", "as JSON, valid 30 days"),
                     ("pass show site | pvhpc token create ci --login alice --password-stdin",
                      "the password from a password manager")],
                    exit_notes="6    the front end's login was refused, or a token was all there was", parents=[login])
    c.add_argument("name", help="what the token is for (1 to 64 printable characters), shown by 'list'")
    c.add_argument("--days", type=int, default=90, help="days the token is valid (1 to 365; default 90)")
    c.set_defaults(func=cmd_create)

    c = add_command(commands, "list", "your tokens: id, name, state, dates (never their values)",
                    "Lists your personal API tokens: id, name, state (active, expired, revoked), when each was "
                    "made, when it expires and when it was last used.",
                    [("pvhpc token list", ""), ("pvhpc token list --json | jq '.tokens[] | select(.state == \"active\")'",
                                                "the active ones, for a script")], parents=[login])
    c.set_defaults(func=cmd_list)

    c = add_command(commands, "revoke", "end a token at once",
                    "Revokes token ID (see 'pvhpc token list'): every request with it is refused from now on. "
                    "Revoking a revoked token changes nothing and is not an error.",
                    [("pvhpc token revoke 3", ""), ("pvhpc token revoke 3 --json", "the token's record, state revoked")],
                    parents=[login])
    c.add_argument("id", type=int, help="the token's id (from 'pvhpc token list')")
    c.set_defaults(func=cmd_revoke)
