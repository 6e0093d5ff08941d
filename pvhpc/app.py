"""The application object: builds each part from the config and wires them. It does no part's work.

request -> spec -> job script -> scheduler -> tracker -> store -> event bus -> front end / clients
"""

from __future__ import annotations

import asyncio
import functools
import grp
import logging
import os
from dataclasses import dataclass, field

import tornado.httpserver
import tornado.netutil
import tornado.web

from pvhpc.web.auth import Authenticator, make_authenticator
from pvhpc.config import SiteConfig
from pvhpc.sessions.events import EventBus
from pvhpc.frontends import FrontEnd, make_frontend
from pvhpc.sessions.joblogs import JobLogs
from pvhpc.sessions import nodeaddresses
from pvhpc.sessions.modules import ModuleAvailability, every_module
from pvhpc.sessions.savedstates import SavedStates
from pvhpc.db.leadership import leadership_for
from pvhpc.jobs.ids import SESSION_ID_TEXT
from pvhpc.metrics import Metrics
from pvhpc.web.ratelimit import HeldAtOnce, RateLimiter
from pvhpc.scheduler import Scheduler, make_scheduler
from pvhpc.scheduler.runners import CommandRunner, LocalRunner, SSHRunner, SudoRunner
from pvhpc.scheduler.spawner_client import SpawnerRunner
from pvhpc.sessions.more_time import MoreTime
from pvhpc.sessions.service import SessionService
from pvhpc.sessions.sharing import Sharing
from pvhpc.db.store import Store
from pvhpc.sessions.storefeed import StoreFeed
from pvhpc.db.tokens import TokenStore
from pvhpc.sessions.tracker import Tracker
from pvhpc.sessions.continuation import Continuation
from pvhpc.sessions.walltime_warnings import WalltimeWarnings
from pvhpc.web import api, continuation_api, extend, pages, pvw_launcher, shares_api
from pvhpc.web.base import NotFoundHandler
from pvhpc.web.accesslog import log_request
from pvhpc.web.prometheus import MetricsHandler, counting, read_token_file

log = logging.getLogger("pvhpc")
SESSION_ID = f"({SESSION_ID_TEXT})"
# A client gets this long to send a request's headers, and its body: slow clients must not hold connections
# (and file descriptors) for long. Long answers (server-sent events, the launcher's wait) are not limited.
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
FRONTEND_SOCKET_MODE = 0o660   # the front end's group may connect; nobody else
# Connections the kernel holds for the service before it accepts them. Tornado's default, 128, overflowed when a
# class of 200 asked at once: each connection past it lost its SYN and waited out TCP's 1 s retry, so every burst
# took over a second whatever the service did (nstat's TcpExtListenOverflows counted them). The kernel caps it at
# net.core.somaxconn (4096 on Debian 12).
LISTEN_BACKLOG = 1024


@dataclass
class Context:
    """What request handlers may use."""

    config: SiteConfig
    store: Store
    scheduler: Scheduler
    bus: EventBus
    service: SessionService
    frontend: FrontEnd
    auth: Authenticator
    tokens: TokenStore
    limiter: RateLimiter
    logs: JobLogs
    tracker: Tracker
    metrics: Metrics
    # Event streams each user holds open on this instance (limits.event_streams_per_user).
    open_streams: HeldAtOnce = field(default_factory=HeldAtOnce)
    # Sessions shared by their owners with other users (sessions/sharing.py).
    sharing: Sharing | None = None
    continuation: Continuation | None = None   # successor jobs (pvhpc/sessions/continuation.py)
    # More time for running sessions (sessions/more_time.py).
    more_time: MoreTime | None = None


def routes(ctx: Context) -> list:
    c = {"ctx": ctx}
    return [
        (r"/paraview/?", pvw_launcher.LaunchHandler, c),
        (rf"/paraview/{SESSION_ID}", pvw_launcher.LaunchedSessionHandler, c),
        (r"/api/v1/sessions", api.SessionsHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}", api.SessionHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/events", api.SessionEventsHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/report", api.ReportHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/log", api.SessionLogHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/shares", shares_api.SharesHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/shares/([A-Za-z0-9_.-]{{1,64}})", shares_api.ShareHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/continue", continuation_api.ContinueHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/handover", continuation_api.HandoverHandler, c),
        (rf"/api/v1/sessions/{SESSION_ID}/extend", extend.ExtendHandler, c),
        (r"/api/v1/applications", api.ApplicationsHandler, c),
        (r"/api/v1/pvsc", api.ServerConfigurationHandler, c),
        (r"/api/v1/saved-states", api.SavedStatesHandler, c),
        (r"/api/v1/states", api.DeprecatedSavedStatesHandler, c),   # deprecated: the old name of the one above
        (r"/api/v1/partitions", api.PartitionsHandler, c),
        (r"/api/v1/tokens", api.TokensHandler, c),
        (r"/api/v1/tokens/([0-9]{1,18})", api.TokenHandler, c),
        (r"/api/v1/health", api.HealthHandler, c),
        (r"/metrics", MetricsHandler, {**c, "token": read_token_file(ctx.config.metrics.token_file)}),
        *pages.routes(ctx),
        (r"/api/.*", NotFoundHandler, c),
    ]


