"""``pvhpc doctor``: every moving part a site has, each checked for real, each with what to do when it fails.

The order follows what depends on what: the SSH link (in SSH mode) carries
Slurm's commands, munge authenticates them, slurmctld answers them, and only a
working Slurm can run the ParaView probe job, which also calls each
``service.callback_url`` from its node, as a session's job reports (a URL the
nodes cannot reach fails, with the address to set instead). A part that cannot
be checked because an earlier one failed is reported as skipped, with that reason.
"""

from __future__ import annotations

import asyncio
import os
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from pvhpc.config import SiteConfig
from pvhpc.scheduler.runners import CommandRunner, CommandUnavailable
from pvhpc.scheduler import Scheduler, SchedulerUnavailable
from pvhpc.scheduler.slurm_install import TESTED_RELEASES, SlurmVersion, tool_path
from pvhpc.cli import callback_reach, unit_checks
from pvhpc.cli.check_report import FAIL, OK, SKIP, WARN, Check

DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"


def slurm_conf_path(cfg: SiteConfig) -> str:
    return cfg.scheduler.environment.get("SLURM_CONF") or os.environ.get("SLURM_CONF") or DEFAULT_SLURM_CONF


def slurm_conf_values(text: str) -> dict[str, str]:
    """The plain KEY=VALUE lines of a slurm.conf (first word of each line; keys lower-cased)."""
    values = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z]+)\s*=\s*(\S+)", line)
        if m and m.group(1).lower() not in values:
            values[m.group(1).lower()] = m.group(2)
    return values


def munge_socket(values: dict[str, str]) -> str | None:
    """The munge socket Slurm uses: AuthInfo=socket=PATH (among other comma-separated options)."""
    for option in values.get("authinfo", "").split(","):
        if option.startswith("socket="):
            return option[len("socket="):]
    return None


async def read_slurm_conf(cfg: SiteConfig, runner: CommandRunner) -> tuple[dict[str, str], Check | None]:
    path = slurm_conf_path(cfg)
    try:
        result = await runner.run(["cat", path], timeout=15)
    except CommandUnavailable as e:
        return {}, Check("slurm.conf", FAIL, f"cannot read {path}: {e}", "check scheduler.environment.SLURM_CONF")
    if not result.ok:
        return {}, Check("slurm.conf", FAIL, f"cannot read {path}: {result.describe()}",
                         "set scheduler.environment.SLURM_CONF to the cluster's slurm.conf")
    return slurm_conf_values(result.stdout), None


async def check_munge(runner: CommandRunner, socket: str | None) -> Check:
    where = ["-S", socket] if socket else []
    shown = f"socket {socket}" if socket else "the default socket"
    hint = (f"start munged{' with --socket=' + socket if socket else ''} (systemctl start munge; pvhpc's local "
            "cluster: pvhpc cluster start), and make sure every node has the same /etc/munge/munge.key")
    try:
        cred = await runner.run(["munge", "-n", *where], timeout=15)
        if not cred.ok:
            return Check("munge", FAIL, f"munge cannot make a credential on {shown}: {cred.describe()}", hint)
        back = await runner.run(["unmunge", *where], input=cred.stdout, timeout=15)
    except CommandUnavailable as e:
        return Check("munge", FAIL, str(e), "install Debian's munge package")
    if not back.ok or "STATUS:" not in back.stdout or "Success" not in back.stdout:
        return Check("munge", FAIL, f"unmunge refused munge's own credential on {shown}: {back.describe()}", hint)
    return Check("munge", OK, f"munge -n | unmunge works on {shown}")


async def check_slurmctld(runner: CommandRunner, scheduler: Scheduler, values: dict[str, str],
                          prefix=None) -> Check:
    host = values.get("slurmctldhost", "the controller host").split("(")[0]
    log = values.get("slurmctldlogfile")
    fix = (f"start slurmctld on {host} (systemctl start slurmctld; pvhpc's local cluster: pvhpc cluster start)"
           + (f", then read its log {log}" if log else ", then read its log (SlurmctldLogFile in slurm.conf)"))
    # 'scontrol ping' answers at once when the controller is down; sinfo would wait for its timeout first.
    try:
        ping = await runner.run([tool_path(prefix, "scontrol"), "ping"], timeout=30)
    except CommandUnavailable as e:
        return Check("slurmctld", FAIL, str(e), "install Slurm's client commands (Debian: slurm-client)")
    if "DOWN" in ping.stdout or not ping.ok:
        words = ping.stdout.strip().splitlines()[0] if ping.stdout.strip() else ping.describe()
        return Check("slurmctld", FAIL, f"slurmctld does not answer: {words}", fix)
    try:
        parts = await scheduler.partitions()
    except SchedulerUnavailable as e:
        return Check("slurmctld", FAIL, f"slurmctld answers a ping but not a query: {e}", fix)
    return Check("slurmctld", OK, f"slurmctld on {host} answers ({len(parts)} partitions: "
                                  f"{', '.join(p.name for p in parts)})")


