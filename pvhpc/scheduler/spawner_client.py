"""The service's side of the command spawner (``spawner.py``): a CommandRunner that has the spawner start its
commands, so that starting 200 sbatch at once costs the service's event loop one pipe write and one read each.

The spawner is started at the first command and again after it died (its commands under way are then answered
CommandUnavailable: could not ask, which is never "no"); ``close()`` lets it finish what it runs and end.
It runs as the service's own user with the runner's environment; the job scripts travel to it in a pipe.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from pvhpc.scheduler.runners import KILL_AFTER, CommandResult, CommandRunner, CommandTimedOut, CommandUnavailable
from pvhpc.scheduler.spawner import frame, read_frame

log = logging.getLogger(__name__)

# The spawner imports pvhpc from where this service did, whatever the service's working directory or PYTHONPATH
# were (sys.path[0] of ``python -c`` is the working directory, not a place to import pvhpc from).
BOOT = "import sys; sys.path[0] = sys.argv[1]; from pvhpc.scheduler.spawner import main; main()"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# Seconds past a command's own timeout before the service stops waiting for the spawner's answer: the spawner
# ends a command that ran out of time within 2 x KILL_AFTER and says so; no answer by then means it is stuck.
GRACE = 2 * KILL_AFTER + 5


class SpawnerRunner(CommandRunner):
    """Runs commands here, as LocalRunner does (same environment rule, timeouts, process groups, answers),
    started by the spawner process instead of by the service."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = {**os.environ, "LC_ALL": "C", **(env or {})}
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[object, asyncio.Future]] = {}   # by request: its spawner, its answer
        self._started: asyncio.Future | None = None   # of the process: one start for all first callers
        self._loop: asyncio.AbstractEventLoop | None = None   # the event loop its pipes belong to

    async def run(self, argv: Sequence[str], input: str | None = None, timeout: float = 30,
                  max_output: int | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        proc = await self._spawner()
        number = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[number] = (proc, answer)
        try:
            proc.stdin.write(frame({"id": number, "argv": argv, "input": input, "timeout": timeout,
                                    "max_output": max_output}))
            try:
                reply = await asyncio.wait_for(asyncio.shield(answer), timeout + GRACE)
            except asyncio.TimeoutError:
                self._cancel(proc, number)
                raise CommandTimedOut(f"{argv[0]} did not finish within {timeout:g} s "
                                      "(the command spawner did not answer)") from None
            except BaseException:
                self._cancel(proc, number)   # the caller gave up (cancelled): so does the command
                raise
        finally:
            self._waiting.pop(number, None)
        if "unavailable" in reply:
            raise (CommandTimedOut if reply["timed_out"] else CommandUnavailable)(reply["unavailable"])
        return CommandResult(argv, reply["returncode"], reply["stdout"], reply["stderr"], reply["seconds"],
                             reply["truncated"])

    async def close(self) -> None:
        """Let the spawner finish the commands under way (their answers still reach their callers) and end."""
        if self._started is None:
            return
        if self._loop is not asyncio.get_running_loop():
            self._let_go()
            return
        started, self._started = self._started, None
        try:
            proc = await started
        except CommandUnavailable:
            return
        proc.stdin.close()
        await proc.wait()

    @property
    def pid(self) -> int | None:
        """The spawner's process id, once started (for tests and benchmarks)."""
        if self._started is None or not self._started.done() or self._started.exception():
            return None
        return self._started.result().pid

    def _cancel(self, proc, number: int) -> None:
        if proc.returncode is None and not proc.stdin.is_closing():
            proc.stdin.write(frame({"id": number, "cancel": True}))

    def _let_go(self) -> None:
        """Close the pipe into a spawner started on another event loop (one asyncio.run after another: staff
        commands, tests), without that loop: it finishes what it runs and ends, and this loop starts its own."""
        started, self._started = self._started, None
        if started is not None and started.done() and not started.cancelled() and started.exception() is None:
            started.result().stdin.transport.get_extra_info("pipe").close()

    async def _spawner(self):
        loop = asyncio.get_running_loop()
        if self._started is not None and self._loop is not loop:
            self._let_go()
        self._loop = loop
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        started = self._started
        try:
            return await asyncio.shield(started)
        except CommandUnavailable:
            if self._started is started:
                self._started = None   # the next command tries again
            raise

    async def _start(self):
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", BOOT, PACKAGE_ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,   # a terminal's Ctrl-C is the service's to handle; it closes the pipe
                limit=2 ** 20,
            )
        except OSError as e:
            raise CommandUnavailable(f"cannot start the command spawner: {e.strerror}") from None
        asyncio.ensure_future(self._read_answers(proc))
        return proc

    async def _read_answers(self, proc) -> None:
        try:
            while (reply := await read_frame(proc.stdout)) is not None:
                proc_and_answer = self._waiting.get(reply["id"])
                if proc_and_answer is not None and not proc_and_answer[1].done():
                    proc_and_answer[1].set_result(reply)
        except (ValueError, KeyError) as e:   # not a frame of ours: nothing more it says can be trusted
            log.error("the command spawner's answer is unreadable (%s); starting another", e)
            proc.kill()
        code = await proc.wait()
        if self._started is not None and self._started.done() and not self._started.exception() \
                and self._started.result() is proc:
            self._started = None
            log.warning("the command spawner ended (exit status %s); the next command starts another", code)
        for asked, answer in list(self._waiting.values()):
            if asked is proc and not answer.done():
                answer.set_exception(CommandUnavailable("the command spawner ended before it answered"))