class PvhpcApp:
    def __init__(self, config: SiteConfig, scheduler: Scheduler | None = None):
        self.config = config
        store = Store(config.service.database_url)
        # SSH mode: one connection to the login host carries the scheduler's commands and the proxy's tunnels.
        self.ssh_link = None
        if config.ssh is not None:
            from pvhpc.scheduler import ssh

            self.ssh_link = ssh.SSHLink.from_config(config.ssh)
        # The service's own commands are started by its command spawner, off its event loop (spawner.py says why).
        self.runner = runner = runner_for(config, self.ssh_link, spawner=True)
        runner_for_user = user_runners_for(config, runner)
        metrics = Metrics(config.partitions)
        scheduler = metrics.metered(scheduler or scheduler_for(config, runner, runner_for_user))
        bus = EventBus()
        # Nodes' names become addresses where the front end dials from: here, or the login host in SSH mode.
        resolve = nodeaddresses.over_ssh(self.ssh_link) if self.ssh_link else None
        saved_states = SavedStates(config, runner, runner_for_user, store)
        # Environment modules the config names, asked about once at start (sessions/modules.py says why then).
        modules = ModuleAvailability(config, runner) if every_module(config) else None
        service = SessionService(config, store, scheduler, bus, resolve, saved_states, modules)
        logs = JobLogs(config, runner, runner_for_user)
        frontend = make_frontend(config, self.ssh_link, metrics.proxy_traffic())
        bus.on_change(frontend.update)
        tokens = TokenStore(store)
        leadership = leadership_for(store.engine)
        self.tracker = Tracker(config, store, scheduler, service, leadership, logs)
        continuation = Continuation(config, service, saved_states)
        self.tracker.continuation = continuation
        # Another instance may change sessions in a shared database: follow its writes too.
        self.feed = StoreFeed(store, bus) if leadership.shared else None
        metrics.watch(bus, self.tracker, frontend)
        self.walltime_warnings = WalltimeWarnings(config.service.walltime_warnings, bus)
        sharing = Sharing(config, store, on_sharees=frontend.set_sharees)
        bus.on_change(sharing.session_changed)
        self.ctx = Context(config, store, scheduler, bus, service, frontend,
                           make_authenticator(config.auth, tokens), tokens,
                           RateLimiter(config.limits.requests_per_minute), logs,
                           self.tracker, metrics, continuation=continuation,
                           sharing=sharing,
                           more_time=MoreTime(config, scheduler, service, metrics.extension))
        self.web = tornado.web.Application(frontend.handlers(self.ctx) + routes(self.ctx),
                                           default_handler_class=NotFoundHandler,
                                           log_function=counting(log_request, metrics),
                                           default_handler_args={"ctx": self.ctx})
        self.server: tornado.httpserver.HTTPServer | None = None

    async def start(self, port: int | None = None) -> int:
        """Open the store, reconcile with the scheduler, rebuild the front-end map, listen. Returns the port."""
        cfg = self.config
        self.ctx.store.open()
        self.ctx.metrics.load(self.ctx.store.live())   # before reconciling: its changes move these counts
        # Jobs' logs name files and hosts and may hold what users typed: for the service account only.
        cfg.service.job_output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cfg.service.job_output_dir.chmod(0o700)
        if self.ssh_link:
            await self.ssh_link.check()   # an unusable login host stops the service here, with its reason
        log.info("scheduler: %s", ", ".join(f"{k} {v}" for k, v in (await self.ctx.scheduler.about()).items()))
        if self.ctx.service.modules is not None:
            await self.ctx.service.modules.check()
        stats = await self.tracker.poll_if_leading()
        if stats is None:
            log.info("another instance polls the scheduler; this one follows its changes in the database")
        else:
            log.info("reconciled %d live sessions with the scheduler (%s)", stats.sessions,
                     "reachable" if stats.reachable else "UNREACHABLE: kept as unknown")
        await self.ctx.frontend.start()
        self.ctx.frontend.rebuild(self.ctx.store.live())
        self.ctx.sharing.publish_all()   # who each session is shared with, for a front end that checks it itself
        self.walltime_warnings.start(self.ctx.store.live())
        self.server = tornado.httpserver.HTTPServer(
            self.web, xheaders=False, max_body_size=max(cfg.limits.max_body_bytes * 4, 1024 * 1024),
            idle_connection_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT,
        )
        sockets = tornado.netutil.bind_sockets(cfg.service.listen_port if port is None else port,
                                               cfg.service.listen_host, backlog=LISTEN_BACKLOG)
        if cfg.service.frontend_socket is not None:
            sockets.append(bind_frontend_socket(cfg.service.frontend_socket, cfg.service.frontend_socket_group))
        self.server.add_sockets(sockets)
        self.tracker.start()
        if self.feed:
            self.feed.start()
        return sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            # First: no request may start anything (a command, and with it a new command spawner) past here.
            self.server.stop()
            await self.server.close_all_connections()
        await self.tracker.stop()
        self.walltime_warnings.stop()
        if self.feed:
            await self.feed.stop()
        self.ctx.store.off_loop.close()   # calls under way finish; nothing writes after this
        if self.ctx.sharing:
            self.ctx.sharing.close()
        await self.ctx.frontend.stop()
        if self.ssh_link:
            self.ssh_link.close()
        if isinstance(self.runner, SpawnerRunner):
            await self.runner.close()   # after the server and the tracker: nothing starts a command any more
        socket_path = self.config.service.frontend_socket
        if self.server and socket_path is not None:
            try:
                socket_path.unlink()
            except FileNotFoundError:
                pass


