"""One long-running program of a test: start it, wait until it is ready, stop it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


class DaemonFailed(RuntimeError):
    """The program exited, or never became ready; the message ends with the tail of its log."""


class Daemon:
    """A program in the foreground, its stdout and stderr appended to ``log``.

    A subclass says what it runs (``command``, maybe ``environment``) and when
    it is ready (``ready``). ``start`` returns once ``ready()`` is true, and
    fails with the log's tail if the program exits first or the time runs out
    (then it is stopped first).
    ``stop`` asks with SIGTERM and, after ``stop_grace`` seconds, kills.
    """

    name = "daemon"
    poll_interval = 0.1   # seconds between readiness probes
    stop_grace = 10.0     # seconds between SIGTERM and SIGKILL

    def __init__(self, log: Path):
        self.log = log
        self.proc: subprocess.Popen | None = None

    # -- what a subclass says -------------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The program's environment; None: this process's own."""
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def log_tail(self) -> str:
        """What to show when it fails: the end of its log."""
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return f"(no {self.log.name})"

    # -- the shared shape -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> "Daemon":
        with open(self.log, "ab") as out:   # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                         env=self.environment())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(self.poll_interval)
        self.stop()   # the caller gets no object to stop: leave nothing running
        raise DaemonFailed(f"{self.name} was not ready within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would end it."""
        if self.running:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.kill()
