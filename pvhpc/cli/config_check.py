"""``pvhpc config check``: the site config against the live cluster, each finding named by its config key.

config.py already checked the file on its own (types, ranges, names); this
asks Slurm whether what the file names exists there: partitions, GPU types on
the partitions' nodes, time limits, accounts and QoS, and whether each
application's job script renders and Slurm would accept the job
(``sbatch --test-only``, which queues nothing), and whether jobs on the
partitions' nodes can reach ``service.callback_url`` (``callback_reach.py``:
a loopback URL with nodes elsewhere fails), and whether each environment module
the config names is one the module system here knows (``check_modules``).
"""

from __future__ import annotations

import os
import pwd
import shutil

from pvhpc.config import PartitionConfig, SiteConfig
from pvhpc.jobs import modules
from pvhpc.jobs.durations import format_minutes
from pvhpc.jobs.template import TemplateError
from pvhpc.scheduler.runners import CommandRunner, CommandUnavailable
from pvhpc.scheduler import PartitionInfo, Scheduler, SchedulerUnavailable
from pvhpc.scheduler.slurm_install import tool_path
from pvhpc.sessions.job import build_job
from pvhpc.sessions.modules import every_module, probe
from pvhpc.sessions.spec import SessionSpec
from pvhpc.cli import callback_reach
from pvhpc.cli.check_report import FAIL, OK, SKIP, WARN, Check


def partition_key(p: PartitionConfig) -> str:
    return f"partitions.{p.name}.slurm_partition" if p.slurm_partition != p.name else f"partitions.{p.name}"


def check_partition(p: PartitionConfig, info: PartitionInfo | None, slurm_names: list[str]) -> list[Check]:
    """Pure: one configured partition against what Slurm says about it."""
    key = f"partitions.{p.name}"
    if info is None:
        return [Check(partition_key(p), FAIL, f"Slurm has no partition {p.slurm_partition!r} "
                                               f"(it has: {', '.join(slurm_names) or 'none'})",
                      f"name an existing Slurm partition in {key}.slurm_partition, or create it in slurm.conf")]
    out = []
    if not info.available:
        out.append(Check(key, WARN, f"Slurm partition {info.name} is not UP: sessions will wait in the queue",
                         f"scontrol update PartitionName={info.name} State=UP"))
    have = ", ".join(f"gpu:{t}:{n}" if t else f"gpu:{n}" for t, n in sorted(info.gpu_types.items())) or "no GPUs"
    per_node = 0
    type_ok = not p.gpu_type or p.gpu_type in info.gpu_types
    if p.gpu_type:
        if not type_ok:
            out.append(Check(f"{key}.gpu_type", FAIL,
                             f"the nodes of Slurm partition {info.name} have no GPUs of type {p.gpu_type!r} "
                             f"(they have {have}); every GPU session would be refused",
                             f"set {key}.gpu_type to a type the nodes have, or add the gres to the nodes "
                             "(slurm.conf Gres= and gres.conf)"))
        else:
            per_node = info.gpu_types[p.gpu_type]
    else:
        per_node = max(info.gpu_types.values(), default=0)
    if p.gpus.max > 0 and type_ok:   # a wrong type is the one finding worth a line
        if per_node == 0:
            out.append(Check(f"{key}.gpus.max", FAIL, f"allows {p.gpus.max} GPUs but the nodes of {info.name} "
                                                      "have none", f"set {key}.gpus.max: 0 (a CPU partition)"))
        elif p.gpus.max > per_node:
            out.append(Check(f"{key}.gpus.max", FAIL,
                             f"allows {p.gpus.max} GPUs but a session runs on one node and the nodes of "
                             f"{info.name} have at most {per_node}", f"set {key}.gpus.max to {per_node} or less"))
    if info.max_time_minutes is not None:
        limit = format_minutes(info.max_time_minutes)
        for which, value in (("max", p.walltime.max), ("default", p.walltime.default)):
            if value > info.max_time_minutes:
                out.append(Check(f"{key}.walltime.{which}", FAIL,
                                 f"{format_minutes(value)} is over Slurm partition {info.name}'s MaxTime of {limit}: "
                                 "such sessions would wait in the queue for ever (PartitionTimeLimit)",
                                 f"set {key}.walltime.{which} to {limit} or less"))
    if not any(c.status == FAIL for c in out):
        out.append(Check(key, OK, f"Slurm partition {info.name}: {len(info.nodes)} nodes, {have}, MaxTime "
                                  f"{format_minutes(info.max_time_minutes) if info.max_time_minutes else 'none'}"))
    return out


