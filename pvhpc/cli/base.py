"""What every command of the ``pvhpc`` CLI stands on: its error, its shared options, the client it talks
through, and how it prints a result or an error (with --json: as JSON on standard output; else words, and errors
as one line on standard error, the exit code saying what kind of error it was: exit_codes)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from pvhpc.client import config as clientconfig
from pvhpc.client.api import Client, ClientError
from pvhpc.cli import exit_codes, session_format
from pvhpc.errors import PvhpcError


class CommandError(PvhpcError):
    """A command cannot go on; ``code`` is the exit code it ends with (pvhpc.cli.exit_codes)."""

    def __init__(self, message: str, *, code: int):
        super().__init__(message)
        self.code = code


def common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON (the API's objects; see docs/cli.md) instead of words")
    p.add_argument("--url", metavar="URL", help="the pvhpc service (default: $PVHPC_URL, then the config file)")
    return p


def make_client(args) -> tuple[Client, clientconfig.ClientSettings]:
    try:
        settings = clientconfig.load(url=args.url, login_host=getattr(args, "login", None))
    except clientconfig.ClientConfigError as e:
        raise CommandError(str(e), code=exit_codes.USAGE) from None
    for warning in settings.warnings:
        print(f"pvhpc: warning: {warning}", file=sys.stderr)
    if not settings.url:
        raise CommandError("no service URL: set PVHPC_URL, pass --url, or put url: in "
                           f"{clientconfig.config_path()}", code=exit_codes.USAGE)
    return Client(settings.url, token=settings.token or ""), settings


def emit(args, data, text: str) -> None:
    """Print the result: as JSON (which writes every control character as an escape), or as words, whose
    control characters (in what users wrote: reasons, file names) are written out too (session_format.shown)."""
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    elif text:
        print(session_format.shown(text, lines=True))


def error_json(code: int, message: str, status: int | None = None, field: str | None = None) -> dict:
    return {"error": message, "exit_code": code, "status": status, "field": field}


def run_guarded(body: Callable) -> Callable:
    """Wrap a command: client errors and command errors become a message and their exit code."""

    def run(args) -> int:
        try:
            return body(args)
        except ClientError as e:
            code = exit_codes.for_status(e.status)
            message = e.message
            if code == exit_codes.DENIED:
                message += "; check PVHPC_TOKEN (a personal API token of this service)"
            return report_error(args, code, message, e.status, e.field)
        except CommandError as e:
            return report_error(args, e.code, e.message)

    return run


def report_error(args, code: int, message: str, status: int | None = None, field: str | None = None) -> int:
    if getattr(args, "json", False):
        print(json.dumps(error_json(code, message, status, field), indent=2))
    else:
        print(f"pvhpc {args.command}: {session_format.shown(message)}" + (f" (HTTP {status})" if status else ""),
              file=sys.stderr)
    return code
