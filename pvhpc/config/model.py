"""What a loaded site config is: one frozen dataclass per section.

The fields carry no defaults: every default, limit and help text is declared once, beside its key,
in ``pvhpc/config/keys.py``; ``tests/test_config_declaration.py`` proves each field here has a
declared key and each key a field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Range:
    default: int
    max: int


@dataclass(frozen=True)
class PartitionConfig:
    name: str                    # the name users choose (and pvhpc's key)
    slurm_partition: str
    render: str
    gpu_type: str | None
    gpus: Range                  # GPUs per session; max 0 on a CPU partition
    walltime: Range              # minutes
    cpus: int
    memory_mb: int | None
    accounts: tuple[str, ...]    # empty: no --account is passed and none may be asked for
    qos: tuple[str, ...]
    description: str
    max_ranks: int               # parallel sessions (pvhpc/sessions/parallel_request.py); 0: none here
    max_nodes: int
    max_ranks_per_node: int | None
    ranks_divisible_by_nodes: bool
    modules: tuple[str, ...] = ()          # environment modules every session here loads first (pvhpc/jobs/modules.py)
    continuation: bool | None = None       # sessions here may continue in a successor job; None: the site's word
    # "More time" for a running session (pvhpc/sessions/more_time.py): how pvhpc may raise its job's TimeLimit
    # ("none", "operator", "sudo") and the most its walltime may come to, in minutes.
    extend_walltime: str = "none"
    extend_walltime_max: int = 480


@dataclass(frozen=True)
class ReadyRule:
    """How the supervisor on the node sees that an application's server is ready (one of the two)."""
    line: str | None             # a regex searched in each line of the server's output; (?P<port>...) gives the port
    port_file: bool              # the server writes its port into ${port_file}

    @property
    def reports_port(self) -> bool:
        """Whether the server says its port (then ${port} is 0 and the kernel picks it)."""
        return self.port_file or (self.line is not None and "port" in re.compile(self.line).groupindex)


@dataclass(frozen=True)
class AppRuntime:
    """What an application's server imports: its own PYTHONPATH, or a venv (never both)."""
    pythonpath: tuple[str, ...]
    venv: Path | None


@dataclass(frozen=True)
class ApplicationConfig:
    name: str
    jobscript: Path
    server_script: Path
    command: tuple[str, ...]     # the argv, with ${placeholders} (pvhpc/jobs/command.py)
    ready: ReadyRule
    runtime: AppRuntime
    render: str | None           # None: the partition's render mode
    data_roots: tuple[Path, ...]
    partitions: tuple[str, ...]
    default_partition: str
    start_timeout: int           # seconds from job start to the server's report
    idle_timeout: int            # seconds a server waits without clients before it exits
    input_idle_timeout: int      # seconds without user input before the server stops (idle); 0: never
    input_idle_warning: int      # seconds before that end at which the user is warned
    description: str
    # Static files the front end serves at /apps/<name>/ (holds index.html); None: the app has none of its own.
    web_client: Path | None
    # The server serves its own web client over HTTP on its port (trame): the front end proxies /session/<id>/ to it.
    serves_own_client: bool
    # The server saves a ParaView state when its job is ended and can start from one (pvpython servers).
    saved_states: bool
    # Parallel sessions: the pvserver argv (None: none for this application), what starts its ranks, and the
    # arguments that attach the web server to it.
    pvserver: tuple[str, ...] | None
    mpi_launcher: tuple[str, ...]
    pvserver_connect: tuple[str, ...]
    # For ParaView's desktop client: the session is the pvserver, reached through pvhpc's bridge (docs/desktop.md).
    desktop: bool = False
    # Environment modules the job loads (after the partition's), and the versions users choose from: each a list
    # of modules loaded after these (pvhpc/jobs/modules.py); default_version is None when there are none.
    modules: tuple[str, ...] = ()
    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_version: str | None = None


@dataclass(frozen=True)
class Limits:
    sessions_per_user: int
    gpus_per_user: int
    max_body_bytes: int
    requests_per_minute: int     # per user, over the APIs
    event_streams_per_user: int  # server-sent event streams open at once
    event_stream_seconds: int    # how long one lasts before the service ends it (clients reconnect)
    proxied_connections_per_user: int   # websockets and HTTP requests through the built-in front end at once
    proxy_idle_timeout: int      # seconds a proxied websocket may carry nothing; 0: never