# The scheduler's parts, built the same way for the service and for staff commands that talk to Slurm
# without a running service (pvhpc doctor, pvhpc cluster ...).

def runner_for(cfg: SiteConfig, ssh_link=None, spawner: bool = False) -> CommandRunner:
    """Where Slurm's commands run: here, or on the login host over the SSH link. ``spawner``: here, started by a
    command spawner process (for the service; a staff command starts its few commands itself)."""
    env = cfg.scheduler.environment
    if ssh_link is not None:
        return SSHRunner(ssh_link, env)
    return SpawnerRunner(env) if spawner else LocalRunner(env)


def user_runners_for(cfg: SiteConfig, runner: CommandRunner):
    """How to run a command as a session's user (sudo, wherever ``runner`` runs), or None: all as the service."""
    return functools.partial(SudoRunner, runner) if cfg.scheduler.submit_as == "user" else None


def scheduler_for(cfg: SiteConfig, runner: CommandRunner, runner_for_user=None) -> Scheduler:
    return make_scheduler(cfg.scheduler, runner, runner_for_user)


def bind_frontend_socket(path, group: str | None):
    """The front end's channel (service.frontend_socket): a Unix socket only its group may connect to.

    Requests over it are the only ones whose user header pvhpc believes (pvhpc.web.auth).
    """
    from pvhpc.errors import PvhpcError

    if not path.parent.is_dir():
        raise PvhpcError(f"service.frontend_socket: {path.parent} is not a directory; create it (e.g. "
                         f"install -d -m 0750 -o pvhpc -g www-data {path.parent})")
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise PvhpcError(f"service.frontend_socket_group: no group {group!r} on this host") from None
    try:
        sock = tornado.netutil.bind_unix_socket(str(path), mode=FRONTEND_SOCKET_MODE, backlog=LISTEN_BACKLOG)
    except (OSError, ValueError) as e:
        raise PvhpcError(f"service.frontend_socket: cannot listen on {path}: {e}") from None
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        sock.close()
        raise PvhpcError(f"service.frontend_socket_group: pvhpc may not give {path} the group {group}; run it as "
                         f"a member of {group}") from None
    return sock


async def serve_forever(config: SiteConfig) -> None:
    # Whatever the service writes, and what its jobs' Slurm output files are made with (sbatch passes its
    # umask on to the job), is for its own account only unless it says otherwise (the map file, the socket).
    os.umask(0o077)
    app = PvhpcApp(config)
    port = await app.start()
    log.info("pvhpc listening on %s:%d (public URL %s)", config.service.listen_host, port, config.service.public_url)
    try:
        await asyncio.Event().wait()
    finally:
        await app.stop()