async def _accounting_names(runner: CommandRunner, what: str, prefix=None) -> tuple[set[str] | None, str]:
    """Names Slurm's accounting knows (accounts or QoS), or None and why they cannot be known."""
    field = "Account" if what == "account" else "Name"
    try:
        result = await runner.run([tool_path(prefix, "sacctmgr"), "-n", "-P", "show", what, f"format={field}"],
                                  timeout=30)
    except CommandUnavailable as e:
        return None, str(e)
    if not result.ok:
        return None, result.describe()
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}, ""


async def check_accounting(cfg: SiteConfig, runner: CommandRunner) -> list[Check]:
    out = []
    for what, attr in (("account", "accounts"), ("qos", "qos")):
        used = [(p, i, name) for p in cfg.partitions.values() for i, name in enumerate(getattr(p, attr))]
        if not used:
            continue
        known, why = await _accounting_names(runner, what, cfg.scheduler.slurm_prefix)
        if known is None:
            out.append(Check(f"partitions.*.{attr}", SKIP, f"cannot check that the {attr} exist: sacctmgr could "
                                                           f"not list them ({why[:200]})",
                             "run this where sacctmgr reaches slurmdbd, or check by hand: "
                             f"sacctmgr show {what}"))
            continue
        for p, i, name in used:
            key = f"partitions.{p.name}.{attr}[{i}]"
            if name in known:
                out.append(Check(key, OK, f"{what} {name} exists"))
            else:
                out.append(Check(key, FAIL, f"Slurm's accounting has no {what} {name!r}",
                                 f"create it (sacctmgr add {what} {name}) or remove it from {key.rsplit('[', 1)[0]}"))
    return out


def _service_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


async def check_jobscripts(cfg: SiteConfig, scheduler: Scheduler, runner: CommandRunner | None,
                           tryable: set[str]) -> list[Check]:
    """Each application's job script renders for each of its partitions, and Slurm would take the job.

    Only partitions in ``tryable`` (the site's names of those that passed their own checks) are tried
    with sbatch: a partition already known to be wrong would only repeat its finding in Slurm's words.
    """
    out = []
    for app in cfg.applications.values():
        key = f"applications.{app.name}"
        if not os.path.isfile(app.server_script):
            out.append(Check(f"{key}.server_script", WARN, f"{app.server_script} is not a file on this host "
                                                             "(it must be one on the compute nodes)"))
        for pname in app.partitions:
            p = cfg.partitions[pname]
            spec = SessionSpec(app.name, pname, p.gpus.default, p.walltime.default, None, None,
                               str(app.data_roots[0]), None, version=app.default_version)
            try:
                job = build_job(cfg, spec, _service_user(), "config-check", "pvhpc-config-check", "x" * 32, "x" * 32)
            except (TemplateError, KeyError, OSError) as e:
                out.append(Check(f"{key}.jobscript", FAIL, f"the job script for partition {pname} does not render: "
                                                          f"{e}", f"fix {app.jobscript} or {key}.jobscript"))
                continue
            if runner is None or pname not in tryable or not hasattr(scheduler, "sbatch_argv"):
                out.append(Check(f"{key}.jobscript", OK, f"renders for partition {pname} (not tried with Slurm)"))
                continue
            argv = [tool_path(cfg.scheduler.slurm_prefix, "sbatch"), "--test-only", *scheduler.sbatch_argv(job)[1:]]
            try:
                result = await runner.run(argv, input=job.script, timeout=30)
            except CommandUnavailable as e:
                out.append(Check(f"{key}.jobscript", SKIP, f"renders for partition {pname}; sbatch could not run: {e}"))
                continue
            if result.ok:
                out.append(Check(f"{key}.jobscript", OK, f"renders, and Slurm would accept the job on partition "
                                                         f"{pname} (sbatch --test-only)"))
            else:
                out.append(Check(f"partitions.{pname}", FAIL,
                                 f"Slurm would refuse application {app.name}'s default job on partition {pname}: "
                                 f"{result.describe()}",
                                 f"check partitions.{pname} (gpu_type, gpus, cpus, memory_mb) against the nodes"))
    return out


