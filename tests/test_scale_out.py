"""Scale-out: two real pvhpc services on two addresses share one real PostgreSQL database.

Both serve the same users (either one creates, shows, proxies and cancels any session); exactly one polls
Slurm; when it is SIGKILLed the other takes over within seconds, and jobs report to whichever is up.
"""

from __future__ import annotations

import time

import pytest

from tests.harness.cluster import cancel, pvhpc_jobs
from tests.harness.ports import free_port_block
from tests.helpers import foreground_fraction, render, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]
POLL = 1              # the test services poll every second
FOLLOWER_ASKS = 1     # a follower asks for the lead every min(poll interval, 2 s)


def pvhpc_job_ids(cluster) -> list[str]:
    return [j.job_id for j in pvhpc_jobs(cluster)]


def poller(svc) -> dict:
    return svc.client().health()["poller"]


def through(svc, session: dict) -> str:
    """The session's URL on ``svc``'s proxy, whichever instance handed it out."""
    return f"ws://127.0.0.1:{svc.port}/proxy?sessionId={session['id']}&path=ws"


@pytest.fixture
def pair(service_factory, fresh_postgres_url, cluster):
    port = free_port_block(2)
    urls = [f"http://{cluster.login_address}:{p}" for p in (port, port + 1)]
    # Jobs report to either instance: the first in the list while it is up, else the next.
    common = dict(database=fresh_postgres_url, callback_url=urls, frontend={"kind": "builtin"})
    host = "0.0.0.0" if cluster.multi_host else "127.0.0.1"   # the nodes reach it on their network
    a = service_factory("a", listen=f"{host}:{port}", public_url=f"http://127.0.0.1:{port}", **common)
    b = service_factory("b", listen=f"{host}:{port + 1}", public_url=f"http://127.0.0.1:{port + 1}", **common)
    return a, b


def test_two_instances_one_poller_shared_sessions_and_takeover(pair, cluster, drill_record):
    """Two instances on one PostgreSQL; the polling one is SIGKILLed with a session ready. Recovered: the other
    instance polls (it leads), shown by ending that session within two cycles when its job is cancelled."""
    a, b = pair
    drill_record(drill="poller instance SIGKILLed (two instances, one PostgreSQL)", sessions=2,
                 recovery="the other instance leads and polls", bound_s=FOLLOWER_ASKS + 3)
    a.start()
    b.start()
    assert poller(a)["leading"] and not poller(b)["leading"]
    assert poller(a)["how"] == "postgresql advisory lock"

    # Exactly one instance asks Slurm: over a few cycles a's count grows, b's stays at zero.
    before = poller(a)["cycles"]
    time.sleep(3 * POLL + 0.5)
    assert poller(a)["cycles"] - before >= 2
    assert poller(b)["cycles"] == 0 and poller(b)["scheduler_calls"] == 0

    # Made on b, reported to a (first callback URL), seen ready on b through its push channel.
    session = b.client().create("paraview", partition="cpu")
    ready = b.client().wait(session["id"], timeout=120)
    assert ready["state"] == "ready", ready
    assert a.client().get(session["id"])["state"] == "ready"
    assert any("200 POST /api/v1/sessions/" in line and "/report (" in line for line in a.log.read_text().splitlines())
    for svc in (a, b):    # either front door reaches it
        assert foreground_fraction(render(through(svc, session), ready["secret"])) > 0.01
    assert pvhpc_job_ids(cluster) == [ready["job_id"]]

    # The poller dies without a word: b takes the lead within seconds.
    a.kill()
    killed = time.monotonic()
    wait_until(lambda: poller(b)["leading"], 10, interval=0.1, message="b leads")
    takeover = time.monotonic() - killed
    print(f"takeover after SIGKILL of the poller: {takeover:.2f} s")
    drill_record(recover_s=round(takeover, 2))
    assert takeover < FOLLOWER_ASKS + 3   # one ask interval, plus slack for a loaded machine

    # b polls now: a job cancelled outside pvhpc ends its session on b within two cycles.
    cancel(cluster, [ready["job_id"]])
    ended = wait_until(lambda: (lambda s: s if s["state"] == "ended" else None)(b.client().get(session["id"])),
                       2 * POLL + 3, interval=0.1, message="session ended on b")
    drill_record(lost=int(ended["end_reason"] != "cancelled_outside"), orphaned=len(pvhpc_job_ids(cluster)))
    assert ended["end_reason"] == "cancelled_outside", ended

    # A new job's report finds a down, tries b, and gets through.
    second = b.client().create("paraview", partition="cpu")
    second = b.client().wait(second["id"], timeout=120)
    assert second["state"] == "ready", second
    assert foreground_fraction(render(through(b, second), second["secret"])) > 0.01

    # a comes back as a follower: b keeps the lead, a serves the session b tracks.
    a.start()
    assert not poller(a)["leading"] and poller(b)["leading"]
    assert foreground_fraction(render(through(a, second), second["secret"])) > 0.01
    assert a.client().cancel(second["id"])["state"] == "ended"
    assert b.client().wait(second["id"], until=("ended",), timeout=10)["state"] == "ended"
    wait_until(lambda: pvhpc_job_ids(cluster) == [], 20, message="no job left")
