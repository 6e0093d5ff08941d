"""Staff commands: config check, doctor, partitions, sessions --all, map rebuild, db upgrade.

``config check``, ``doctor``, ``map rebuild`` and ``db upgrade`` read the site
config (``--config``; without it the embedded defaults of the local cluster,
as ``pvhpc serve`` does) and act on the site's parts directly. ``partitions``
and ``sessions`` ask a running service, like the users' commands.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pvhpc import config as site_config
from pvhpc.cli import base, check_report, exit_codes, session_format
from pvhpc.cli.command_help import add_command

SITE_ENVIRONMENT = """\
environment:
  SLURM_CONF           used when the site config's scheduler.environment does not set it
  PVHPC_STATE_DIR      where the embedded defaults keep the database (without --config)"""


def load_site(args):
    try:
        if args.config:
            return site_config.load(args.config)
        return site_config.embedded_defaults()
    except site_config.ConfigError as e:
        raise base.CommandError(f"config error: {e}", code=exit_codes.USAGE) from None


def guarded(body):
    """Config errors and the like become a message and their exit code (as for the users' commands)."""

    def run(args) -> int:
        try:
            return body(args)
        except base.CommandError as e:
            return base.report_error(args, e.code, e.message)

    return run


def report_checks(args, checks: list[check_report.Check], summary: str, verdict_key: str, extra: dict) -> int:
    bad = check_report.failed(checks)
    if args.json:
        print(json.dumps({verdict_key: not bad, **extra, "checks": check_report.as_json(checks)}, indent=2))
    else:
        print(check_report.render(checks))
        print(summary)
    return exit_codes.FAILED if bad else exit_codes.OK


# -- config check -------------------------------------------------------------------------------------

@guarded
def cmd_config_check(args) -> int:
    from pvhpc.cli import config_check
    from pvhpc.app import runner_for, scheduler_for

    cfg = load_site(args)
    link = None
    if cfg.ssh is not None:
        from pvhpc.scheduler.ssh import SSHError, SSHLink

        link = SSHLink.from_config(cfg.ssh)
        try:
            asyncio.run(link.check())
        except SSHError as e:
            link.close()
            raise base.CommandError(f"cannot reach Slurm through ssh.host: {e}",
                                            code=exit_codes.FAILED) from None
    try:
        runner = runner_for(cfg, link)
        checks = asyncio.run(config_check.check_site(cfg, scheduler_for(cfg, runner), runner))
    finally:
        if link is not None:
            link.close()
    bad = len(check_report.failed(checks))
    summary = (f"{cfg.source}: {bad} problem{'s' if bad != 1 else ''} found" if bad
               else f"{cfg.source}: matches the cluster")
    return report_checks(args, checks, summary, "ok", {"config": cfg.source})


# -- doctor --------------------------------------------------------------------------------------------

@guarded
def cmd_doctor(args) -> int:
    from pvhpc.cli import doctor

    cfg = load_site(args)
    partition = None
    if not args.no_probe:
        partition = args.probe_partition or next(iter(cfg.partitions))
        if partition not in cfg.partitions:
            raise base.CommandError(f"--probe-partition: {partition!r} is not a partition "
                                            f"of {cfg.source} ({', '.join(cfg.partitions)})", code=exit_codes.USAGE)
    if not args.json:
        print(f"checking the site of {cfg.source} ...", flush=True)
    checks = asyncio.run(doctor.diagnose(cfg, partition, args.probe_timeout, args.apache_config))
    bad = check_report.failed(checks)
    if bad:
        summary = (f"NOT healthy: {len(bad)} of {len(checks)} checks failed ({', '.join(c.name for c in bad)}). "
                   "Fix them from the top: later parts depend on earlier ones.")
    else:
        summary = f"healthy: all {len(checks)} checks passed" + (
            f" ({sum(c.status != check_report.OK for c in checks)} warnings or skipped)"
            if any(c.status != check_report.OK for c in checks) else "")
    return report_checks(args, checks, summary, "healthy", {"config": cfg.source})


# -- map rebuild ----------------------------------------------------------------------------------------

@guarded
def cmd_map_rebuild(args) -> int:
    from pvhpc.frontends import make_frontend
    from pvhpc.frontends.proxymap import ProxyMapError, ProxyMapFile
    from pvhpc.frontends.routes import RouteTable
    from pvhpc.db.store import SCHEMA_VERSION, Store

    cfg = load_site(args)
    if cfg.frontend.kind != "apache":
        raise base.CommandError(
            f"frontend.kind is {cfg.frontend.kind!r}: only the apache front end keeps a map file "
            "(the built-in one keeps its table in the service and rebuilds it at every start)", code=exit_codes.USAGE)
    store = Store(cfg.service.database_url)
    version = store.schema_version()
    if version != SCHEMA_VERSION:
        # Reading an old or missing schema would give a wrong map; creating one here would hide the mistake.
        raise base.CommandError(
            f"database {store.safe_url}: " + ("no pvhpc schema (is service.database right?)"
                                              if version is None else
                                              f"schema version {version}, not {SCHEMA_VERSION}: "
                                              "run 'pvhpc db upgrade' first"), code=exit_codes.FAILED)
    # The same table the running service keeps: the routable sessions of the store, nothing else.
    table = RouteTable(make_frontend(cfg).routable)
    table.reset(store.live())
    map_file = ProxyMapFile(cfg.frontend.map_file, cfg.frontend.map_group)
    before = map_file.read()
    try:
        map_file.write(table.targets())
    except (OSError, ProxyMapError) as e:
        raise base.CommandError(f"frontend.map_file {cfg.frontend.map_file}: {e}",
                                        code=exit_codes.FAILED) from None
    after = table.targets()
    stale = sorted(set(before) - set(after))
    missing = sorted(set(after) - set(before))
    data = {"map_file": str(cfg.frontend.map_file), "routes": len(after), "removed": len(stale), "added": len(missing)}
    base.emit(args, data, f"wrote {cfg.frontend.map_file}: {len(after)} routes "
                                  f"({len(missing)} added, {len(stale)} stale removed)")
    return exit_codes.OK


# -- db upgrade -----------------------------------------------------------------------------------------

@guarded
def cmd_db_upgrade(args) -> int:
    from pvhpc.db.store import SCHEMA_VERSION, SchemaError, Store

    cfg = load_site(args)
    store = Store(cfg.service.database_url)
    try:
        before = store.schema_version()
        store.open(upgrade=True)
    except SchemaError as e:
        raise base.CommandError(f"database: {e}", code=exit_codes.FAILED) from None
    after = store.schema_version()
    data = {"database": store.safe_url, "from": before, "to": after, "current": SCHEMA_VERSION}
    if before is None:
        text = f"{store.safe_url}: created at schema version {after}"
    elif before == after:
        text = f"{store.safe_url}: already at schema version {after}; nothing to do"
    else:
        text = f"{store.safe_url}: upgraded from schema version {before} to {after}"
    base.emit(args, data, text)
    return exit_codes.OK


# -- partitions, sessions (through the service) ---------------------------------------------------------

@base.run_guarded
def cmd_partitions(args) -> int:
    client, _ = base.make_client(args)
    answer = client.partitions()
    live = client.list(state="live", all_users=True)
    for p in answer["partitions"]:
        p["live_sessions"] = sum(1 for s in live if s.get("partition") == p["name"])
    if args.json:
        base.emit(args, answer, "")
        return exit_codes.OK
    rows = [("PARTITION", "STATE", "NODES IDLE/ALL", "GPUS FREE/ALL", "GPU TYPE", "GPUS/SESSION", "WALLTIME DEF/MAX",
             "SESSIONS")]
    for p in answer["partitions"]:
        now = p.get("now")
        wall = p["walltime_minutes"]
        rows.append((
            p["name"], "?" if now is None else ("up" if now["available"] else "DOWN"),
            "?" if now is None else f"{now['idle_nodes']}/{now['nodes']}",
            "?" if now is None else f"{now['gpus_free']}/{now['gpus_total']}",
            p.get("gpu_type") or "-", f"{p['gpus']['default']}..{p['gpus']['max']}",
            f"{wall['default']}/{wall['max']} min", str(p["live_sessions"]),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(session_format.shown("\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows),
                               lines=True))
    if answer.get("scheduler_error"):
        print("Slurm could not be asked, so what is free now is unknown: "
              f"{session_format.shown(answer['scheduler_error'])}", file=sys.stderr)
    return exit_codes.OK


@base.run_guarded
def cmd_sessions(args) -> int:
    client, _ = base.make_client(args)
    state = "" if args.state == "any" else args.state
    sessions = client.list(state=state, all_users=args.all)
    base.emit(args, {"sessions": sessions}, session_format.table(sessions, with_user=True))
    return exit_codes.OK


# -- the parsers ----------------------------------------------------------------------------------------

def _site_options(p) -> None:
    p.add_argument("--config", metavar="SITE_YAML",
                   help="the site config (default: the embedded defaults of 'pvhpc cluster start', as 'pvhpc serve')")
    p.add_argument("--json", action="store_true", help="print the result as JSON (see docs/cli.md)")


def register(sub) -> None:
    common = base.common_options()

    p = add_command(
        sub, "config", "staff: check the site config against the live cluster",
        "check: loads the site config (every key is checked on its own first; an error names the file and the "
        "key, exit 2), then asks Slurm whether what it names exists: each partition's Slurm partition, the GPU "
        "type (gres) on that partition's nodes and the GPUs a node has, walltime default and max against the "
        "partition's MaxTime, accounts and QoS in Slurm's accounting (when sacctmgr can reach slurmdbd; "
        "otherwise it says it cannot check them), and that each application's job script renders and Slurm "
        "would accept its job (sbatch --test-only: nothing is queued). Each finding names the config key to "
        "change.",
        [("pvhpc config check --config /etc/pvhpc/site.yaml", ""),
         ("pvhpc config check --config site.yaml --json | jq '.checks[] | select(.status==\"fail\")'",
          "only the problems")],
        environment=SITE_ENVIRONMENT,
        exit_notes="config check: 0 when nothing failed, 1 when a check failed, 2 when the file itself is wrong")
    p.add_argument("action", choices=("check",), help="check: validate against the live cluster")
    _site_options(p)
    p.set_defaults(func=cmd_config_check)

    p = add_command(
        sub, "doctor", "staff: check every moving part of a site and say what to fix",
        "Checks, in order: the database (reachable, schema current), the SSH login host (ssh: sites; its host "
        "key must be the one in ssh.known_hosts), munge (munge -n | unmunge on the socket slurm.conf's AuthInfo "
        "names), slurmctld (scontrol ping, then a query), ParaView on a compute node (a real probe job: "
        "ParaViewWeb server started, logged in to, one image rendered, job cancelled), the Apache map file "
        "(writable, mode and group Apache needs) and Apache's configuration (apache sites), and whether the "
        "service answers. Each failure comes with a fix line. On a healthy site it says 'healthy'.",
        [("pvhpc doctor --config /etc/pvhpc/site.yaml", "everything, including a probe job on the first partition"),
         ("pvhpc doctor --config site.yaml --probe-partition cpu", "probe a CPU node"),
         ("pvhpc doctor --config site.yaml --no-probe --apache-config /etc/apache2/sites-available/pvhpc.conf",
          "no probe job; test the Apache configuration too")],
        environment=SITE_ENVIRONMENT,
        exit_notes="doctor: 0 when healthy (warnings and skips allowed), 1 when a check failed")
    _site_options(p)
    p.add_argument("--probe-partition", metavar="NAME", help="run the ParaView probe job here (default: the "
                                                             "first partition of the config)")
    p.add_argument("--no-probe", action="store_true", help="do not run a probe job")
    p.add_argument("--probe-timeout", type=float, default=180, metavar="SECONDS",
                   help="how long the probe job may take to render (default 180)")
    p.add_argument("--apache-config", type=Path, metavar="FILE",
                   help="an Apache site file or standalone httpd.conf to test (apache front end)")
    p.set_defaults(func=cmd_doctor)

    p = add_command(
        sub, "map", "staff: rebuild the Apache front end's map file from the database",
        "rebuild: writes frontend.map_file anew from the live sessions in the database, exactly as the service "
        "does at start (atomically, mode 0640, group frontend.map_group): for a map file that was deleted, "
        "edited by hand or left stale while the service was down. Safe while the service runs: both write the "
        "same table. Only for frontend.kind apache.",
        [("pvhpc map rebuild --config /etc/pvhpc/site.yaml", "")],
        environment=SITE_ENVIRONMENT)
    p.add_argument("action", choices=("rebuild",), help="rebuild: write the map from the database")
    _site_options(p)
    p.set_defaults(func=cmd_map_rebuild)

    p = add_command(
        sub, "db", "staff: upgrade the database schema to this pvhpc's version",
        "upgrade: applies the schema migrations from the database's version to this pvhpc's, keeping every "
        "session and token (a new database is created at the current version). 'pvhpc serve' refuses to start "
        "on an older schema and says to run this. Back the database up first.",
        [("pvhpc db upgrade --config /etc/pvhpc/site.yaml", "")],
        environment=SITE_ENVIRONMENT)
    p.add_argument("action", choices=("upgrade",), help="upgrade: migrate the schema")
    _site_options(p)
    p.set_defaults(func=cmd_db_upgrade)

    p = add_command(
        sub, "partitions", "the site's partitions: capacity, what is free now, limits, live sessions",
        "Asks the service for each partition of the site: whether Slurm has it up, idle and total nodes, free "
        "and total GPUs (now), the GPU type, the GPUs and walltime a session may ask for, and how many live "
        "sessions run there (every user's for staff, your own for others).",
        [("pvhpc partitions", ""), ("pvhpc partitions --json | jq '.partitions[] | {name, now}'", "")],
        parents=[common])
    p.set_defaults(func=cmd_partitions)

    p = add_command(
        sub, "sessions", "staff: sessions of every user (with --all)",
        "Lists sessions with their users: live ones by default. With --all, staff (auth.staff) see every "
        "user's; anybody else sees only their own.",
        [("pvhpc sessions --all", "every user's live sessions"),
         ("pvhpc sessions --all --state any --json", "every session the service keeps, as JSON")],
        parents=[common])
    p.add_argument("--all", action="store_true", help="every user's sessions (staff)")
    p.add_argument("--state", default="live", help="live (default), any, or one state (queued, ready, ended, ...)")
    p.set_defaults(func=cmd_sessions)
