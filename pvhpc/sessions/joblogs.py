"""Where a session job's output (its ParaView server's log) is written, and reading it back.

With jobs run as the service account, every job writes into service.job_output_dir.
With jobs run as their users, each job writes under its user's home
(~/.pvhpc/logs, made mode 0700 by the job itself), where only that user can read
it; pvhpc reads it back as that user. Either way the log is read where the jobs
run (here, or on the login host in SSH mode), through the same runners as Slurm's
commands.
"""

from __future__ import annotations

import pwd
import re
from pathlib import Path
from typing import Callable

from pvhpc.config import SiteConfig
from pvhpc.errors import PvhpcError
from pvhpc.scheduler.runners import CommandRunner, CommandUnavailable, read_tail

USER_LOG_DIR = ".pvhpc/logs"
MAX_BYTES = 256 * 1024
# A log's last words, for a session's reason: a few lines, read from a few kB at the end, kept short in the reason.
LAST_WORDS_LINES, LAST_WORDS_BYTES, LAST_WORDS_CHARS = 3, 4096, 500
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def per_user(config: SiteConfig) -> bool:
    return config.scheduler.submit_as == "user"


def log_path(config: SiteConfig, user: str, job_name: str) -> Path:
    if per_user(config):
        return Path(pwd.getpwnam(user).pw_dir) / USER_LOG_DIR / f"{job_name}.out"
    return config.service.job_output_dir / f"{job_name}.out"


class JobLogs:
    def __init__(self, config: SiteConfig, runner: CommandRunner,
                 runner_for_user: Callable[[str], CommandRunner] | None = None):
        self.config = config
        self.runner = runner
        self.runner_for_user = runner_for_user

    async def read_tail(self, user: str, job_name: str) -> tuple[str, int]:
        """The last MAX_BYTES of the job's log and whether there was more ("" when there is none yet).

        Read as the job's user where jobs run as users, within runners.READ_TIMEOUT: a log that is not a regular
        file (its user made it a FIFO, a directory, ...) raises runners.UnreadableFile, a 4xx naming it."""
        # One byte more than is shown tells whether there was more.
        text = await self._tail(user, job_name, MAX_BYTES + 1)
        return (text[1:], True) if len(text.encode()) > MAX_BYTES else (text, False)

    async def last_words(self, user: str, job_name: str) -> str:
        """The job log's last few lines, in one line of at most LAST_WORDS_CHARS ("" when there is none, or it
        cannot be read now): what a session that ended without a word from its job says about why."""
        try:
            text = await self._tail(user, job_name, LAST_WORDS_BYTES)
        except PvhpcError:
            return ""   # a log that is not a regular file: the reason stays without it
        return last_lines(text)

    async def _tail(self, user: str, job_name: str, max_bytes: int) -> str:
        try:
            path = log_path(self.config, user, job_name)
        except KeyError:
            return ""   # no account on this host: it never had a job that could write one
        runner = self.runner_for_user(user) if per_user(self.config) and self.runner_for_user else self.runner
        try:
            text = await read_tail(runner, path, max_bytes)
        except CommandUnavailable:
            return ""   # sudo or the login host could not be asked: nothing to show, as before a log exists
        return text or ""


def last_lines(text: str, count: int = LAST_WORDS_LINES, limit: int = LAST_WORDS_CHARS) -> str:
    """The last ``count`` lines of ``text`` that say something, joined with " | ", their end kept within
    ``limit`` characters; control characters (a terminal's escapes in a server's output) dropped."""
    lines = [CONTROL.sub("", line).strip() for line in text.splitlines()]
    said = " | ".join([line for line in lines if line][-count:])
    return said if len(said) <= limit else "…" + said[-limit:]
