"""The walltime the user can see: the time left in the API, `pvhpc status` and the page; warnings at
service.walltime_warnings seconds before it on the push channel, in the page's banner and quick view (Chromium),
and from `pvhpc wait`. Timers come from stored times: a service started late still warns."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pvhpc.db.store import utcnow
from pvhpc.sessions.events import EventBus, Notice
from pvhpc.sessions.walltime_warnings import WalltimeWarnings, ends_at, time_left
from tests.harness.browser import chromium
from tests.helpers import session_record

REPO = Path(__file__).resolve().parent.parent


# -- the timers, on their own (fast) ----------------------------------------------------------------------

def ready_session(started_seconds_ago: float, walltime_minutes: int = 3, i: int = 0):
    return session_record(i, state="ready", walltime_minutes=walltime_minutes,
                          running_since=utcnow() - timedelta(seconds=started_seconds_ago))


def collect_notices(bus: EventBus, seconds: float, *records, offsets=(0.6, 0.3)) -> list[Notice]:
    async def run():
        warnings = WalltimeWarnings(offsets, bus)
        with bus.subscribe(notices=True) as events:
            warnings.start(list(records))
            await asyncio.sleep(seconds)
            warnings.stop()
            got = []
            while not events.queue.empty():
                got.append(events.queue.get_nowait())
            return [n for n in got if isinstance(n, Notice)]

    return asyncio.run(run())


def test_warnings_come_at_their_offsets_once_each_and_a_missed_one_at_once():
    bus = EventBus()
    # 1 minute of walltime, 59.2 s gone: 0.8 s left, so the warnings are due 0.2 s and 0.5 s from now.
    soon = ready_session(59.2, walltime_minutes=1, i=1)
    # Already past both offsets (a service that was down at their time): one warning at once.
    late = ready_session(59.9, walltime_minutes=1, i=2)
    queued = session_record(3, state="queued", walltime_minutes=1)
    notices = collect_notices(bus, 1.2, soon, late, queued)
    by_session = {}
    for n in notices:
        by_session.setdefault(n.session_id, []).append(n)
    assert len(by_session[soon.id]) == 2 and len(by_session[late.id]) == 1 and queued.id not in by_session
    first, second = by_session[soon.id]
    assert 0.4 < first.seconds_left <= 0.65 and 0.1 < second.seconds_left <= 0.35
    assert first.reason == "walltime" and "ends in less than 1 minute" in first.message and "longer walltime" in first.message
    assert first.json()["type"] == "warning" and first.json()["ends_at"].endswith("+00:00")


def test_time_left_counts_from_the_jobs_start():
    record = ready_session(60, walltime_minutes=3)
    assert ends_at(record) == record.running_since + timedelta(minutes=3)
    assert 119 <= time_left(record) <= 120
    assert time_left(session_record(state="queued", walltime_minutes=3)) is None


# -- through the real service, cluster, CLI and Chromium ------------------------------------------------------

def cli(*args, url: str, **popen):
    env = dict(os.environ, PYTHONPATH=str(REPO), PVHPC_CLIENT_CONFIG=str(REPO / "no-such-client.yaml"), PVHPC_URL=url)
    env.pop("PVHPC_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "pvhpc", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.cluster
@pytest.mark.browser
@pytest.mark.waits
def test_walltime_warnings_reach_the_page_and_pvhpc_wait(service_factory, artifacts):
    # Walltime 3 minutes, warned at 2:30 and 2:00 left: the test is over within about a minute of the start.
    svc = service_factory(frontend={"kind": "builtin"}, walltime_warnings=[150, 120]).start()
    client = svc.client()
    session = client.wait(client.create("paraview", partition="cpu", walltime=3)["id"], timeout=150)
    sid = session["state"] == "ready" and session["id"]
    assert sid, session
    assert 120 < session["time_left"] <= 180 and session["ends_at"]
    status = cli("status", "--", sid, url=svc.url)
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    assert "time left:" in out and "walltime ends" in out and "ready" in out
    waiter = cli("wait", "--until", "ended", "--timeout", "170", "--", sid, url=svc.url)
    try:
        with chromium() as browser:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(svc.url + "/")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            page.locator(f'#live-table tr[data-session="{sid}"] button').click()
            page.wait_for_selector('#session-state[data-state="ready"]', timeout=15_000)
            assert "the walltime ends the session at" in page.locator("#session-left").inner_text()
            assert page.is_hidden("#session-warning")
            for minutes in (3, 2):
                words = f"ends in less than {minutes} minutes"
                page.wait_for_function(
                    "w => ['session-warning', 'viewer-warning'].every(id => { const e = document.getElementById(id);"
                    " return !e.hidden && e.textContent.includes(w); })", arg=words, timeout=75_000)
                page.screenshot(path=str(artifacts / f"warned-{minutes}-minutes.png"), full_page=True)
            assert page.is_visible("#viewer-area") and errors == []
            left = page.locator("#session-left").inner_text()
            assert left.startswith(("1:", "2:0")), left
        client.cancel(sid)
        out, err = waiter.communicate(timeout=60)
        lines = [line for line in out.splitlines() if "warning:" in line]
        assert len(lines) == 2 and "less than 3 minutes" in lines[0] and "less than 2 minutes" in lines[1], out
        assert waiter.returncode == 0, err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
