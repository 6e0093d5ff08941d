"""The ``pvhpc`` command: one entry point, one module per group of subcommands."""

from __future__ import annotations

import argparse
import sys

from pvhpc.cli import (apache_cmd, cluster_cmd, connect_cmd, demo_cmd, extend_cmd, pvsc_cmd, relaunch_cmd,
                       runtime_cmd, saved_state_cmds, serve_cmd, session_cmds, share_cmds, staff_cmds, token_cmds)

GROUPS = (session_cmds, extend_cmd, relaunch_cmd, share_cmds, connect_cmd, pvsc_cmd, saved_state_cmds, token_cmds,
          staff_cmds, cluster_cmd, runtime_cmd, serve_cmd, demo_cmd, apache_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvhpc",
        description="Launch ParaViewWeb sessions as Slurm jobs and put them in users' browsers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
