"""``pvhpc states``: the ParaView states your sessions saved when their jobs were ended (walltime, cancel,
idle), newest first; ``pvhpc submit APP --saved-state PATH`` starts a new session from one."""

from __future__ import annotations

from pvhpc.cli import exit_codes, session_format
from pvhpc.cli.command_help import add_command
from pvhpc.cli.base import common_options, emit, make_client, run_guarded


@run_guarded
def cmd_saved_states(args) -> int:
    client, _ = make_client(args)
    states = client.saved_states()
    shown = session_format.shown   # a path holds what its user named it
    text = "\n".join(f"{shown(s['saved_at'])}  session {shown(s['session']):<24} {s['bytes'] // 1024:>6} kB  "
                     f"{shown(s['path'])}" for s in states)
    emit(args, {"states": states}, text or "no saved states (a session saves one when its job is ended)")
    return exit_codes.OK


def register(sub) -> None:
    p = add_command(sub, "states", "list the ParaView states your sessions saved when they were ended",
                    "A session's ParaView server saves its pipeline (a .pvsm state) when its job reaches its "
                    "walltime, is cancelled or is ended as idle. This lists them, newest first: when, which "
                    "session, the size and the path, which 'pvhpc submit APP --saved-state PATH' starts a new "
                    "session from (its data paths are checked against the data roots again).",
                    [("pvhpc states", "your saved states"),
                     ("pvhpc submit visualizer --wait "
                      "--saved-state \"$(pvhpc states --json | jq -r '.states[0].path')\"",
                      "a new Visualizer session from the newest one")],
                    parents=[common_options()])
    p.set_defaults(func=cmd_saved_states)