@dataclass(frozen=True)
class ServiceConfig:
    listen_host: str
    listen_port: int
    public_url: str              # how browsers and jobs reach this service
    # How jobs reach the report endpoint (defaults to public_url). Several when instances share a database:
    # a job tries them in order, so its report gets through while any instance is up.
    callback_urls: tuple[str, ...]
    database_url: str
    job_output_dir: Path
    poll_interval: float
    launcher_wait: float         # how long POST /paraview waits for a session to be ready
    submit_grace: float          # how long an unanswered submission is looked for by name
    # The Unix socket the front end (Apache) connects to: the only channel a front end's user header is believed on.
    frontend_socket: Path | None
    frontend_socket_group: str | None   # its group (the front end's); None keeps pvhpc's own
    # Pages of these origins may change state with a browser's credentials (POST, DELETE): no cross-site requests.
    allowed_origins: tuple[str, ...]
    walltime_warnings: tuple[float, ...]   # seconds before the walltime at which the user is warned
    # Continuation (pvhpc/sessions/continuation.py): allowed site-wide (a partition may say otherwise), the total
    # minutes a continued session may run, and the seconds before the walltime its successor is submitted
    # (None: scaled to the walltime).
    continuation: bool = False
    continue_max_total: int = 24 * 60
    continue_lead: float | None = None


@dataclass(frozen=True)
class SchedulerConfig:
    backend: str
    environment: dict[str, str]
    command_timeout: float
    # "service": jobs are the service account's; "user": submitted (and cancelled) as the session's
    # user through sudo, their output written where only that user can read it.
    submit_as: str
    slurm_prefix: Path | None = None      # a Slurm not on PATH: its tools are PREFIX/bin/...
    pyslurm_python: Path | None = None    # the python with this Slurm's pyslurm (backend pyslurm)
    extend_helper: Path = Path("/usr/local/sbin/pvhpc-extend-job")   # partitions' extend_walltime: sudo


@dataclass(frozen=True)
class RuntimeConfig:
    pvpython: str
    helper_python: str
    pythonpath: str
    job_helper: str              # pvhpc's node-side helper; must be readable by every user's jobs
    server_listen: str           # "node", "any" or an address: where a session's server binds on its node
    watchdog_interval: int       # seconds between a job's asks whether its session is live; 0: never
    watchdog_grace: int          # seconds a job may fail to reach pvhpc before it ends itself; 0: never
    modules_init: str | None = None      # the module system's bash init on the nodes; None: the usual places
    module_paths: tuple[str, ...] = ()  # directories of modulefiles added (module use) before loading


@dataclass(frozen=True)
class FrontendConfig:
    kind: str
    session_url: str             # template with {id}, {host}, {port}; USE_HOST(NAME) is left for the JS client to fill in
    map_file: Path | None        # apache: the RewriteMap file pvhpc keeps (frontends/proxymap.py)
    map_group: str | None        # apache: the map file's group (Apache's), None keeps pvhpc's own
    session_origin: str | None   # where sessions' own web content is served, apart from pvhpc's (web/content.py)


@dataclass(frozen=True)
class AuthConfig:
    kind: str
    user: str                    # for 'local': the one user everybody is
    header: str                  # for 'header': the header the front end names the user in
    staff: tuple[str, ...]
    # Several users with jobs run as the service account can reach each other's sessions: only if they say so.
    users_trust_each_other: bool


@dataclass(frozen=True)
class MetricsConfig:
    token_file: Path | None      # the token a Prometheus scraper sends (Authorization: Bearer); None: staff only


@dataclass(frozen=True)
class SSHConfig:
    """SSH mode (pvhpc off the cluster): scheduler commands and session tunnels go through this login host."""
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path            # the only host keys trusted; an unknown key is refused, never added
    keepalive: float             # seconds between keep-alives on an idle connection
    connect_timeout: float


@dataclass(frozen=True)
class SharingConfig:
    """Whether owners may share their sessions with other users (pvhpc/sessions/sharing.py), and how far."""
    enabled: bool
    groups: bool                 # Unix groups may be named as sharees, not only users
    view_only: bool              # only "view" grants: nobody but the owner drives a session


@dataclass(frozen=True)
class SiteConfig:
    source: str
    service: ServiceConfig
    scheduler: SchedulerConfig
    runtime: RuntimeConfig
    partitions: dict[str, PartitionConfig]
    applications: dict[str, ApplicationConfig]
    limits: Limits
    frontend: FrontendConfig
    auth: AuthConfig
    metrics: MetricsConfig
    ssh: SSHConfig | None
    sharing: SharingConfig

    def served_applications(self) -> frozenset[str]:
        """The applications whose session server serves its own web client (``serves_own_client``)."""
        return frozenset(name for name, app in self.applications.items() if app.serves_own_client)

    def desktop_applications(self) -> frozenset[str]:
        """The applications whose sessions are for ParaView's desktop client (``desktop``: pvhpc connect)."""
        return frozenset(name for name, app in self.applications.items() if app.desktop)

    def web_clients(self) -> dict[str, Path]:
        """Application name -> the directory of its static web client (``web_client``), served at /apps/<name>/."""
        return {name: Path(app.web_client) for name, app in self.applications.items() if app.web_client}
