"""Where a session job's output (its ParaView server's log) is written, and reading it back.

With jobs run as the service account, every job writes into service.job_output_dir.
With jobs run as their users, each job writes under its user's home
(~/.pvhpc/logs, made mode 0700 by the job itself), where only that user can read
it; pvhpc reads it back as that user.
"""

from __future__ import annotations

import pwd
from pathlib import Path

from .config import SiteConfig
from .runners import CommandUnavailable, SudoRunner

USER_LOG_DIR = ".pvhpc/logs"
MAX_BYTES = 256 * 1024


def per_user(config: SiteConfig) -> bool:
    return config.scheduler.submit_as == "user"


def log_path(config: SiteConfig, user: str, job_name: str) -> Path:
    if per_user(config):
        return Path(pwd.getpwnam(user).pw_dir) / USER_LOG_DIR / f"{job_name}.out"
    return config.service.job_output_dir / f"{job_name}.out"


async def read_tail(config: SiteConfig, user: str, job_name: str) -> tuple[str, int]:
    """The last MAX_BYTES of the job's log and the log's whole size ("" and 0 when there is none yet)."""
    path = log_path(config, user, job_name)
    if not per_user(config):
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - MAX_BYTES))
                return f.read().decode(errors="replace"), size
        except FileNotFoundError:
            return "", 0
    try:
        # One byte more than is shown tells whether there was more.
        tail = await SudoRunner(user).run(["tail", "-c", str(MAX_BYTES + 1), str(path)], timeout=10)
    except CommandUnavailable:
        return "", 0
    if not tail.ok:
        return "", 0
    text = tail.stdout
    return (text[1:], MAX_BYTES + 1) if len(text.encode()) > MAX_BYTES else (text, len(text.encode()))
