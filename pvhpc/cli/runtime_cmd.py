"""``pvhpc runtime install|check``: the ParaViewWeb runtime that session jobs use, and the web clients."""

from __future__ import annotations

import sys
from pathlib import Path

from pvhpc import paths
from pvhpc import runtime


def register(sub) -> None:
    p = sub.add_parser(
        "runtime",
        help="install or check the ParaViewWeb runtime (wslink for pvpython, Xvfb) and the web clients from npm",
        description="install puts wslink 1.x where pvpython can import it, and unpacks the npm packages "
                    f"{', '.join(f'{k}@{v}' for k, v in runtime.WEB_CLIENTS.items())} into the web clients "
                    "directory (fetched once with npm pack, then from its cache); check tells what a node is missing.",
    )
    p.add_argument("action", choices=("install", "check"))
    p.add_argument("--dir", default=None, help="directory for wslink (default: $PVHPC_RUNTIME_DIR or /opt/pvhpc/pvweb-site)")
    p.add_argument("--web-clients-dir", default=None,
                   help="directory for the web clients (default: $PVHPC_WEB_CLIENTS_DIR or /opt/pvhpc/web-clients)")
    p.set_defaults(func=run)


def run(args) -> int:
    target = Path(args.dir) if args.dir else paths.runtime_dir()
    clients = Path(args.web_clients_dir) if args.web_clients_dir else paths.web_clients_dir()
    if args.action == "install":
        try:
            runtime.install(target)
            print(f"wslink for pvpython is in {target}")
            trame = runtime.install_trame(target)
            print(f"trame (with its own wslink 2.x) is in {trame}")
            clients.mkdir(parents=True, exist_ok=True)
            print(f"trame's web client is in {runtime.install_trame_client(trame, clients)}")
            for d in runtime.install_web_clients(clients):
                print(f"{d.name} is in {d}")
        except (runtime.RuntimeProblem, OSError) as e:
            print(f"pvhpc runtime install: {e}", file=sys.stderr)
            return 1
        return 0
    results = runtime.check(target)
    for r in results:
        print(f"{'ok ' if r.ok else 'BAD'} {r.name:9} {r.detail}")
    return 0 if all(r.ok for r in results) else 1
