"""The scheduler parts of a site, built from its config as the service builds them (see app.py),
for staff commands that talk to Slurm without a running service."""

from __future__ import annotations

from ..config import SiteConfig
from ..runners import CommandRunner, LocalRunner, SSHRunner
from ..scheduler import Scheduler, make_scheduler


def runner_for(cfg: SiteConfig, ssh_link=None) -> CommandRunner:
    env = cfg.scheduler.environment
    return SSHRunner(ssh_link, env) if ssh_link is not None else LocalRunner(env)


def scheduler_for(cfg: SiteConfig, runner: CommandRunner) -> Scheduler:
    scheduler = make_scheduler(cfg.scheduler.backend, runner)
    if hasattr(scheduler, "timeout"):
        scheduler.timeout = cfg.scheduler.command_timeout
    return scheduler
