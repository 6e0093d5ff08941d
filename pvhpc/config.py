"""Site configuration: what staff write once (YAML), loaded and validated before anything starts.

Every error names the file, the key (as a dotted path) and what is wrong, and
the service does not start. Unknown keys are errors too: a misspelt limit must
not silently fall back to a default.

Without a file, ``embedded_defaults()`` describes the local cluster that
``pvhpc cluster start`` runs, so ``pvhpc serve`` works out of the box.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from pvhpc import paths
from pvhpc.sessions.durations import parse_minutes
from pvhpc.paths import JOB_HELPER, JOBSCRIPTS_DIR, SERVER_SCRIPT
from pvhpc.sessions.jobscript import JobTemplate, TemplateError, find_template

RENDER_MODES = ("xvfb", "egl", "osmesa")
FRONTENDS = ("direct", "builtin", "apache")
AUTHENTICATORS = ("local", "header")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


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


@dataclass(frozen=True)
class ApplicationConfig:
    name: str
    jobscript: Path
    server_script: Path
    data_roots: tuple[Path, ...]
    partitions: tuple[str, ...]
    default_partition: str
    start_timeout: int           # seconds from job start to the server's report
    idle_timeout: int            # seconds a server waits without clients before it exits
    description: str


@dataclass(frozen=True)
class Limits:
    sessions_per_user: int
    gpus_per_user: int
    max_body_bytes: int
    requests_per_minute: int = 600    # per user, over the APIs


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


@dataclass(frozen=True)
class SchedulerConfig:
    backend: str
    environment: dict[str, str]
    command_timeout: float
    # "service": jobs are the service account's; "user": submitted (and cancelled) as the session's
    # user through sudo, their output written where only that user can read it.
    submit_as: str = "service"


@dataclass(frozen=True)
class RuntimeConfig:
    pvpython: str
    helper_python: str
    pythonpath: str
    job_helper: str              # pvhpc's node-side helper; must be readable by every user's jobs


@dataclass(frozen=True)
class FrontendConfig:
    kind: str
    session_url: str             # template with {id}, {host}, {port}; USE_HOST(NAME) is left for the JS client to fill in
    map_file: Path | None = None  # apache: the RewriteMap file pvhpc keeps (frontends/proxymap.py)
    map_group: str | None = None  # apache: the map file's group (Apache's), None keeps pvhpc's own


@dataclass(frozen=True)
class AuthConfig:
    kind: str
    user: str                    # for 'local': the one user everybody is
    header: str                  # for 'header': the trusted header
    trusted_proxies: tuple[str, ...]
    staff: tuple[str, ...]


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
    ssh: SSHConfig | None = None

    def template(self, app: ApplicationConfig) -> JobTemplate:
        return JobTemplate(app.jobscript)


# -- a small reader that remembers where each value came from ---------------

class _Section:
    def __init__(self, source: str, path: str, data: Any):
        self.source, self.path = source, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, path or "(top level)", f"must be a mapping, not {type(data).__name__}")
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), message)

    def get(self, name: str, default: Any, kind: Callable[[Any], Any] | None = None) -> Any:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = self.data[name]
        if kind is None:
            return value
        try:
            return kind(value)
        except (ValueError, TypeError) as e:
            raise self.error(name, str(e)) from None

    def section(self, name: str) -> "_Section":
        self.used.add(name)
        return _Section(self.source, self.key(name), self.data.get(name))

    def finish(self) -> None:
        for name in self.data:
            if name not in self.used:
                hint = difflib.get_close_matches(str(name), sorted(self.used), n=1)
                raise self.error(str(name), "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    if "\0" in value or "\n" in value:
        raise ValueError("must be one line without NUL bytes")
    return value


def _urls(value: Any) -> tuple[str, ...]:
    """One http(s) URL, or a list of them."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must name at least one URL")
    urls = []
    for item in values:
        item = _text(item)
        if not re.match(r"^https?://[^/\s]+\S*$", item):
            raise ValueError(f"{item!r} is not an http(s) URL")
        urls.append(item.rstrip("/"))
    return tuple(urls)


def _name(value: Any) -> str:
    value = _text(value)
    if not NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; at most 64)")
    return value


