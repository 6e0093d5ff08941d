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
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from pvhpc.errors import PvhpcError

if TYPE_CHECKING:   # paramiko is imported only by sites that use SSH mode
    from pvhpc.scheduler.ssh import SSHLink

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Seconds between asking a command that ran out of time to end (SIGTERM, which sudo passes on to the user's
# command) and making it (SIGKILL, which ends sudo but never reaches the command sudo started).
KILL_AFTER = 2.0
CHUNK = 64 * 1024
MAX_STDERR = 64 * 1024   # a command's complaint; what lies past it is dropped
# Seconds a read of a user's file (its job's log, its saved states) may take: a regular file of the sizes read
# here comes back in milliseconds, so one that gives nothing for this long is a FIFO, a device or a hung mount.
READ_TIMEOUT = 5.0


class CommandUnavailable(PvhpcError):
    """The command could not be run at all, or did not finish in time: the answer is unknown."""

    status = 503


class CommandTimedOut(CommandUnavailable):
    """The command did not finish in time; it was ended (all of it, the user's own command too under sudo)."""


class UnreadableFile(PvhpcError):
    """A file pvhpc reads for a user (a job's log, a saved state, the states' index) is not one it can read: a
    directory, a FIFO, a device, ... The message names the path; the request, not the service, is at fault."""

    status = 409


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    truncated: bool = False   # stdout was cut at the bytes asked for (max_output) and the command ended there

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        text = (self.stderr or self.stdout).strip().replace("\n", " | ")
        return f"{self.argv[0]} exited {self.returncode}: {text[:500]}"


class CommandRunner:
    """Runs an argument list somewhere and returns its result.

    ``max_output``: the bytes of standard output wanted; a command that writes more is ended there
    (``CommandResult.truncated``). A command past its ``timeout`` is ended, all of it, and CommandTimedOut raised.
    """

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30,
                  max_output: int | None = None) -> CommandResult:
        raise NotImplementedError


class LocalRunner(CommandRunner):
    """Runs commands as a child process of pvhpc, with extra environment variables (e.g. SLURM_CONF).

    Each command leads a process group of its own, so that ending it reaches whatever it started that pvhpc
    may signal; and it is told to end (SIGTERM) before it is made to (SIGKILL): sudo passes SIGTERM on to the
    user's command, while a SIGKILL would end sudo alone and leave the user's command running.
    Messages are in the C locale (unless the site's environment names LC_ALL): pvhpc reads some of them.
    """

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = {**os.environ, "LC_ALL": "C", **(env or {})}

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30,
                  max_output: int | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as e:
            raise CommandUnavailable(f"cannot run {argv[0]}: {e.strerror}") from None
        talk = asyncio.ensure_future(self._talk(proc, input, max_output))
        try:
            out, err, truncated = await asyncio.wait_for(asyncio.shield(talk), timeout)
        except asyncio.TimeoutError:
            await end_process(proc)
            talk.cancel()
            raise CommandTimedOut(f"{argv[0]} did not finish within {timeout:g} s") from None
        except BaseException:
            talk.cancel()
            await end_process(proc)
            raise
        return CommandResult(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - started, truncated)

    @staticmethod
    async def _talk(proc, input: str | None, max_output: int | None) -> tuple[bytes, bytes, bool]:
        """Write ``input``, read both outputs (each only as far as it is wanted), wait for the end."""
        async def feed() -> None:
            if input is not None:
                try:
                    proc.stdin.write(input.encode())
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass   # it did not read it all: its exit status says what came of that
                proc.stdin.close()

        async def collect(stream, limit: int | None) -> tuple[bytes, bool]:
            kept = bytearray()
            while True:
                chunk = await stream.read(CHUNK)
                if not chunk:
                    return bytes(kept), False
                if limit is not None and len(kept) + len(chunk) > limit:
                    kept += chunk[:limit - len(kept)]
                    return bytes(kept), True
                kept += chunk

        async def complaint() -> bytes:
            kept = bytearray()
            while chunk := await proc.stderr.read(CHUNK):
                kept += chunk[:max(0, MAX_STDERR - len(kept))]
            return bytes(kept)

        fed, told = asyncio.ensure_future(feed()), asyncio.ensure_future(complaint())
        try:
            out, truncated = await collect(proc.stdout, max_output)
            if truncated:
                await end_process(proc)   # all that is wanted is read: the rest is neither read nor waited for
            err = await told
            await fed
        finally:
            fed.cancel()
            told.cancel()
        await proc.wait()
        return out, err, truncated