async def check_release(scheduler: Scheduler) -> Check:
    """Which Slurm the backend found and speaks, and whether pvhpc's tests run on that release."""
    about = await scheduler.about()
    backend, slurm = about.get("backend", scheduler.name), str(about.get("slurm", ""))
    detail = ", ".join(f"{k} {v}" for k, v in about.items() if k not in ("backend", "slurm"))
    try:
        version = SlurmVersion.parse(slurm)
    except ValueError:
        return Check("slurm release", FAIL, f"backend {backend} cannot tell Slurm's release: {slurm or 'not said'}",
                     "check scheduler.slurm_prefix (where the site's Slurm tools are) and scheduler.environment")
    said = f"backend {backend} speaks Slurm {version}" + (f" ({detail})" if detail else "")
    if version.release not in TESTED_RELEASES:
        return Check("slurm release", WARN, f"{said}; pvhpc's tests run on Slurm {' and '.join(TESTED_RELEASES)}",
                     "run pvhpc's backend contract test against this release (docs/scheduler.md)")
    return Check("slurm release", OK, said)


def check_database(cfg: SiteConfig) -> Check:
    from pvhpc.db.store import SCHEMA_VERSION, Store

    try:
        store = Store(cfg.service.database_url)
        version = store.schema_version()
        where = store.safe_url
        store.engine.dispose()
    except Exception as e:   # any driver's error: a wrong URL, a server that refuses, a missing driver
        return Check("database", FAIL, f"cannot open service.database: {str(e).splitlines()[0][:300]}",
                     "check service.database (URL, server running, credentials)")
    if version is None:
        return Check("database", OK, f"{where}: no pvhpc schema yet; 'pvhpc serve' creates it")
    if version < SCHEMA_VERSION:
        return Check("database", FAIL, f"{where}: schema version {version}, this pvhpc needs {SCHEMA_VERSION}",
                     f"back it up, then: pvhpc db upgrade --config {cfg.source}")
    if version > SCHEMA_VERSION:
        return Check("database", FAIL, f"{where}: schema version {version} is newer than this pvhpc "
                                       f"({SCHEMA_VERSION})", "upgrade pvhpc")
    return Check("database", OK, f"{where}: schema version {version} (current)")


async def check_ssh(cfg: SiteConfig):
    """SSH mode: the login host's key is the known one and pvhpc can log in. Returns (check, link or None)."""
    from pvhpc.scheduler.ssh import HostKeyError, SSHError, SSHLink

    link = SSHLink.from_config(cfg.ssh)
    try:
        await link.check()
    except HostKeyError as e:
        link.close()
        return Check("ssh host key", FAIL, str(e), f"see ssh.known_hosts ({cfg.ssh.known_hosts})"), None
    except SSHError as e:
        link.close()
        return Check("ssh", FAIL, f"cannot log in to {link.name}: {e}",
                     f"check ssh.host, ssh.user and ssh.key_file ({cfg.ssh.key_file}); try: "
                     f"ssh -i {cfg.ssh.key_file} -p {cfg.ssh.port} {cfg.ssh.user}@{cfg.ssh.host} true"), None
    return Check("ssh", OK, f"{link.name}: host key matches {cfg.ssh.known_hosts}, login works"), link


