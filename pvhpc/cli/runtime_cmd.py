"""``pvhpc runtime install|check``: the ParaViewWeb runtime that session jobs use."""

from __future__ import annotations

import sys
from pathlib import Path

from pvhpc import paths
from pvhpc.node import runtime


def register(sub) -> None:
    p = sub.add_parser(
        "runtime",
        help="install or check the ParaViewWeb runtime (wslink for pvpython, Xvfb)",
        description="install puts wslink 1.x where pvpython can import it; check tells what a node is missing.",
    )
    p.add_argument("action", choices=("install", "check"))
    p.add_argument("--dir", default=None, help="directory for wslink (default: $PVHPC_RUNTIME_DIR or /opt/pvhpc/pvweb-site)")
    p.set_defaults(func=run)


def run(args) -> int:
    target = Path(args.dir) if args.dir else paths.runtime_dir()
    if args.action == "install":
        try:
            runtime.install(target)
        except runtime.RuntimeProblem as e:
            print(f"pvhpc runtime install: {e}", file=sys.stderr)
            return 1
        print(f"wslink for pvpython is in {target}")
        return 0
    results = runtime.check(target)
    for r in results:
        print(f"{'ok ' if r.ok else 'BAD'} {r.name:9} {r.detail}")
    return 0 if all(r.ok for r in results) else 1
