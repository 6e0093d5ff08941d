"""Following a session while it waits: a live status line on a terminal, one line per change elsewhere.

On a terminal the line is redrawn in place every second (elapsed time, state,
Slurm's reason in words, the expected start); redirected to a file or a pipe,
a line is printed only when something changed, so logs stay readable.
"""

from __future__ import annotations

import queue
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Iterator, TextIO

from pvhpc.client.api import ClientError
from pvhpc.cli.session_format import status_words, warning_line

SPINNER = "|/-\\"


class ProgressDisplay:
    def __init__(self, stream: TextIO, live: bool | None = None):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.started = time.monotonic()
        self._last_words = None
        self._ticks = 0
        self._drawn = False

    def show(self, session: dict) -> None:
        now = datetime.now(timezone.utc)
        words = status_words(session, now)
        if self.live:
            self._ticks += 1
            elapsed = int(time.monotonic() - self.started)
            line = f"{SPINNER[self._ticks % len(SPINNER)]} {elapsed // 60}:{elapsed % 60:02d} {words}"
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\033[K" + line[:width])
            self._drawn = True
        elif words != self._last_words:
            # The expected start is part of the words: a new estimate from Slurm is a change worth a line.
            self.stream.write(f"{datetime.now().strftime('%H:%M:%S')} {words}\n")
        self._last_words = words
        self.stream.flush()

    def warn(self, warning: dict) -> None:
        """A warning of the push channel, on a line of its own (above the live line, which is redrawn)."""
        lead = "\r\033[K" if self.live else f"{datetime.now().strftime('%H:%M:%S')} "
        self.stream.write(f"{lead}{warning_line(warning)}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


class Outcome:
    REACHED, ENDED, TIMED_OUT = "reached", "ended", "timed_out"


def _settle(session: dict, until: tuple[str, ...], display) -> str | None:
    """Show a state just received; say whether following is over (REACHED, ENDED) or goes on (None)."""
    if display:
        display.show(session)
    if session["state"] in until:
        return Outcome.REACHED
    if session["state"] == "ended":
        return Outcome.ENDED
    return None


RECONNECT_AFTER = 2.0   # seconds before a stream the service ended (limits.event_stream_seconds) is opened again
POLL_EVERY = 5.0        # seconds between asking for the session while the user's event streams are all taken


def follow(events: Callable[[], Iterator[dict]], until: tuple[str, ...], timeout: float | None,
           display: ProgressDisplay | None, fetch: Callable[[], dict]) -> tuple[str, dict]:
    """Follow a session's events until its state is in ``until``, it ends, or ``timeout`` passes; warnings
    among the events (``"type": "warning"``) are shown as they come.

    The event stream is read in a thread so that the display keeps ticking while
    nothing happens (Slurm may leave a job pending for hours). A stream lasts only so long
    (limits.event_stream_seconds): when the service ends it while the session is live, it is opened
    again; while the user holds all the streams the site allows (429, limits.event_streams_per_user), the
    session is asked for every POLL_EVERY seconds instead. Returns the outcome and the last session seen.
    Any other broken stream raises the client's error here.
    """
    inbox: queue.Queue = queue.Queue()
    over = threading.Event()

    def read() -> None:
        try:
            while not over.is_set():
                try:
                    for session in events():
                        inbox.put(("session", session))
                        if over.is_set():
                            return
                except ClientError as e:
                    if e.status != 429:
                        raise
                    inbox.put(("session", fetch()))   # no stream to be had now: ask, and try again later
                    over.wait(POLL_EVERY)
                    continue
                inbox.put(("closed", None))
                over.wait(RECONNECT_AFTER)
        except BaseException as e:   # handed to the main thread, which decides
            inbox.put(("error", e))

    threading.Thread(target=read, daemon=True, name="pvhpc-events").start()
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict | None = None
    try:
        while True:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            try:
                kind, value = inbox.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return Outcome.TIMED_OUT, last or fetch()
                if display and last:
                    display.show(last)
                continue
            if kind == "error":
                raise value
            if kind == "closed":
                # The service ends the stream when the session ends, or when the stream has lasted its time (it is
                # then opened again): ask once to be sure which.
                last = fetch()
                outcome = _settle(last, until, display)
                if outcome is not None:
                    return outcome, last
                continue
            if value.get("type") == "warning":
                # News, not a state: said at once (also with -q, on standard error), and following goes on.
                if display:
                    display.warn(value)
                else:
                    print(f"pvhpc: {warning_line(value)}", file=sys.stderr, flush=True)
                continue
            last = value
            outcome = _settle(last, until, display)
            if outcome is not None:
                return outcome, last
    finally:
        over.set()
        if display:
            display.close()
