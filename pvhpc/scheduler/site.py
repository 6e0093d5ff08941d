"""The scheduler parts of a site, built from its config: used by the service (app.py) and by staff
commands that talk to Slurm without a running service, so both build them the same way."""

from __future__ import annotations

import functools

from pvhpc.config import SiteConfig
from pvhpc.scheduler.runners import CommandRunner, LocalRunner, SSHRunner, SudoRunner
from pvhpc.scheduler import Scheduler, make_scheduler


def runner_for(cfg: SiteConfig, ssh_link=None) -> CommandRunner:
    """Where Slurm's commands run: here, or on the login host over the SSH link."""
    env = cfg.scheduler.environment
    return SSHRunner(ssh_link, env) if ssh_link is not None else LocalRunner(env)


def user_runners_for(cfg: SiteConfig, runner: CommandRunner):
    """How to run a command as a session's user (sudo, wherever ``runner`` runs), or None: all as the service."""
    return functools.partial(SudoRunner, runner) if cfg.scheduler.submit_as == "user" else None


def scheduler_for(cfg: SiteConfig, runner: CommandRunner, runner_for_user=None) -> Scheduler:
    return make_scheduler(cfg.scheduler, runner, runner_for_user)
