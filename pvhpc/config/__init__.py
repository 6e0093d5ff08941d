"""Site configuration: what staff write once (YAML), loaded and validated before anything starts.

Every error names the file, the key (as a dotted path) and what is wrong, and
the service does not start. Unknown keys are errors too: a misspelt limit must
not silently fall back to a default.

Each key is declared once, in ``keys.py`` (check, default, help); ``schema.py`` reads a file
against those declarations, key by key. What ties keys together is checked here, after that:
the rules below. ``docs/site.example.yaml`` is written from the same declarations (``example.py``).

Without a file, ``embedded_defaults()`` describes the local cluster that
``pvhpc cluster start`` runs, so ``pvhpc serve`` works out of the box.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pvhpc import paths, plugins
from pvhpc.config import checks
from pvhpc.config.checks import NAME
from pvhpc.config.keys import DEFAULT_LISTEN, RENDER_MODES, SITE
from pvhpc.config.model import (ApplicationConfig, AuthConfig, FrontendConfig, Limits, PartitionConfig, Range,
                                RuntimeConfig, SchedulerConfig, ServiceConfig, SiteConfig, SSHConfig)
from pvhpc.config.schema import ConfigError, Reader
from pvhpc.jobs import command
from pvhpc.jobs.template import JOB_SCRIPT_VALUES, JobTemplate

__all__ = ["ApplicationConfig", "AuthConfig", "ConfigError", "FrontendConfig", "Limits", "NAME", "PartitionConfig",
           "RENDER_MODES", "Range", "RuntimeConfig", "SchedulerConfig", "ServiceConfig", "SiteConfig", "SSHConfig",
           "embedded_defaults", "load", "parse"]


# -- rules across keys, run on a section once its own keys are read ----------------------------

def _scheduler_rules(s: Reader, scheduler: SchedulerConfig, site: dict) -> None:
    if scheduler.submit_as == "user" and scheduler.backend != "slurm":
        raise s.error("submit_as", "'user' needs backend 'slurm' (pyslurm acts only as the service's own user)")


def _runtime_rules(r: Reader, runtime: RuntimeConfig, site: dict) -> None:
    # A few failed asks (a blip in the network, pvhpc restarting) must never end a live session.
    if runtime.watchdog_interval and runtime.watchdog_grace and runtime.watchdog_grace < 3 * runtime.watchdog_interval:
        raise r.error("watchdog_grace", f"must be 0 (never) or at least 3 times watchdog_interval "
                                        f"({3 * runtime.watchdog_interval} s), not {runtime.watchdog_grace}: a job "
                                        "would end its live session after a failed ask or two")


def _application_rules(s: Reader, app: ApplicationConfig, site: dict) -> None:
    partitions = site["partitions"]
    for i, p in enumerate(app.partitions):
        if p not in partitions:
            raise s.error(f"partitions[{i}]", f"{p!r} is not a partition of this site ({', '.join(partitions)})")
    if app.default_partition not in app.partitions:
        raise s.error("default_partition",
                      f"{app.default_partition or ''!r} is not among this application's partitions")
    if app.default_version is not None and app.default_version not in app.versions:
        offered = ", ".join(app.versions) or "none: this application has no versions"
        raise s.error("default_version", f"{app.default_version!r} is not one of versions ({offered})")
    _command_rules(s, app)


def _command_rules(s: Reader, app: ApplicationConfig) -> None:
    """The command, its ready rule and the job script must fit together, or no session could ever start."""
    used = command.placeholders(app.command)
    if app.ready.port_file and "port_file" not in used:
        raise s.error("ready.port_file", "can never be met: the command has no ${port_file} to pass the server "
                                         "the file to write its port into (add it, or use ready: {line: REGEX})")
    if not app.ready.reports_port and "port" not in used:
        raise s.error("ready", "the port the server listens on can never be known: the command has no ${port} "
                               "and the ready line no (?P<port>...) group (add one)")
    if app.pvserver is not None and "parallel" not in JobTemplate(app.jobscript).names:
        raise s.error("pvserver", f"{app.jobscript} cannot start a parallel session's ParaView server (it has no "
                                  "{{ parallel }}): use pvhpc's paraview-web.sh, or leave pvserver out")
    if app.desktop and app.pvserver is None:
        raise s.error("pvserver", "is needed for a desktop application: its session is that pvserver, which "
                                  "ParaView's desktop client connects to (e.g. [pvserver, --force-offscreen-rendering])")
    if app.desktop and (app.serves_own_client or app.web_client is not None):
        raise s.error("desktop", "a desktop application's session is for ParaView's desktop client: it has no web "
                                 "client (leave out web_client and serves_own_client)")
    if "web_client" in used and app.web_client is None:
        raise s.error("command", "uses ${web_client} but the application has no web_client")
    unknown = JobTemplate(app.jobscript).names - set(JOB_SCRIPT_VALUES)
    if unknown:
        raise s.error("jobscript", f"{app.jobscript} uses {', '.join(sorted(unknown))}, which pvhpc does not give "
                                   f"a job script (it gives: {', '.join(JOB_SCRIPT_VALUES)})")


def _frontend_rules(fe: Reader, frontend: FrontendConfig, site: dict) -> None:
    if frontend.session_origin is not None:
        _session_origin_rules(fe, frontend, site)
    if frontend.kind != "apache":
        for key in ("map_file", "map_group"):
            if fe.has(key):
                raise fe.error(key, f"is used only with kind: apache (this front end is {frontend.kind!r})")
    # What the chosen front end itself cannot work with (Apache's: a map file it cannot write), found now rather
    # than at the first session. One that cannot even be loaded says so when the service builds it.
    try:
        check = getattr(plugins.load(plugins.FRONTENDS, frontend.kind), "config_problem", None)
    except plugins.PluginError:
        check = None
    problem = check(frontend) if check else None
    if problem:
        raise fe.error(*problem)


def _session_origin_rules(fe: Reader, frontend: FrontendConfig, site: dict) -> None:
    if frontend.kind not in ("builtin", "apache"):
        raise fe.error("session_origin", f"is served by the builtin and apache front ends only (this front end "
                                         f"is {frontend.kind!r})")
    # Another port of the same host is no origin of its own where it matters: browsers send a host's cookies
    # to all its ports, and the front ends tell the two apart by host name.
    if site["service"].public_url.startswith("https:") and not frontend.session_origin.startswith("https:"):
        raise fe.error("session_origin", "must be https, as pvhpc's public_url is: its pages and their login "
                                         "travel there too")
    session_host = urlsplit(frontend.session_origin).hostname
    for own in (checks.origin_of(site["service"].public_url), *site["service"].allowed_origins):
        if urlsplit(own).hostname == session_host:
            raise fe.error("session_origin", f"must be a host name of its own: {session_host} is also pvhpc's "
                                             f"({own}), whose pages the sessions' content must not share")


def _ssh_rules(s: Reader, ssh: SSHConfig, site: dict) -> None:
    for key in ("key_file", "known_hosts"):
        path = getattr(ssh, key)
        if not os.access(path, os.R_OK) or not path.is_file():
            hint = f" (add the host's key with: ssh-keyscan {ssh.host} >> {path})" if key == "known_hosts" else ""
            raise s.error(key, f"{path} is not a readable file{hint}")
    backend = site["scheduler"].backend
    if backend != "slurm":
        raise s.error("host", f"SSH mode runs Slurm's command-line tools; scheduler.backend is {backend!r}")


def _auth_rules(a: Reader, auth: AuthConfig, site: dict) -> None:
    if a.has("trusted_proxies"):
        raise a.error("trusted_proxies", "is no longer read: any local account can connect from 127.0.0.1, so "
                                         "the user header is believed only over service.frontend_socket, a Unix "
                                         "socket only the front end's group may open; remove this key and set "
                                         "that one (docs/security.md)")
    if auth.kind == "header" and site["service"].frontend_socket is None:
        raise a.error("kind", "'header' believes the front end's user header only over a Unix socket no other "
                              "local user may open: set service.frontend_socket (and frontend_socket_group), and "
                              "point the front end at it (docs/apache.md)")
    if auth.kind != "local" and site["scheduler"].submit_as != "user" and not auth.users_trust_each_other:
        raise a.error("kind", f"{auth.kind!r} serves many users, and with scheduler.submit_as "
                              f"{site['scheduler'].submit_as!r} all their jobs run as one account, where one user's "
                              "ParaView (which runs Python from state files) can read another's session and its "
                              "secret; set scheduler.submit_as: user (docs/sudoers.pvhpc), or, only if every user "
                              "may see every other's sessions, auth.users_trust_each_other: true (docs/security.md)")


RULES = {"scheduler": _scheduler_rules, "runtime": _runtime_rules, "auth": _auth_rules, "applications": _application_rules,
         "frontend": _frontend_rules, "ssh": _ssh_rules}


def parse(data: Any, source: str = "<config>") -> SiteConfig:
    top = Reader(source, "", data, [section.name for section in SITE])
    site: dict[str, Any] = {}
    for section in SITE:
        if section.optional and not top.has(section.name):
            site[section.name] = None
            continue
        site[section.name] = section.read(top, site, RULES.get(section.name))
    top.finish()
    return SiteConfig(source=source, **site)


def load(path: str | os.PathLike) -> SiteConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source=str(path)) from None
    return parse(data, str(path))


def embedded_defaults(cluster_conf: Path | None = None, **service: Any) -> SiteConfig:
    """The site that ``pvhpc cluster start`` runs: partitions gpu (2 fake a100 per node) and cpu."""
    from pvhpc.localcluster.cluster import recorded_login_address, recorded_prefix

    conf = cluster_conf or paths.cluster_dir() / "etc" / "slurm.conf"
    login = recorded_login_address(conf)
    if login and "callback_url" not in service:
        # The nodes are hosts of their own: they reach pvhpc at the login side's address on their network, not at
        # this machine's loopback. The service listens there alone, not on every address: with the embedded
        # defaults whoever reaches it is its one local user.
        port = int(str(service.get("listen", DEFAULT_LISTEN)).rsplit(":", 1)[1])
        url = f"http://{login}:{port}"
        service = {**service, "listen": f"{login}:{port}", "public_url": service.get("public_url", url),
                   "callback_url": url}
    scheduler = {"environment": {"SLURM_CONF": str(conf)}}
    if recorded_prefix(conf):   # the Slurm the local cluster was started with (pvhpc cluster start --slurm)
        scheduler["slurm_prefix"] = recorded_prefix(conf)
    data = {
        "service": {"poll_interval": 2, **service},
        "scheduler": scheduler,
        # One point of entry: the service proxies the session websockets itself.
        "frontend": {"kind": "builtin"},
        "partitions": {
            "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 60, "max": 480},
                    "description": "GPU nodes (fake a100s on the local cluster)"},
            # Parallel sessions over both nodes: mpiexec starts its daemons through Slurm (docs/parallel.md).
            "cpu": {"walltime": {"default": 60, "max": 480}, "description": "CPU nodes, software rendering",
                    "max_nodes": 2, "max_ranks": 4, "max_ranks_per_node": 2},
        },
        "applications": {
            "paraview": {"description": "ParaView (pvpython web server)", "data_roots": [str(Path.home())],
                         "partitions": ["gpu", "cpu"], "pvserver": ["pvserver", "--force-offscreen-rendering"]},
            # ParaView's desktop client (pvhpc connect): a bare pvserver behind pvhpc's websocket bridge.
            "pvserver": {"description": "ParaView desktop client (pvserver)", "desktop": True,
                         "data_roots": [str(Path.home())], "partitions": ["cpu", "gpu"],
                         "pvserver": ["pvserver", "--force-offscreen-rendering"]},
            **visualizer_application([str(Path.home())]),
            **trame_application([str(Path.home())]),
        },
    }
    return parse(data, "<embedded defaults>")


def visualizer_application(data_roots: list[str]) -> dict:
    """The ParaView Visualizer, as ``pvhpc runtime install`` unpacks it from npm (pvw-visualizer), unmodified:
    its server takes the secret only from --authKey (pvhpc's argv wrapper gives it), has no ready file (it
    prints wslink's ready line) and cannot report a port it picked (the launcher picks one). Left out where it
    is not installed, so that ``pvhpc serve`` still starts there."""
    package = paths.web_clients_dir() / "pvw-visualizer"
    server, client = package / "server" / "pvw-visualizer.py", package / "dist"
    if not (server.is_file() and (client / "index.html").is_file()):
        return {}
    return {"visualizer": {
        "description": "ParaView Visualizer (pipeline, filters, colouring, time steps)",
        "command": ["${pvpython}", str(server), "--host", "${host}", "--port", "${port}", "--data", "${data_dir}",
                    "--load-file", "${load_file}", "--timeout", "${idle_timeout}", "--authKey", "${secret}"],
        "ready": {"line": "wslink: Starting factory"},
        "web_client": str(client),
        "data_roots": data_roots,
        # Parallel sessions where a partition allows them: attached to the ranks by --ds-host/--ds-port.
        "pvserver": ["pvserver", "--force-offscreen-rendering"],
    }}


def trame_application(data_roots: list[str]) -> dict:
    """pvhpc's trame application for ParaView (pvhpc/node/trame_app.py), with trame and its wslink 2.x from
    their own directory (``pvhpc runtime install``). It serves its own client at /session/<id>/; its secret
    reaches it through pvhpc's argv wrapper. trame's static client, where installed, is its page at
    /apps/trame/, which launches a session through the launcher API as trame's multi-user deployment does.
    Left out where trame is not installed."""
    from pvhpc import runtime

    trame = runtime.trame_dir(paths.runtime_dir())
    if not (trame / "trame" / "__init__.py").is_file():
        return {}
    client = paths.web_clients_dir() / runtime.TRAME_CLIENT_DIR
    return {"trame": {
        "description": "ParaView in trame (open, slice, contour, clip, colour, time steps, screenshot)",
        "command": ["${pvpython}", str(paths.PACKAGE_DIR / "node" / "trame_app.py"), "--server", "--host", "${host}",
                    "--port", "${port}", "--data", "${data_dir}", "--load", "${load_file}",
                    "--timeout", "${idle_timeout}", "--authKey", "${secret}"],
        "ready": {"line": "App running at"},
        "runtime": {"pythonpath": [str(trame)]},
        "serves_own_client": True,
        **({"web_client": str(client)} if (client / "index.html").is_file() else {}),
        "data_roots": data_roots,
        # Parallel sessions where a partition allows them: attached to the ranks by --ds-host/--ds-port.
        "pvserver": ["pvserver", "--force-offscreen-rendering"],
    }}
