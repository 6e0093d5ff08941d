"""``pvhpc serve``: run the service."""

from __future__ import annotations

import asyncio
import logging
import sys

from pvhpc import config as site_config
from pvhpc.app import serve_forever
from pvhpc.frontends.base import FrontEndError
from pvhpc.scheduler.runners import watch_commands_without_threads
from pvhpc.scheduler.ssh import SSHError
from pvhpc.db.store import SchemaError
from pvhpc.errors import PvhpcError


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the pvhpc service (ParaViewWeb launcher API, native API)",
        description=(
            "Loads and checks the site config, opens the database, reconciles its sessions with the scheduler "
            "(live jobs are reattached, ended ones closed, nothing is resubmitted), then serves. Without "
            "--config it serves the local cluster of 'pvhpc cluster start' with embedded defaults."
        ),
    )
    p.add_argument("--config", help="site config file (YAML)")
    p.add_argument("--port", type=int, default=None, help="listen on this port instead of service.listen's")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=run)


def run(args) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            cfg = site_config.load(args.config)
        else:
            cfg = site_config.embedded_defaults(**({"listen": f"127.0.0.1:{args.port}"} if args.port else {}))
    except site_config.ConfigError as e:
        print(f"pvhpc serve: config error: {e}", file=sys.stderr)
        return 2
    if args.port is not None:
        from dataclasses import replace

        cfg = replace(cfg, service=replace(cfg.service, listen_port=args.port))
    watch_commands_without_threads()
    try:
        asyncio.run(serve_forever(cfg))
    except SSHError as e:
        print(f"pvhpc serve: ssh: {e}", file=sys.stderr)
        return 2
    except FrontEndError as e:
        print(f"pvhpc serve: front end: {e}", file=sys.stderr)
        return 2
    except SchemaError as e:
        print(f"pvhpc serve: database: {e}", file=sys.stderr)
        return 2
    except PvhpcError as e:
        # Any other part that cannot start (a scheduler backend that cannot load, say) says why, without a traceback.
        print(f"pvhpc serve: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pvhpc serve: cannot listen on {cfg.service.listen_host}:{cfg.service.listen_port}: {e.strerror}",
              file=sys.stderr)
        return 2
    return 0

