"""Every key of a site config, declared once: its check, its default and what it means.

The loader reads a file against ``SITE`` (in this order, so a computed default may use anything
declared before it), and ``python -m pvhpc.config.example`` writes ``docs/site.example.yaml`` from
it. Rules that tie keys together (a partition an application names must exist, SSH mode needs the
Slurm backend, ...) are code, in ``pvhpc/config/__init__.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pvhpc import paths, plugins
from pvhpc.config import checks
from pvhpc.config.checks import whole
from pvhpc.config.model import (ApplicationConfig, AppRuntime, AuthConfig, FrontendConfig, Limits, MetricsConfig,
                                PartitionConfig, RuntimeConfig, SchedulerConfig, ServiceConfig, SharingConfig,
                                SSHConfig)
from pvhpc.config.schema import Derived, Key, Named, RangeKey, Section
from pvhpc.jobs import command, modules, mpi

RENDER_MODES = ("xvfb", "egl", "osmesa")
EXTEND_WALLTIME = ("none", "operator", "sudo")
STATE = "pvhpc's state directory ($PVHPC_STATE_DIR, else /var/lib/pvhpc for root, ~/.local/share/pvhpc for others)"

DEFAULT_LISTEN = "127.0.0.1:8480"


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _public_url(ctx) -> str:
    host, port = ctx.values["listen"]
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


# pvhpc's own ParaViewWeb server (pvhpc/node/pvweb_server.py), as an application command like any other.
PVHPC_SERVER_COMMAND = ["${pvpython}", "${server_script}", "--host", "${host}", "--port", "${port}",
                        "--timeout", "${idle_timeout}", "--data", "${data_dir}", "--load", "${load_file}",
                        "--ready-file", "${port_file}"]
# What wslink 1.x and 2.x servers print once they listen (wslink's own launcher waits for it).
WSLINK_READY_LINE = "wslink: Starting factory"
# A desktop application's server (docs/desktop.md): pvhpc's websocket bridge to the session's pvserver
# (pvhpc/node/desktop_bridge.py, standard library only), which prints its port once it listens.
DESKTOP_BRIDGE_COMMAND = ["${python}", str(paths.PACKAGE_DIR / "node" / "desktop_bridge.py"), "--host", "${host}",
                          "--port", "${port}", "--timeout", "${idle_timeout}"]
DESKTOP_READY_LINE = r"pvhpc-bridge: listening on port (?P<port>\d+)"


def _command(ctx) -> list[str]:
    return DESKTOP_BRIDGE_COMMAND if ctx.values["desktop"] else PVHPC_SERVER_COMMAND


def _ready(ctx) -> dict:
    if ctx.values["desktop"] and tuple(ctx.values["command"]) == tuple(DESKTOP_BRIDGE_COMMAND):
        return {"line": DESKTOP_READY_LINE}
    if "port_file" in command.placeholders(ctx.values["command"]):
        return {"port_file": True}
    return {"line": WSLINK_READY_LINE}


def _session_url(ctx) -> str:
    kind = ctx.values["kind"]
    if kind == "direct":
        return "ws://{host}:{port}/ws"
    if kind == "builtin":
        # The built-in proxy answers on pvhpc's own address, whatever port that is.
        return "ws" + ctx.site["service"].public_url.removeprefix("http") + "/proxy?sessionId={id}&path=ws"
    return "ws://USE_HOST/proxy?sessionId={id}&path=ws"


SERVICE = Section("service", ServiceConfig, help="the pvhpc service itself", keys=(
    Key("listen", checks.listen_address, DEFAULT_LISTEN, "HOST:PORT the Tornado service binds",
        field=("listen_host", "listen_port")),
    Key("public_url", checks.http_url,
        Derived(_public_url, "http://HOST:PORT of listen, with 127.0.0.1 for 0.0.0.0 and ::"),
        "how browsers reach pvhpc (through the front end)", example="https://viz.example.org"),
    Key("callback_url", checks.urls, Derived(lambda ctx: [ctx.values["public_url"]], "public_url"),
        "how jobs on compute nodes reach pvhpc to report their port; with several instances on one database "
        "a list, tried in order", field="callback_urls", example=["http://login1:8480", "http://login2:8480"]),
    Key("database", checks.text, Derived(lambda ctx: f"sqlite:///{paths.state_dir() / 'pvhpc.sqlite'}",
                                         f"pvhpc.sqlite in {STATE}"),
        "any SQLAlchemy URL; instances sharing one PostgreSQL elect one scheduler poller (docs/scale-out.md)",
        field="database_url", example="postgresql+psycopg://pvhpc@db/pvhpc"),
    Key("job_output_dir", checks.path, Derived(lambda ctx: str(paths.state_dir() / "jobs"), f"jobs/ in {STATE}"),
        "where each session job's output (the server's log) goes", example="/var/lib/pvhpc/jobs"),
    Key("poll_interval", checks.seconds, 5, "seconds between the tracker's (single, batched) scheduler queries"),
    Key("launcher_wait", checks.seconds, 45, "seconds POST /paraview waits for a session to be ready before a 503"),
    Key("submit_grace", checks.seconds, 120, "seconds an unanswered sbatch is looked for by job name"),
    Key("frontend_socket", checks.absolute_path, None,
        "the Unix socket the front end (Apache, through mod_proxy's unix: URLs) connects to, mode 0660; the only "
        "channel on which auth.kind header believes the front end's user header (never on listen, which jobs "
        "and token-holding scripts use); needed by auth.kind header. Its directory must exist",
        example="/run/pvhpc/frontend.sock"),
    Key("frontend_socket_group", checks.any_text, None,
        "the group of frontend_socket: the front end's (Apache's workers'), so that no other local user can "
        "connect; pvhpc must be a member of it. Left out, pvhpc's own", example="www-data"),
    Key("allowed_origins", checks.origins, Derived(lambda ctx: [checks.origin_of(ctx.values["public_url"])],
                                                   "the origin of public_url"),
        "the web origins whose pages may change state (POST, DELETE) with a browser's login; a request from "
        "any other page is refused (no cross-site requests). Token-authenticated scripts are not affected",
        example=["https://viz.example.org"]),
    Key("walltime_warnings", checks.each(checks.seconds), [600, 120],
        "seconds before a ready session's walltime at which its user is warned (the page's banner and quick "
        "view, the push channel, pvhpc wait); [] warns never"),
    # Continuation (pvhpc/sessions/continuation.py; docs/web.md): a session goes on in a successor job.
    Key("continuation", checks.flag, False,
        "whether a session asked to continue (\"continue\": true) goes on in a successor job shortly before its "
        "walltime, keeping its id, URL and secret and starting from its saved ParaView state; a partition's own "
        "continuation overrides this"),
    Key("continue_max_total", checks.minutes, "24:00:00",
        "the most a continued session may run in all, its first job and every successor together, in minutes "
        "or [D-]HH:MM:SS: a successor that would take it past this is not submitted (the session then ends at "
        "its walltime, its state saved)"),
    Key("continue_lead", checks.seconds, None,
        "seconds before a continued session's walltime at which its successor job is submitted; left out, a "
        "quarter of the walltime, at least 30 s and at most 300 s", example=300),
))

SCHEDULER = Section("scheduler", SchedulerConfig, help="where sessions run", keys=(
    Key("backend", checks.plugin(plugins.SCHEDULERS, "slurm"), "slurm",
        f"an entry point of {plugins.SCHEDULERS}: slurm (Slurm's command-line tools) or pyslurm "
        "(needs a pyslurm built for this Slurm), or one a site's package adds"),
    Key("environment", checks.environment, {},
        "variables for the scheduler's commands, e.g. {SLURM_CONF: /etc/slurm/slurm.conf}"),
    Key("command_timeout", checks.seconds, 30, "seconds; a command slower than this counts as \"could not ask\""),
    Key("slurm_prefix", checks.absolute_path, None,
        "where this site's Slurm is installed, when it is not on PATH (a build from source): its tools are run "
        "as PREFIX/bin/sbatch and so on, also through sudo and on an SSH login host, whose PATH is not pvhpc's. "
        "Without it pvhpc runs the tools it finds on PATH (Debian's in /usr/bin)", example="/opt/slurm-25.11"),
    Key("pyslurm_python", checks.absolute_path, None,
        "backend pyslurm: the python whose environment holds the pyslurm built for this Slurm (pyslurm X.Y "
        "works only with Slurm X.Y, and one environment holds one pyslurm; install.sh makes "
        "/opt/pvhpc/pyslurm-RELEASE/bin/python). Without it the pyslurm workers run under pvhpc's own python", example="/opt/pvhpc/pyslurm-25.11/bin/python"),
    Key("submit_as", checks.choice(("service", "user")), "service",
        "whose jobs they are: \"service\", the service account's; \"user\", submitted and cancelled as the "
        "session's user through sudo -n -u (backend slurm), their output readable only by that user"),
    Key("extend_helper", checks.absolute_path, "/usr/local/sbin/pvhpc-extend-job",
        "where staff installed pvhpc's helper deploy/pvhpc-extend-job (owned by root, run through sudo as root), "
        "which raises one pvhpc job's time limit and nothing else: used by partitions whose extend_walltime is "
        "sudo; the sudoers rule names the same path (docs/sudoers.pvhpc)"),
))

RUNTIME = Section("runtime", RuntimeConfig, help="what session jobs run on the compute nodes", keys=(
    Key("pvpython", checks.text, "/usr/bin/pvpython",
        "ParaView's pvpython on the compute nodes; a bare name (pvpython) is looked for on the PATH the session's "
        "environment modules set"),
    Key("helper_python", checks.text, "/usr/bin/python3", "the python3 that runs pvhpc's job helper on the nodes"),
    Key("pythonpath", checks.text,
        Derived(lambda ctx: str(paths.runtime_dir()), "pvhpc's runtime directory ($PVHPC_RUNTIME_DIR, else "
                                                      "/opt/pvhpc/pvweb-site for root, ~/.local/share/pvhpc/pvweb-site "
                                                      "for others)"),
        "where wslink 1.x lies for pvpython (pvhpc runtime install puts it there)", example="/opt/pvhpc/pvweb-site"),
    Key("job_helper", checks.text, Derived(lambda ctx: str(paths.JOB_HELPER), "pvhpc/node/jobhelper.py in the "
                                                                          "installed package"),
        "pvhpc's node-side helper that reports the server's port; it must be readable by every user's jobs"),
    Key("server_listen", checks.listen_on, "node",
        "where a session's server listens on its node (${host} in an application's command): \"node\", the node's "
        "address on its route to service.callback_url, which the job reports and pvhpc checks against Slurm's view "
        "of the node, and the front end and tunnels dial; \"any\", every interface (0.0.0.0: other hosts' users can "
        "then reach the port too), the job reporting that address all the same; or one address"),
    # The node's watchdog (pvhpc/node/watchdog.py): a job Slurm could not end (its node was cut off) ends itself.
    Key("watchdog_interval", whole(0, 3600), 15,
        "seconds between a session's job asking pvhpc (at service.callback_url) whether its session is still live; "
        "when pvhpc says it has ended, the job stops its server and ends, even where Slurm could not reach the "
        "node to end it. 0: jobs never ask"),
    # An hour: a pvhpc away for an upgrade, a database migration or its host's reboot ends no session (Slurm keeps
    # the jobs all the while), and a node cut off for good, whose session pvhpc ended after Slurm's
    # SlurmdTimeout, still stops its server within a bound.
    Key("watchdog_grace", whole(0, 7 * 86400), 3600,
        "seconds a session's job may fail to reach pvhpc before it stops its server and ends (pvhpc has ended "
        "the session by then if the node was cut off); failed asks shorter than this never end a session. "
        "0: never end for that. At least 3 times watchdog_interval"),
    # Environment modules (pvhpc/jobs/modules.py; docs/applications.md): the job sources the module system itself.
    Key("modules_init", modules.check_path, None,
        "the module system's bash init that session jobs source before loading modules (jobs run with "
        f"--export=NONE in a non-login bash, where no module command is defined); left out, the first of {modules.INIT_HELP} "
        "that defines module", example="/etc/profile.d/lmod.sh"),
    Key("module_paths", modules.check_paths, [],
        "directories of modulefiles added to the module system's search path (module use) before any module is "
        "loaded or looked for", example=["/opt/site/modulefiles"]),
))

PARTITIONS = Named(
    "partitions", PartitionConfig,
    help="what users may choose; each key under partitions: is a name users see",
    needed="at least one partition is needed",
    examples={
        "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2},
                "walltime": {"default": "1:00:00", "max": "8:00:00"}, "description": "GPU nodes"},
        "cpu": {"render": "osmesa", "walltime": {"default": 60, "max": 480},
                "description": "CPU nodes, software rendering"},
    },
    keys=(
        Key("slurm_partition", checks.name, Derived(lambda ctx: ctx.name, "the name users see"),
            "Slurm's name for the partition, if different", example="gpu-a100"),
        Key("render", checks.choice(RENDER_MODES), "xvfb",
            "xvfb (ParaView built for GLX: a private X server per job), egl or osmesa (offscreen builds)"),
        Key("gpu_type", checks.name, None, "the GPUs' gres type; leave out for a CPU partition", example="a100"),
        RangeKey("gpus", whole(0, 64),
                 Derived(lambda ctx: {"default": 1, "max": 1} if ctx.values["gpu_type"] else {"default": 0, "max": 0},
                         "{default: 1, max: 1} with a gpu_type, else {default: 0, max: 0}"),
                 "GPUs per session, {default: N, max: M} (a bare number is both)", example={"default": 1, "max": 2}),
        RangeKey("walltime", checks.minutes, {"default": 60, "max": 480},
                 "a session's time limit, {default: ..., max: ...} in minutes or [D-]HH:MM:SS (a bare value is both)"),
        Key("cpus", whole(1, 1024), 1, "CPUs per session job"),
        Key("memory_mb", whole(64, 64 * 1024 * 1024), None,
            "memory per session job, in MB; left out, Slurm's default", example=8000),
        Key("accounts", checks.names, [], "Slurm accounts; if set, users choose one of these and nothing else"),
        Key("qos", checks.names, [], "Slurm QoS; if set, users choose one of these and nothing else"),
        Key("description", checks.free_text, "", "what users read about the partition"),
        # Parallel sessions (docs/parallel.md): a ParaView server of several MPI ranks over several nodes.
        Key("max_ranks", whole(0, 1000000), 0, "the most MPI ranks of a session's ParaView server; 0: this "
                                               "partition runs no parallel sessions", example=8),
        Key("max_nodes", whole(1, 100000), 1, "the most nodes a parallel session spans", example=2),
        Key("max_ranks_per_node", whole(1, 100000), None,
            "the most ranks of a parallel session on one node; left out, no limit but max_ranks", example=4),
        Key("ranks_divisible_by_nodes", checks.flag, True,
            "a parallel session's ranks must be a multiple of its nodes (the same number on every node)"),
        Key("modules", modules.check_modules, [],
            "environment modules (Lmod or Environment Modules) every session on this partition loads first, before "
            "its application's", example=["cuda/12.2"]),
        Key("continuation", checks.flag, None,
            "whether sessions on this partition may continue in a successor job; left out, "
            "service.continuation says", example=True),
        # More time for a running session (docs/web.md, docs/security.md): off unless staff say how.
        Key("extend_walltime", checks.choice(EXTEND_WALLTIME), "none",
            "how pvhpc may raise a running session's walltime (its job's TimeLimit) when its user asks for more "
            "time: none (never), operator (pvhpc's account is a Slurm operator or administrator and runs scontrol "
            "update itself), sudo (through the fixed helper scheduler.extend_helper that docs/sudoers.pvhpc lets "
            "it run as root)"),
        Key("extend_walltime_max", checks.minutes,
            Derived(lambda ctx: ctx.values["walltime"].max, "walltime's max"),
            "the most a session's whole walltime may come to with more time, in minutes or [D-]HH:MM:SS; asked "
            "before Slurm is", example="12:00:00"),
    ))

APPLICATIONS = Named(
    "applications", ApplicationConfig,
    help="what a session runs; each key under applications: is a name clients ask for",
    needed="at least one application is needed",
    examples={
        "paraview": {"data_roots": ["/tmp"], "partitions": ["gpu", "cpu"], "default_partition": "gpu",
                     "description": "ParaView"},
    },
    keys=(
        Key("jobscript", checks.jobscript, "paraview-web.sh",
            "a job script template in pvhpc's share/jobscripts/ (jobscripts/ in a checkout), or an absolute path"),
        Key("server_script", checks.path, Derived(lambda ctx: str(paths.SERVER_SCRIPT),
                                                  "pvhpc/node/pvweb_server.py in the installed package"),
            "the ParaViewWeb server application the job runs under pvpython", example="/opt/site/my_pvw_app.py"),
        Key("desktop", checks.flag, False,
            "the session is a bare ParaView server for ParaView's desktop client (pvhpc connect, docs/desktop.md): "
            "the job runs the application's pvserver (required; over MPI ranks where the partition allows) and "
            "pvhpc's websocket bridge to it, which the front ends carry as they carry any session; the session "
            "ends completed when the desktop client disconnects"),
        Key("command", command.check_command,
            Derived(_command, "pvhpc's own server; for a desktop application pvhpc's bridge to its pvserver"),
            "the server's command line, one item per argument (never through a shell), as the wslink launcher's "
            f"cmd; placeholders are written ${{name}}: {command.HELP}. An item that is only a placeholder whose "
            "value is empty (no load_file) is left out, with the option right before it (--load ${load_file})",
            example=["${pvpython}", "/opt/site/app.py", "--port", "${port}", "--authKey", "${secret}"]),
        Key("ready", checks.ready_rule, Derived(_ready, "{port_file: true} when the command has ${port_file}, "
                                                        f"else {{line: '{WSLINK_READY_LINE}'}}; the bridge's "
                                                        "own line for a desktop application's default command"),
            f"how pvhpc's supervisor on the node sees the server listen: {checks.READY_FORMS}; a (?P<port>\\d+) "
            "group in the line takes the port from it. Without a port reported, ${port} is a free port the "
            "launcher picks", example={"line": "App running at"}),
        Key("runtime", checks.app_runtime,
            Derived(lambda ctx: AppRuntime(pythonpath=(ctx.site["runtime"].pythonpath,), venv=None),
                    "{pythonpath: [runtime.pythonpath]} (wslink 1.x)"),
            "what the server imports: {pythonpath: [DIR, ...]} or {venv: DIR} (its bin/ goes first on PATH, "
            "${python} is its python). Keep servers that need different wslinks apart: ParaViewWeb 1.x clients "
            "(the Visualizer) need wslink 1.x, trame brings wslink 2.x", example={"venv": "/opt/site/trame-venv"}),
        Key("render", checks.choice(RENDER_MODES), None,
            "how the server renders, overriding the partition's render (xvfb, egl, osmesa); left out, the "
            "partition's", example="xvfb"),
        Key("data_roots", checks.directories, Derived(lambda ctx: [str(Path.home())], "the service user's home"),
            "the existing directories users may open files from", example=["/scratch", "/home"]),
        Key("partitions", checks.names, Derived(lambda ctx: list(ctx.site["partitions"]), "every partition"),
            "the partitions this application may run on", example=["gpu"]),
        Key("default_partition", checks.name,
            Derived(lambda ctx: ctx.values["partitions"][0] if ctx.values["partitions"] else None,
                    "the first of partitions"),
            "the partition a request that names none gets", example="gpu"),
        Key("start_timeout", whole(5, 86400), 300,
            "seconds from job start to the server's report, else the job is cancelled"),
        Key("idle_timeout", whole(10, 7 * 86400), 900, "seconds a server waits without clients before it exits"),
        Key("input_idle_timeout", whole(0, 7 * 86400), 0,
            "seconds without user input (a client's RPCs other than image requests: mouse, view and proxy "
            "changes) after which the server saves its state and stops, ending the session as idle even with a "
            "tab still open on it; 0: never"),
        Key("input_idle_warning", whole(1, 86400), 120,
            "with input_idle_timeout: seconds before that end at which the user is warned (push channel, page)"),
        Key("description", checks.free_text, "", "what users read about the application"),
        Key("web_client", checks.web_client, None,
            "a directory of static files (with index.html) the front end serves at /apps/<name>/: the "
            "application's web client; left out, it has none of its own", example="/opt/site/my-client/dist"),
        Key("pvserver", mpi.check_pvserver, None,
            "parallel sessions: ParaView's pvserver built with the site's MPI and its options, run as the "
            "session's ranks; left out, the application runs no parallel sessions",
            example=["/usr/bin/pvserver", "--force-offscreen-rendering"]),
        Key("mpi_launcher", mpi.check_mpi_launcher, mpi.DEFAULT_MPI_LAUNCHER,
            "parallel sessions: what starts the ranks inside the job, before the pvserver argv (the mpiexec of the "
            "MPI ParaView was built with, or srun --mpi=...); placeholders "
            + ", ".join(f"${{{n}}}" for n in mpi.LAUNCHER_PLACEHOLDERS), example=["srun", "--mpi=pmix", "-n",
                                                                                  "${ranks}"]),
        Key("pvserver_connect", mpi.check_connect,
            Derived(lambda ctx: mpi.PVHPC_SERVER_CONNECT if tuple(ctx.values["command"]) == tuple(
                PVHPC_SERVER_COMMAND) else mpi.WSLINK_APP_CONNECT,
                " ".join(mpi.PVHPC_SERVER_CONNECT) + " for pvhpc's own server, else "
                + " ".join(mpi.WSLINK_APP_CONNECT)),
            "parallel sessions: the arguments added to the command that attach the web server to the session's "
            "pvserver, filled in on the node: " + ", ".join(f"${{{n}}}" for n in mpi.CONNECT_PLACEHOLDERS)),
        Key("serves_own_client", checks.flag, False,
            "the server serves its own web client over HTTP on its port (trame does): the front end proxies "
            "/session/<id>/ to it"),
        Key("saved_states", checks.flag,
            Derived(lambda ctx: bool(ctx.values["command"]) and ctx.values["command"][0] == "${pvpython}",
                    "true when the command runs ${pvpython}"),
            "the server saves its ParaView state when its job is ended (walltime, cancel, idle) and a session can "
            "start from a saved one: pvhpc does both inside a pvpython server's own process (docs/trame.md); "
            "false for a server that is not pvpython, whose requests naming a state are then refused"),
        Key("modules", modules.check_modules, [],
            "environment modules the job loads before its server starts (before Xvfb too), after the partition's; "
            "a module that does not load ends the session start_failed with the module system's words",
            example=["paraview/5.11-egl"]),
        Key("versions", modules.check_versions, Derived(lambda ctx: {}, "none: the application has no versions"),
            "the versions users choose from (request field version, pvhpc submit --app-version), each the modules "
            "it loads after the application's: {VERSION: [MODULE, ...]}; quote a version YAML would read as a "
            "number (\"5.11\")", example={"5.11": ["paraview/5.11"], "5.11-egl": ["paraview/5.11-egl"]}),
        Key("default_version", checks.name,
            Derived(lambda ctx: next(iter(ctx.values["versions"]), None), "the first of versions"),
            "the version a request that names none gets", example="5.11"),
    ))

LIMITS = Section("limits", Limits, help="per user", keys=(
    Key("sessions_per_user", whole(1, 10000), 4, "live sessions a user may have at once"),
    Key("gpus_per_user", whole(0, 100000), 8, "GPUs a user's live sessions may hold together"),
    Key("max_body_bytes", whole(1024, 16 * 1024 * 1024), 64 * 1024, "the largest request body accepted, in bytes"),
    Key("requests_per_minute", whole(1, 1000000), 600, "API requests a user may make per minute"),
    # What a user holds open, counted per service instance (as requests_per_minute): one user must not starve the
    # front end's workers or the service. One more than these is answered 429, naming the key.
    Key("event_streams_per_user", whole(1, 10000), 8,
        "server-sent event streams (GET /api/v1/sessions/<id>/events: a page's tab, a pvhpc wait) a user may hold "
        "open at once; each holds a front-end worker while it lasts"),
    Key("event_stream_seconds", whole(5, 86400), 600,
        "seconds an event stream lasts before the service ends it; clients reconnect (a browser's EventSource by "
        "itself, the pvhpc command too) and get the session's state anew"),
    Key("proxied_connections_per_user", whole(1, 100000), 32,
        "connections a user may hold at once through the built-in front end: websockets at /proxy and "
        "/session/<id>/, and HTTP requests under way at /session/<id>/"),
    Key("proxy_idle_timeout", whole(0, 7 * 86400), 900,
        "seconds a websocket through the built-in front end may carry nothing either way before it is closed "
        "(wslink's servers ping their clients every 30 s, so a live one never is); 0: never. Every websocket "
        "of a session is closed when the session ends (its walltime at the latest)"),
))

FRONTEND = Section("frontend", FrontendConfig, help="how clients reach a session's server", keys=(
    Key("kind", checks.plugin(plugins.FRONTENDS, "direct"), "direct",
        f"an entry point of {plugins.FRONTENDS}: direct (clients go to node:port), builtin (pvhpc proxies the "
        "websockets), apache (Apache proxies them through a RewriteMap pvhpc keeps), or one a site's package adds"),
    Key("session_url", checks.session_url,
        Derived(_session_url, "for kind direct ws://{host}:{port}/ws, for builtin public_url as ws(s) + "
                              "/proxy?sessionId={id}&path=ws, for apache ws://USE_HOST/proxy?sessionId={id}&path=ws"),
        "the URL clients get, with {id}, {host} and {port}; USE_HOST is left for the JS client to fill in",
        example="wss://USE_HOST/proxy?sessionId={id}&path=ws"),
    Key("map_file", checks.absolute_path,
        Derived(lambda ctx: str(paths.state_dir() / "apache" / "session-map.txt") if ctx.values["kind"] == "apache"
                else None, f"apache/session-map.txt in {STATE}"),
        "kind apache only: the RewriteMap file pvhpc keeps for Apache",
        example="/var/lib/pvhpc/apache/session-map.txt"),
    Key("map_group", checks.any_text, None, "kind apache only: the map file's group (Apache's); "
                                            "left out, pvhpc's own", example="www-data"),
    Key("session_origin", checks.origin, None,
        "the origin (a host name of its own) where sessions' own web content (/session/<id>/: trame apps, a "
        "site's own) is served, apart from pvhpc's pages and API; left out, that content is served on pvhpc's "
        "origin in a browser sandbox (Content-Security-Policy: sandbox; docs/security.md)",
        example="https://viz-sessions.example.net"),
))

AUTH = Section("auth", AuthConfig, help="who is asking", keys=(
    Key("kind", checks.plugin(plugins.AUTHENTICATORS, "local"), "local",
        f"an entry point of {plugins.AUTHENTICATORS}: local (everyone is user) or header (a trusted front end "
        "says who), or one a site's package adds"),
    Key("user", checks.name, Derived(lambda ctx: current_user(), "the user the service runs as"),
        "kind local: the one user everybody is", example="alice"),
    Key("header", checks.text, "X-Remote-User",
        "kind header: the header the front end names the user in; believed only over service.frontend_socket"),
    Key("staff", checks.names, [], "users who may see and end every session"),
    Key("users_trust_each_other", checks.flag, False,
        "with more than one user (any kind but local) and scheduler.submit_as service, every job runs as one "
        "account, so one user's ParaView (which runs Python from state files) can read another's session; "
        "pvhpc refuses to start so unless this says the users trust each other (docs/security.md)"),
))

METRICS = Section("metrics", MetricsConfig, help="GET /metrics for Prometheus (docs/deploy.md)", keys=(
    Key("token_file", checks.absolute_path, None,
        "a file only pvhpc's account may read (mode 0600) holding the token a scraper sends as "
        "Authorization: Bearer TOKEN; read at start. Left out, only staff (auth.staff) may read /metrics",
        example="/etc/pvhpc/metrics.token"),
))

SSH = Section("ssh", SSHConfig, optional=True,
              help="SSH mode (optional; docs/ssh.md): pvhpc off the cluster, Slurm's commands and session tunnels "
                   "through one login host", keys=(
    Key("host", checks.host, None, "the login host", required="the login host that runs the scheduler's commands",
        example="login1.example.org"),
    Key("port", whole(1, 65535), 22, "its SSH port"),
    Key("user", checks.name, Derived(lambda ctx: current_user(), "the user the service runs as"),
        "the user pvhpc logs in as", example="pvhpc"),
    Key("key_file", checks.absolute_path, None, "the private key pvhpc logs in with",
        required="the private key pvhpc logs in with", example="/etc/pvhpc/ssh/id_ed25519"),
    Key("known_hosts", checks.absolute_path,
        Derived(lambda ctx: str(Path.home() / ".ssh" / "known_hosts"), "~/.ssh/known_hosts of the service's user"),
        "the only host keys trusted; an unknown key is refused, never added", example="/etc/pvhpc/ssh/known_hosts"),
    Key("keepalive", checks.seconds, 15, "seconds between keep-alives on an idle connection"),
    Key("connect_timeout", checks.seconds, 10, "seconds to wait for the login host"),
))

SHARING = Section("sharing", SharingConfig, help="owners sharing their sessions with other users (docs/sharing.md)", keys=(
    Key("enabled", checks.flag, True,
        "whether a session's owner may share it with named users (view: sees the picture; control: drives it "
        "too). Turned off, no new grants are taken and those made before stop working within seconds"),
    Key("groups", checks.flag, False,
        "whether a Unix group (as the service host's group database says) may be named as a sharee: each of its "
        "members then sees the session"),
    Key("view_only", checks.flag, False,
        "only view grants: a sharee sees the picture and nobody but the owner drives a session"),
))

# In the order they are read, which is SiteConfig's.
SITE = (SERVICE, SCHEDULER, RUNTIME, PARTITIONS, APPLICATIONS, LIMITS, FRONTEND, AUTH, METRICS, SSH, SHARING)
