"""Many sessions from one command (one per data file), without flooding the service or Slurm.

Two bounds hold at once: at most ``parallel`` submissions (with their waits)
are in flight, and new submissions start no faster than ``rate`` per second,
spread evenly. A site's per-minute request limit (HTTP 429 "too many
requests") is met by waiting as long as the service says and trying again; a
per-user session limit is waited out for ``limit_patience`` seconds (sessions of
the batch end and make room), then reported. A submission that got no answer is
never repeated: it may have been recorded, and a second one would be a second job.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from pvhpc.client.api import Client, ClientError
from pvhpc.cli import exit_codes, progress
from pvhpc.cli.session_format import ended_badly

MAX_RATE_RETRIES = 20


class StartPacer:
    """Lets callers start no faster than ``rate`` per second, evenly spaced, across threads."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait_turn(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)


def is_request_rate_limit(error: ClientError) -> bool:
    return error.status == 429 and error.message.startswith("too many requests")


def submit_one(client: Client, pacer: StartPacer, fields: dict, wait_until: str | None, wait_timeout: float,
               limit_patience: float, sleep=time.sleep) -> dict:
    """Create one session (and wait for it when asked); a result dict, never an exception."""
    limit_deadline = time.monotonic() + limit_patience
    rate_retries = 0
    backoff = 2.0
    while True:
        pacer.wait_turn()
        try:
            session = client.create(**fields)
            break
        except ClientError as e:
            if is_request_rate_limit(e) and rate_retries < MAX_RATE_RETRIES:
                rate_retries += 1
                sleep(float(e.retry_after) if e.retry_after else 5)
                continue
            if e.status == 429 and time.monotonic() + backoff <= limit_deadline:
                sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            return {"ok": False, "session": None, "error": e.message, "status": e.status,
                    "exit_code": exit_codes.for_status(e.status)}
    if wait_until:
        try:
            # Followed as pvhpc wait follows it: through streams the service ends and the user's bound on them.
            sid = session["id"]
            _, session = progress.follow(lambda: client.events(sid, timeout=wait_timeout + 60), (wait_until,),
                                         wait_timeout, None, lambda: client.get(sid))
        except ClientError as e:
            return {"ok": False, "session": session, "error": f"submitted, then: {e.message}", "status": e.status,
                    "exit_code": exit_codes.for_status(e.status)}
        reached = session["state"] == wait_until
        if not reached and session["state"] != "ended":
            return {"ok": False, "session": session, "error": f"still {session['state']} after {wait_timeout:g} s",
                    "status": None, "exit_code": exit_codes.TIMEOUT}
        if ended_badly(session) or (wait_until == "ready" and not reached):
            return {"ok": False, "session": session,
                    "error": f"ended: {session.get('end_reason')}: {session.get('detail')}", "status": None,
                    "exit_code": exit_codes.FAILED}
    return {"ok": True, "session": session, "error": None, "status": None, "exit_code": exit_codes.OK}


def submit_all(client: Client, items: list[tuple[str, dict]], parallel: int, rate: float,
               wait_until: str | None = None, wait_timeout: float = 3600, limit_patience: float = 0,
               on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Submit every (label, fields) item; results in the items' order. ``on_result`` sees each as it finishes."""
    pacer = StartPacer(rate)
    lock = threading.Lock()

    def run(item: tuple[str, dict]) -> dict:
        label, fields = item
        result = {"data": label, **submit_one(client, pacer, fields, wait_until, wait_timeout, limit_patience)}
        if on_result:
            with lock:
                on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="pvhpc-batch") as pool:
        return list(pool.map(run, items))


def overall_exit_code(results: list[dict]) -> int:
    """0 when every item succeeded, else the exit code of the first failed item (in the items' order)."""
    for result in results:
        if not result["ok"]:
            return result["exit_code"]
    return exit_codes.OK