async def check_node_runtime(cfg: SiteConfig, scheduler: Scheduler, partition: str, timeout: float) -> list[Check]:
    """The probe job: ParaView on a node of ``partition``, and each callback URL called from that node."""
    from pvhpc.cli.probe import PartitionProbe, ProbeFailed
    from pvhpc.scheduler import SubmitRefused
    from pvhpc.client.wslink import WslinkError

    name = f"ParaView on a {partition} node"
    fix = ("run 'pvhpc runtime check' on a compute node of the partition (pvpython, Xvfb, wslink); "
           "'pvhpc runtime install' puts wslink where runtime.pythonpath says")
    probe = PartitionProbe(cfg, scheduler, partition, timeout=timeout)
    try:
        result = await probe.run()
    except ProbeFailed as e:
        paraview = Check(name, FAIL, str(e)[:600], fix)
    except SubmitRefused as e:
        paraview = Check(name, FAIL, f"Slurm refused the probe job: {e}",
                         f"run: pvhpc config check --config {cfg.source}")
    except (SchedulerUnavailable, WslinkError, asyncio.TimeoutError, OSError) as e:
        paraview = Check(name, FAIL, f"the probe job's ParaView server did not render: {e or type(e).__name__}", fix)
    except Exception as e:   # e.g. the websocket handshake refused: still a finding, not a traceback
        paraview = Check(name, FAIL, f"the probe failed: {type(e).__name__}: {e}", fix)
    else:
        paraview = Check(name, OK, f"job {result.job_id} on {result.node} rendered a {len(result.image)}-byte image "
                                   f"{result.timings.get('first_image', 0):.1f} s after submission")
    return [paraview, *await check_callbacks_from_node(cfg, scheduler, probe.callbacks)]


def answers_here(url: str) -> str:
    """"" when pvhpc answers at ``url`` from this host, else why not."""
    try:
        with urllib.request.urlopen(url + "/api/v1/health", timeout=5) as r:
            r.read(65536)
        return ""
    except OSError as e:
        return str(getattr(e, "reason", e) or type(e).__name__)


async def check_callbacks_from_node(cfg: SiteConfig, scheduler: Scheduler,
                                    outcomes: dict[str, tuple[str, str]]) -> list[Check]:
    """What the probe job printed of each callback URL (``outcomes``: url -> (node, why not, or "")), with what
    to set when a node could not reach one."""
    urls = cfg.service.callback_urls
    out = []
    for i, url in enumerate(urls):
        key = callback_reach.callback_key(i, len(urls))
        if url not in outcomes:
            out.append(Check(key, SKIP, f"{url}: the probe job said nothing of it (it did not get that far: see "
                                        "the ParaView check)", "pvhpc config check judges it without a job"))
            continue
        node, error = outcomes[url]
        if not error:
            out.append(Check(key, OK, f"a job on {node} reached pvhpc at {url} (GET /api/v1/health)"))
            continue
        try:
            names = (await scheduler.node_addresses()).get(node, {node})
        except SchedulerUnavailable:
            names = {node}
        place = await asyncio.to_thread(callback_reach.place_of, node, names)
        suggestion, reason = callback_reach.suggested_url([place] if place.where == callback_reach.ELSEWHERE else [],
                                                          cfg.service.listen_port, urlsplit(url).scheme or "http")
        fix = f"set {key} to an address of this host that {node} reaches, e.g. {suggestion} ({reason})"
        if callback_reach.is_loopback_host(cfg.service.listen_host):
            fix += f", and service.listen to that address or 0.0.0.0:{cfg.service.listen_port}"
        here = await asyncio.to_thread(answers_here, url)
        if here:
            fix = (f"pvhpc does not answer at {url} from this host either ({here}): if it is not running, start it "
                   f"(pvhpc serve --config {cfg.source}) and run doctor again; else {fix}")
        out.append(Check(key, FAIL, f"the nodes cannot reach service.callback_url {url}: {error} (tried by the "
                                    f"probe job on {node}); sessions' jobs could not report", fix))
    return out


def check_map_file(cfg: SiteConfig) -> Check:
    from pvhpc.frontends.proxymap import MODE, ProxyMapError, ProxyMapFile, group_id

    fe = cfg.frontend
    try:
        ProxyMapFile(fe.map_file, fe.map_group).check()
    except ProxyMapError as e:
        key = "frontend.map_group" if e.about == "group" else "frontend.map_file"
        return Check(key, FAIL, str(e), f"fix {key}, or the directory's owner and mode")
    if fe.map_file.exists():
        st = fe.map_file.stat()
        mode = st.st_mode & 0o777
        gid = group_id(fe.map_group)
        if mode != MODE or (gid is not None and st.st_gid != gid):
            return Check("frontend.map_file", FAIL,
                         f"{fe.map_file} has mode {mode:o} and gid {st.st_gid}; Apache needs {MODE:o}"
                         + (f" and gid {gid} ({fe.map_group})" if gid is not None else ""),
                         f"pvhpc map rebuild --config {cfg.source} (writes it anew with the right mode and group)")
    return Check("frontend.map_file", OK, f"{fe.map_file}: writable here, mode {MODE:o}"
                                          + (f", group {fe.map_group}" if fe.map_group else ""))


