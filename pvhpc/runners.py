"""Where a command runs: the seam between "which command" and "on which host, as whom".

The scheduler backends build argument lists; a runner executes them. Arguments
are always a list handed to exec, never a shell string, so nothing in them is
interpreted by a shell.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Mapping, Sequence


class CommandUnavailable(Exception):
    """The command could not be run at all, or did not finish in time: the answer is unknown."""


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