def module_findings(named: dict[str, list[str]], found: modules.Probe, init: str) -> list[Check]:
    """Pure: what the probe found of each module, named by every key that names it."""
    if not found.system:
        return [Check("runtime.modules_init", FAIL,
                      f"no module system found here (none of {init.replace(':', ', ')} defines module), but the "
                      f"config names {len(named)} module{'s' if len(named) != 1 else ''} "
                      f"({', '.join(list(named)[:5])}{', ...' if len(named) > 5 else ''}): every session would "
                      "end start_failed", "install the module system (Debian: apt-get install lmod) or set "
                      "runtime.modules_init to its bash init (as on the compute nodes)")]
    out = []
    for name, keys in named.items():
        answer = found.found.get(name, "missing")
        for key in keys:
            if answer == "avail":
                out.append(Check(key, OK, f"module {name} is available ({found.system})"))
            elif answer == "spider":
                out.append(Check(key, WARN, f"module {name} is found by module spider only ({found.system}): it "
                                            "loads only after the modules it depends on",
                                 "name those first (a partition's modules load before the application's)"))
            else:
                out.append(Check(key, FAIL, f"module {name} does not exist here ({found.system}): its sessions "
                                            "are refused before submit",
                                 f"install it, add its directory to runtime.module_paths, or correct the name "
                                 f"(module spider {name.split('/')[0]})"))
    return out


async def check_modules(cfg: SiteConfig, runner: CommandRunner | None) -> list[Check]:
    """Each module the config names, asked of the module system where Slurm's commands run (the login host)."""
    named = every_module(cfg)
    if not named:
        return []
    if runner is None:
        return [Check("modules", SKIP, "environment modules cannot be checked without a command runner")]
    try:
        found = await probe(cfg, runner, list(named), timeout=60)
    except CommandUnavailable as e:
        return [Check("modules", SKIP, f"could not ask the module system: {e}"[:400],
                      "run this on a login node with bash and the module system")]
    return module_findings(named, found, modules.init_value(cfg.runtime.modules_init))


async def check_site(cfg: SiteConfig, scheduler: Scheduler, runner: CommandRunner | None) -> list[Check]:
    module_checks = await check_modules(cfg, runner)
    try:
        live = {p.name: p for p in await scheduler.partitions()}
    except SchedulerUnavailable as e:
        # What the config alone shows of the callback is still said (a loopback one: a warning).
        return [Check("scheduler", FAIL, f"cannot ask Slurm, so nothing could be checked against it: {e}",
                      "run 'pvhpc doctor' to find out why Slurm does not answer"),
                *module_checks,
                *await callback_reach.check_callbacks(cfg, scheduler, None, f"Slurm does not answer: {e}")]
    checks = [Check("scheduler", OK, f"Slurm answers ({len(live)} partitions: {', '.join(sorted(live))})"),
              *module_checks]
    tryable = set()
    for p in cfg.partitions.values():
        found = check_partition(p, live.get(p.slurm_partition), sorted(live))
        checks += found
        if not any(c.status == FAIL for c in found):
            tryable.add(p.name)
    if runner is not None:
        if shutil.which("sacctmgr") or cfg.ssh is not None:
            checks += await check_accounting(cfg, runner)
        elif any(p.accounts or p.qos for p in cfg.partitions.values()):
            checks.append(Check("partitions.*.accounts", SKIP, "cannot check accounts or QoS: sacctmgr is not "
                                                               "installed here"))
    checks += await check_jobscripts(cfg, scheduler, runner, tryable)
    checks += await callback_reach.check_callbacks(cfg, scheduler, live)
    return checks