def check_apache(config_file: Path | None) -> Check:
    from pvhpc.frontends import apacheconf

    if config_file is None:
        return Check("apache", SKIP, "no Apache configuration given to test",
                     "pass --apache-config FILE (the site file 'pvhpc apache render' wrote)")
    try:
        result = apacheconf.check(config_file)
    except OSError as e:
        return Check("apache", FAIL, f"cannot test {config_file}: {e}", "install apache2, or check the path")
    if result.ok:
        return Check("apache", OK, f"{config_file} passes Apache's configuration test")
    return Check("apache", FAIL, f"{config_file} fails Apache's configuration test: "
                                 f"{result.output.strip().splitlines()[-1] if result.output.strip() else ''}",
                 result.hint or f"pvhpc apache check {config_file}")


def check_service(cfg: SiteConfig) -> Check:
    url = cfg.service.public_url + "/api/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
    except OSError as e:
        return Check("service", WARN, f"pvhpc does not answer at {url}: {getattr(e, 'reason', e)}",
                     f"start it: pvhpc serve --config {cfg.source}")
    return Check("service", OK, f"pvhpc answers at {cfg.service.public_url}")


async def diagnose(cfg: SiteConfig, probe_partition: str | None, probe_timeout: float = 180,
                   apache_config: Path | None = None) -> list[Check]:
    from pvhpc.app import runner_for, scheduler_for

    checks = [check_database(cfg)]
    link = None
    if cfg.ssh is not None:
        ssh, link = await check_ssh(cfg)
        checks.append(ssh)
        if link is None:
            reason = "the login host cannot be used (see the ssh check above)"
            checks += [Check(name, SKIP, reason, "fix ssh first") for name in ("munge", "slurmctld", "ParaView on a node")]
    try:
        if cfg.ssh is None or link is not None:
            runner = runner_for(cfg, link)
            checks += await _cluster_checks(cfg, runner, scheduler_for(cfg, runner), probe_partition, probe_timeout)
    finally:
        if link is not None:
            link.close()
    if cfg.frontend.kind == "apache":
        checks.append(check_map_file(cfg))
        checks.append(check_apache(apache_config))
    checks += unit_checks.deployment_checks(cfg)   # what deploy/systemd's units assume of this host
    checks.append(check_service(cfg))
    return checks


async def _cluster_checks(cfg: SiteConfig, runner: CommandRunner, scheduler: Scheduler,
                          probe_partition: str | None, probe_timeout: float) -> list[Check]:
    checks = []
    values, problem = await read_slurm_conf(cfg, runner)
    if problem:
        checks.append(problem)
    checks.append(await check_munge(runner, munge_socket(values)))
    slurm = await check_slurmctld(runner, scheduler, values, cfg.scheduler.slurm_prefix)
    checks.append(slurm)
    checks.append(await check_release(scheduler))
    probe_name = f"ParaView on a {probe_partition} node" if probe_partition else "ParaView on a node"
    not_probed = "not called from a node: "
    if probe_partition is None:
        checks.append(Check(probe_name, SKIP, "--no-probe given"))
        checks += callback_reach.skipped(cfg, not_probed + "--no-probe given",
                                         "pvhpc config check judges it without a job")
    elif cfg.ssh is not None:
        checks.append(Check(probe_name, SKIP, "the probe reads its job's output on this host, which an SSH-mode "
                                              "pvhpc does not share with the nodes",
                            "run 'pvhpc doctor' on the login host with a config without ssh:"))
        checks += callback_reach.skipped(cfg, not_probed + "SSH mode runs no probe job")
    elif slurm.status != OK:
        checks.append(Check(probe_name, SKIP, "Slurm does not answer, so no job can run", "fix slurmctld first"))
        checks += callback_reach.skipped(cfg, not_probed + "Slurm does not answer", "fix slurmctld first")
    else:
        checks += await check_node_runtime(cfg, scheduler, probe_partition, probe_timeout)
    return checks
