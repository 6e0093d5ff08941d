"""``pvhpc pvsc``: a server-configuration file for the desktop ParaView's "Connect" dialog, one entry per desktop
application and partition of the service (pvhpc/client/pvsc.py writes it; docs/desktop.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pvhpc.cli import exit_codes
from pvhpc.cli.base import CommandError, common_options, emit, make_client, run_guarded
from pvhpc.cli.command_help import add_command
from pvhpc.client import pvsc


@run_guarded
def cmd_pvsc(args) -> int:
    client, settings = make_client(args)
    try:
        text = pvsc.server_configuration(client.applications(), client.partitions()["partitions"],
                                         settings.url, executable=args.exec, local_port=args.port)
    except ValueError as e:
        raise CommandError(str(e), code=exit_codes.FAILED) from None
    if args.output in (None, "-"):
        if args.json:
            emit(args, {"pvsc": text}, "")
        else:
            print(text, end="")
        return exit_codes.OK
    write_whole(Path(args.output), text)
    emit(args, {"path": args.output}, f"wrote {args.output}: in ParaView, File > Connect > Load Servers, or "
                                      f"PV_SERVER_CONFIG=... / 'paraview --servers-file={args.output}'")
    return exit_codes.OK


def write_whole(path: Path, text: str) -> None:
    """Written beside its place and renamed in: a ParaView reading the file meanwhile never sees half of it."""
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def local_port(text: str) -> int:
    port = int(text)
    if not 1024 <= port <= 65535:
        raise ValueError(port)
    return port


def register(sub) -> None:
    p = add_command(
        sub, "pvsc", "write a server configuration (.pvsc) for the desktop ParaView's Connect dialog",
        "Writes a ParaView server-configuration file with one entry per application of this service that runs a "
        "bare pvserver for the desktop client, on each partition it runs on. In ParaView (the same version as "
        "the site's), File > Connect > Load Servers reads it; choosing an entry asks for nodes, ranks, walltime "
        "and account where the partition offers them, then runs 'pvhpc connect --new ...' on this computer, "
        "which submits the session and carries ParaView's connection to it through the service. The file "
        "names the service's URL and nothing secret: the pvhpc it runs reads your token from PVHPC_TOKEN or "
        "its config file, as every pvhpc command does.",
        [("pvhpc pvsc -o pvhpc.pvsc", "write the file"),
         ("paraview --servers-file=pvhpc.pvsc --server='pvhpc pvserver on cpu'", "connect at ParaView's start"),
         ("pvhpc pvsc --exec /opt/pvhpc/bin/pvhpc", "where pvhpc is not on ParaView's PATH")],
        parents=[common_options()])
    p.add_argument("-o", "--output", metavar="FILE", help="write the file here (default: standard output)")
    p.add_argument("--exec", default="pvhpc", metavar="PATH",
                   help="the pvhpc command as ParaView on this computer finds it (default: pvhpc, on PATH)")
    p.add_argument("--port", type=local_port, default=pvsc.DEFAULT_LOCAL_PORT, metavar="PORT",
                   help="the local port ParaView connects to, offered in the dialog (default 11111)")
    p.set_defaults(func=cmd_pvsc)