def watch_commands_without_threads() -> None:
    """Have asyncio learn of a command's end from a pidfd the event loop watches, where Linux has them (5.3),
    as Python 3.12 does by default. Python 3.11's default starts a thread per command to wait for it: in a burst
    of 200 sbatch, starting those threads held the event loop about a millisecond each. Call before the loop starts."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return   # a kernel (or sandbox) without them: the threads, then
    asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


async def end_process(proc) -> None:
    """End a command run by LocalRunner and what it started: SIGTERM to its process group, SIGKILL after
    KILL_AFTER seconds to whatever of it is left. Processes of other users in the group (a command sudo runs)
    cannot be signalled by pvhpc: sudo passes SIGTERM on to them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                return
        try:
            await asyncio.wait_for(proc.wait(), KILL_AFTER)
            return
        except asyncio.TimeoutError:
            continue


class SudoRunner(CommandRunner):
    """Runs a command as another user through ``sudo -n -u USER``, wherever the inner runner runs it
    (here, or on the login host over SSH), so a job is that user's, not the service's.

    ``-n``: never wait for a password; a missing sudoers rule fails at once with sudo's
    own message. sudo resets the environment, so the variables pvhpc passes (SLURM_CONF)
    must be kept by the sudoers rule (``env_keep``; see docs/sudoers.pvhpc).

    The user's command runs no longer than ``timeout``, wherever it runs: coreutils' ``timeout`` (run as the
    service, outside sudo's rule) asks sudo to end it (SIGTERM, which sudo passes on) and kills what is left
    KILL_AFTER seconds later. Over SSH that is the only way to end it: closing the channel ends nothing there.
    """

    TIMED_OUT = (124, 128 + signal.SIGKILL)   # timeout's own statuses: ended by SIGTERM, or by SIGKILL after it

    def __init__(self, inner: CommandRunner, user: str):
        self.inner = inner
        self.user = user

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30,
                  max_output: int | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        bounded = ["timeout", f"--kill-after={KILL_AFTER:g}", f"{timeout:g}", "sudo", "-n", "-u", self.user, "--",
                   *argv]
        result = await self.inner.run(bounded, input=input, timeout=timeout + KILL_AFTER + 3, max_output=max_output)
        result.argv = argv   # messages name the command, not sudo
        if result.returncode in self.TIMED_OUT and result.seconds >= timeout:
            raise CommandTimedOut(f"{argv[0]} did not finish within {timeout:g} s")
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
        # Messages in the C locale, as LocalRunner's (pvhpc reads some of them: read_tail's), whatever the login
        # host's own; a site's environment may still name another.
        self.env = {"LC_ALL": "C", **(env or {})}

    def command_line(self, argv: Sequence[str]) -> str:
        """The line the login host's shell runs: every word quoted, so none is expanded or split."""
        prefix = ["env", *(f"{k}={v}" for k, v in self.env.items())] if self.env else []
        return shlex.join(prefix + [str(a) for a in argv])

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30,
                  max_output: int | None = None) -> CommandResult:
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
        truncated = max_output is not None and len(out.encode()) > max_output
        if truncated:
            out = out.encode()[:max_output].decode(errors="replace")
        return CommandResult(argv, status, out, err, time.monotonic() - started, truncated)


async def read_tail(runner: CommandRunner, path, max_bytes: int, timeout: float = READ_TIMEOUT) -> str | None:
    """The last ``max_bytes`` of the file at ``path`` (all of a smaller one) as ``runner`` reads it: as the file's
    user through sudo where jobs run as users (tail is the one reading command sudo lets pvhpc run as them,
    docs/sudoers.pvhpc); None when there is no such file.

    Anything but a readable regular file raises UnreadableFile naming the path: a directory; a FIFO or a
    device that gives nothing within ``timeout`` seconds (ended then, the user's tail included); one the
    reader may not read (403). No more than ``max_bytes`` are read from a regular file, however large:
    tail seeks to them.
    """
    try:
        result = await runner.run(["tail", "-c", str(max_bytes), "--", str(path)], timeout=timeout,
                                  max_output=max_bytes)
    except CommandTimedOut:
        raise UnreadableFile(f"{path} gave nothing to read within {timeout:g} s: it is not a regular file (a FIFO "
                             "or a device?), or its file system does not answer") from None
    if result.ok:
        return result.stdout
    said = result.stderr.strip()
    words = said.lower()
    if "no such file or directory" in words or "not a directory" in words:
        return None
    if "is a directory" in words:
        raise UnreadableFile(f"{path} is a directory, not a file")
    if "permission denied" in words:
        raise UnreadableFile(f"{path} cannot be read: permission denied", status=403)
    if words.startswith("sudo:") or "\nsudo:" in words:
        raise CommandUnavailable(f"{path} could not be read: {said[-300:]}")
    raise UnreadableFile(f"{path} cannot be read: {said[-200:] or f'tail exited {result.returncode}'}")
