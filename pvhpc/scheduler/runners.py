"""Where a command runs: the seam between "which command" and "on which host, as whom".

The scheduler backends build argument lists; a runner executes them. Arguments
are always a list handed to exec, never a shell string, so nothing in them is
interpreted by a shell. The one exception is SSH, whose remote side always
starts a shell: there every word is quoted, so the shell sees them as words.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from pvhpc.errors import PvhpcError

if TYPE_CHECKING:   # paramiko is imported only by sites that use SSH mode
    from pvhpc.scheduler.ssh import SSHLink

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CommandUnavailable(PvhpcError):
    """The command could not be run at all, or did not finish in time: the answer is unknown."""

    status = 503


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        text = (self.stderr or self.stdout).strip().replace("\n", " | ")
        return f"{self.argv[0]} exited {self.returncode}: {text[:500]}"


class CommandRunner:
    """Runs an argument list somewhere and returns its result."""

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30) -> CommandResult:
        raise NotImplementedError


class LocalRunner(CommandRunner):
    """Runs commands as a child process of pvhpc, with extra environment variables (e.g. SLURM_CONF)."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(os.environ, **(env or {}))

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30) -> CommandResult:
        argv = [str(a) for a in argv]
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
            )
        except OSError as e:
            raise CommandUnavailable(f"cannot run {argv[0]}: {e.strerror}") from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(input.encode() if input is not None else None), timeout
            )
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandUnavailable(f"{argv[0]} did not finish within {timeout:g} s") from None
        return CommandResult(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - started)


class SudoRunner(CommandRunner):
    """Runs a command as another user through ``sudo -n -u USER``, wherever the inner runner runs it
    (here, or on the login host over SSH), so a job is that user's, not the service's.

    ``-n``: never wait for a password; a missing sudoers rule fails at once with sudo's
    own message. sudo resets the environment, so the variables pvhpc passes (SLURM_CONF)
    must be kept by the sudoers rule (``env_keep``; see docs/sudoers.pvhpc).
    """

    def __init__(self, inner: CommandRunner, user: str):
        self.inner = inner
        self.user = user

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30) -> CommandResult:
        argv = [str(a) for a in argv]
        result = await self.inner.run(["sudo", "-n", "-u", self.user, "--", *argv], input=input, timeout=timeout)
        result.argv = argv   # messages name the command, not sudo
        return result


class SSHRunner(CommandRunner):
    """Runs commands on a login host over pvhpc's shared SSH connection (pvhpc.scheduler.ssh.SSHLink).

    The environment (e.g. SLURM_CONF) goes in front as ``env NAME=VALUE``:
    sshd passes few client variables through (AcceptEnv), and a prefix needs
    no change on the login host.
    """

    def __init__(self, link: "SSHLink", env: Mapping[str, str] | None = None):
        for name in env or {}:
            # A name such as "-u" would be read by env as an option, not a variable.
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        self.link = link
        self.env = dict(env or {})

    def command_line(self, argv: Sequence[str]) -> str:
        """The line the login host's shell runs: every word quoted, so none is expanded or split."""
        prefix = ["env", *(f"{k}={v}" for k, v in self.env.items())] if self.env else []
        return shlex.join(prefix + [str(a) for a in argv])

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30) -> CommandResult:
        from pvhpc.scheduler.ssh import SSHError

        argv = [str(a) for a in argv]
        started = time.monotonic()
        try:
            status, out, err = await self.link.run(self.command_line(argv), input=input, timeout=timeout)
        except SSHError as e:
            # Not connected, or the connection dropped mid-command: the scheduler's answer is unknown,
            # which is never the same as "no such job".
            raise CommandUnavailable(f"{argv[0]} via SSH: {e}") from None
        if status in (126, 127):
            # The shell could not start it (not installed on the login host, or not on its PATH): as with
            # a local command that does not exist, the scheduler was never asked.
            raise CommandUnavailable(f"cannot run {argv[0]} on {self.link.name}: {err.strip()[:300]}")
        return CommandResult(argv, status, out, err, time.monotonic() - started)