def _int(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value
    return check


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value > 86400 * 7:
        raise ValueError(f"must be a number of seconds above 0, not {value!r}")
    return float(value)


def _minutes(value: Any) -> int:
    minutes = parse_minutes(value)
    if minutes is None or minutes <= 0:
        raise ValueError(f"must be a positive walltime, not {value!r}")
    return minutes


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a list of names, not {value!r}")
    return tuple(_name(v) for v in value)


def _nonempty_list(value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list, not {value!r}")
    return value


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, not {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
        return value
    return check


def _range(section: _Section, name: str, default: Range, kind: Callable[[Any], int]) -> Range:
    raw = section.data.get(name)
    if raw is not None and not isinstance(raw, dict):
        # A bare value is the maximum and the default at once.
        value = section.get(name, None, kind)
        return Range(value, value)
    sub = section.section(name)
    maximum = sub.get("max", default.max, kind)
    value = sub.get("default", min(default.default, maximum), kind)
    sub.finish()
    if value > maximum:
        raise sub.error("default", f"{value} is over max ({maximum})")
    return Range(value, maximum)


# -- the sections --------------------------------------------------------------

def _partition(parent: _Section, name: str) -> PartitionConfig:
    s = parent.section(name)
    try:
        _name(name)
    except ValueError as e:
        raise parent.error(name, str(e)) from None
    gpu_type = s.get("gpu_type", None, _name)
    gpus = _range(s, "gpus", Range(1 if gpu_type else 0, 1 if gpu_type else 0), _int(0, 64))
    p = PartitionConfig(
        name=name,
        slurm_partition=s.get("slurm_partition", name, _name),
        render=s.get("render", "xvfb", _choice(RENDER_MODES)),
        gpu_type=gpu_type,
        gpus=gpus,
        walltime=_range(s, "walltime", Range(60, 480), _minutes),
        cpus=s.get("cpus", 1, _int(1, 1024)),
        memory_mb=s.get("memory_mb", None, _int(64, 64 * 1024 * 1024)),
        accounts=s.get("accounts", (), _names),
        qos=s.get("qos", (), _names),
        description=s.get("description", "", str),
    )
    s.finish()
    return p


def _exists(path: Path, kind: str) -> bool:
    """Whether ``path`` is a file (kind "file") or directory ("dir"). A name the system refuses outright
    (too long, say) is not one, instead of an OSError escaping the config check."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except OSError:
        return False


def _application(parent: _Section, name: str, partitions: dict[str, PartitionConfig]) -> ApplicationConfig:
    s = parent.section(name)
    try:
        _name(name)
    except ValueError as e:
        raise parent.error(name, str(e)) from None
    jobscript = find_template(s.get("jobscript", "paraview-web.sh", _text), JOBSCRIPTS_DIR)
    if not _exists(jobscript, "file"):
        raise s.error("jobscript", f"{jobscript} does not exist")
    try:
        JobTemplate(jobscript)
    except TemplateError as e:
        raise s.error("jobscript", str(e)) from None
    server_script = Path(s.get("server_script", str(SERVER_SCRIPT), _text))
    roots = s.get("data_roots", [str(Path.home())], _nonempty_list)
    data_roots = []
    for i, root in enumerate(roots):
        try:
            root = Path(_text(root)).expanduser()
        except ValueError as e:
            raise s.error(f"data_roots[{i}]", str(e)) from None
        if not root.is_absolute():
            raise s.error(f"data_roots[{i}]", f"{root} is not an absolute path")
        if not _exists(root, "dir"):
            raise s.error(f"data_roots[{i}]", f"{root} is not an existing directory")
        data_roots.append(Path(os.path.realpath(root)))
    allowed = s.get("partitions", tuple(partitions), _names)
    for i, p in enumerate(allowed):
        if p not in partitions:
            raise s.error(f"partitions[{i}]", f"{p!r} is not a partition of this site ({', '.join(partitions)})")
    default_partition = s.get("default_partition", allowed[0] if allowed else "", _name)
    if default_partition not in allowed:
        raise s.error("default_partition", f"{default_partition!r} is not among this application's partitions")
    app = ApplicationConfig(
        name=name, jobscript=jobscript, server_script=server_script, data_roots=tuple(data_roots),
        partitions=allowed, default_partition=default_partition,
        start_timeout=s.get("start_timeout", 300, _int(5, 86400)),
        idle_timeout=s.get("idle_timeout", 900, _int(10, 7 * 86400)),
        description=s.get("description", "", str),
    )
    s.finish()
    return app


def _frontend(fe: _Section, service: ServiceConfig) -> FrontendConfig:
    kind = fe.get("kind", "direct", _choice(FRONTENDS))
    if kind == "direct":
        default_url = "ws://{host}:{port}/ws"
    elif kind == "builtin":
        # The built-in proxy answers on pvhpc's own address, whatever port that is.
        default_url = re.sub(r"^http", "ws", service.public_url) + "/proxy?sessionId={id}&path=ws"
    else:
        default_url = "ws://USE_HOST/proxy?sessionId={id}&path=ws"
    session_url = fe.get("session_url", default_url, _text)
    try:
        session_url.format(id="x", host="h", port=1)
    except (KeyError, IndexError, ValueError) as e:
        raise fe.error("session_url", f"only {{id}}, {{host}} and {{port}} may be used ({e})") from None
    map_file = map_group = None
    if kind == "apache":
        map_file = Path(fe.get("map_file", str(paths.state_dir() / "apache" / "session-map.txt"), _text))
        if not map_file.is_absolute():
            raise fe.error("map_file", f"{map_file} is not an absolute path")
        map_group = fe.get("map_group", None, lambda v: _text(str(v)))
        # The map is written while sessions change; a directory it cannot be written
        # to must stop the service now, not fail the first session that becomes ready.
        from pvhpc.frontends.proxymap import ProxyMapError, ProxyMapFile

        try:
            ProxyMapFile(map_file, map_group).check()
        except ProxyMapError as e:
            raise fe.error("map_group" if e.about == "group" else "map_file", str(e)) from None
    else:
        for key in ("map_file", "map_group"):
            if key in fe.data:
                fe.get(key, None)
                raise fe.error(key, f"is used only with kind: apache (this front end is {kind!r})")
    fe.finish()
    return FrontendConfig(kind=kind, session_url=session_url, map_file=map_file, map_group=map_group)


def _ssh(s: _Section, scheduler: SchedulerConfig) -> SSHConfig:
    from pvhpc.frontends.routes import HOST

    host = s.get("host", None, _text)
    if host is None:
        raise s.error("host", "is required: the login host that runs the scheduler's commands")
    if not HOST.match(host):
        raise s.error("host", f"{host!r} is not a host name or address")
    files = {}
    for key, default in (("key_file", None), ("known_hosts", str(Path.home() / ".ssh" / "known_hosts"))):
        value = s.get(key, default, _text)
        if value is None:
            raise s.error(key, "is required: the private key pvhpc logs in with")
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise s.error(key, f"{path} is not an absolute path")
        if not os.access(path, os.R_OK) or not path.is_file():
            hint = f" (add the host's key with: ssh-keyscan {host} >> {path})" if key == "known_hosts" else ""
            raise s.error(key, f"{path} is not a readable file{hint}")
        files[key] = path
    cfg = SSHConfig(
        host=host,
        port=s.get("port", 22, _int(1, 65535)),
        user=s.get("user", _current_user(), _name),
        key_file=files["key_file"],
        known_hosts=files["known_hosts"],
        keepalive=s.get("keepalive", 15.0, _seconds),
        connect_timeout=s.get("connect_timeout", 10.0, _seconds),
    )
    s.finish()
    if scheduler.backend != "slurm":
        raise s.error("host", f"SSH mode runs Slurm's command-line tools; scheduler.backend is {scheduler.backend!r}")
    return cfg


def parse(data: Any, source: str = "<config>") -> SiteConfig:
    top = _Section(source, "", data)

    svc = top.section("service")
    listen = svc.get("listen", "127.0.0.1:8480", _text)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise svc.error("listen", f"{listen!r} is not HOST:PORT")
    public_url = svc.get("public_url", f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}", _text)
    if not re.match(r"^https?://[^/\s]+", public_url):
        raise svc.error("public_url", f"{public_url!r} is not an http(s) URL")
    state = paths.state_dir()
    service = ServiceConfig(
        listen_host=host, listen_port=int(port),
        public_url=public_url.rstrip("/"),
        callback_urls=svc.get("callback_url", [public_url], _urls),
        database_url=svc.get("database", f"sqlite:///{state / 'pvhpc.sqlite'}", _text),
        job_output_dir=Path(svc.get("job_output_dir", str(state / "jobs"), _text)),
        poll_interval=svc.get("poll_interval", 5.0, _seconds),
        launcher_wait=svc.get("launcher_wait", 45.0, _seconds),
        submit_grace=svc.get("submit_grace", 120.0, _seconds),
    )
    svc.finish()

    sch = top.section("scheduler")
    env = sch.get("environment", {}, _mapping)
    scheduler = SchedulerConfig(
        backend=sch.get("backend", "slurm", _choice(("slurm", "pyslurm"))),
        environment={str(k): str(v) for k, v in env.items()},
        command_timeout=sch.get("command_timeout", 30.0, _seconds),
        submit_as=sch.get("submit_as", "service", _choice(("service", "user"))),
    )
    sch.finish()
    if scheduler.submit_as == "user" and scheduler.backend != "slurm":
        raise sch.error("submit_as", "'user' needs backend 'slurm' (pyslurm acts only as the service's own user)")

    rt = top.section("runtime")
    runtime = RuntimeConfig(
        pvpython=rt.get("pvpython", "/usr/bin/pvpython", _text),
        helper_python=rt.get("helper_python", "/usr/bin/python3", _text),
        pythonpath=rt.get("pythonpath", str(paths.runtime_dir()), _text),
        job_helper=rt.get("job_helper", str(JOB_HELPER), _text),
    )
    rt.finish()

    parts = top.section("partitions")
    if not parts.data:
        raise top.error("partitions", "at least one partition is needed")
    partitions = {str(name): _partition(parts, str(name)) for name in parts.data}

    apps = top.section("applications")
    if not apps.data:
        raise top.error("applications", "at least one application is needed")
    applications = {str(name): _application(apps, str(name), partitions) for name in apps.data}

    lim = top.section("limits")
    limits = Limits(
        sessions_per_user=lim.get("sessions_per_user", 4, _int(1, 10000)),
        gpus_per_user=lim.get("gpus_per_user", 8, _int(0, 100000)),
        max_body_bytes=lim.get("max_body_bytes", 64 * 1024, _int(1024, 16 * 1024 * 1024)),
        requests_per_minute=lim.get("requests_per_minute", 600, _int(1, 1000000)),
    )
    lim.finish()

    frontend = _frontend(top.section("frontend"), service)

    au = top.section("auth")
    auth = AuthConfig(
        kind=au.get("kind", "local", _choice(AUTHENTICATORS)),
        user=au.get("user", _current_user(), _name),
        header=au.get("header", "X-Remote-User", _text),
        trusted_proxies=tuple(_text(x) for x in au.get("trusted_proxies", ["127.0.0.1", "::1"], _nonempty_list)),
        staff=au.get("staff", (), _names),
    )
    au.finish()

    ssh = _ssh(top.section("ssh"), scheduler) if "ssh" in top.data else None

    top.finish()
    return SiteConfig(source, service, scheduler, runtime, partitions, applications, limits, frontend, auth, ssh)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def load(path: str | os.PathLike) -> SiteConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "", f"not valid YAML: {e}") from None
    return parse(data, str(path))


def embedded_defaults(cluster_conf: Path | None = None, **service: Any) -> SiteConfig:
    """The site that ``pvhpc cluster start`` runs: partitions gpu (2 fake a100 per node) and cpu."""
    conf = cluster_conf or paths.cluster_dir() / "etc" / "slurm.conf"
    data = {
        "service": {"poll_interval": 2, **service},
        "scheduler": {"environment": {"SLURM_CONF": str(conf)}},
        # One point of entry: the service proxies the session websockets itself.
        "frontend": {"kind": "builtin"},
        "partitions": {
            "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 60, "max": 480},
                    "description": "GPU nodes (fake a100s on the local cluster)"},
            "cpu": {"walltime": {"default": 60, "max": 480}, "description": "CPU nodes, software rendering"},
        },
        "applications": {
            "paraview": {"description": "ParaView (pvpython web server)", "data_roots": [str(Path.home())],
                         "partitions": ["gpu", "cpu"]},
        },
    }
    return parse(data, "<embedded defaults>")
