"""Clear reasons (issue 23, shape 6): a start timeout carries the job log's last words; a session that never
became ready lists no saved state; the built-in proxy says why it could not reach a session's server.

Job logs and states are real files read the way the service reads them (tail, through the runner); the
proxy dials real sockets. The whole path on the real cluster is the last test here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import timedelta

import pytest

from pvhpc import config
from pvhpc.db.store import Change, SessionRecord, Store, utcnow
from pvhpc.frontends import builtin
from pvhpc.frontends.relay import why_unreachable
from pvhpc.scheduler.runners import LocalRunner
from pvhpc.sessions import joblogs
from pvhpc.sessions.events import EventBus
from pvhpc.sessions.joblogs import JobLogs, last_lines
from pvhpc.sessions.savedstates import SavedStates, saved_state_dir
from pvhpc.sessions.service import SessionService
from pvhpc.jobs.states import SessionState
from pvhpc.sessions.tracker import Tracker

from tests.fakes import ScriptedScheduler, running
from tests.harness.builtin_proxy import record, run as with_rig

S = SessionState


@pytest.fixture
def site(tmp_path):
    return config.parse({"service": {"job_output_dir": str(tmp_path / "jobs")}, "partitions": {"cpu": {}},
                         "applications": {"paraview": {"data_roots": [str(tmp_path)], "start_timeout": 30}}},
                        "site.yaml")


def job_log(site, job_name, text):
    path = joblogs.log_path(site, "u", job_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- a start timeout says what the job's log says ------------------------------------------------------------

def test_a_logs_last_words_are_its_last_lines_that_say_something_in_one_bounded_line():
    assert last_lines("a\nb\n\n  \x1b[31mc\x1b[0m  \nd\n\n") == "b | c | d"
    long = last_lines("x" * 2000)
    assert len(long) == joblogs.LAST_WORDS_CHARS + 1 and long.startswith("…x")


def test_last_words_are_read_from_the_jobs_own_log(site):
    logs = JobLogs(site, LocalRunner())
    assert asyncio.run(logs.last_words("u", "pvhpc-none")) == ""   # no log yet
    job_log(site, "pvhpc-1", "pvhpc: the server listens on 10.0.0.2\n" + "server output\n" * 5000
            + "could not report to pvhpc: Permission denied\n")
    assert asyncio.run(logs.last_words("u", "pvhpc-1")) == (
        "server output | server output | could not report to pvhpc: Permission denied")


def add_starting(store, sid, job_name, since):
    store.add(SessionRecord(id=sid, user="u", application="paraview", partition="cpu", gpus=0, walltime_minutes=60,
                            request_key="k", state=S.SUBMITTING.value, detail="", job_name=job_name, secret="x",
                            report_token_hash="h"))
    store.change(sid, Change.to(S.STARTING, "", job_id="1001", running_since=since))


def test_a_start_timeout_carries_the_last_words_of_the_jobs_log(site, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    sched = ScriptedScheduler()
    sched.jobs["1001"] = running("1001", nodes="cpu02", name="pvhpc-1")
    tracker = Tracker(site, store, sched, SessionService(site, store, sched, EventBus()),
                      logs=JobLogs(site, LocalRunner()))
    add_starting(store, "s1", "pvhpc-1", utcnow() - timedelta(seconds=31))
    job_log(site, "pvhpc-1", "PVHPC_READY host=10.0.0.2 port=40000 node=cpu02 at=1.0\n"
                             "could not report to pvhpc: Permission denied\n")
    asyncio.run(tracker.poll_once())
    ended = store.get("s1")
    assert ended.end_reason == "start_timeout" and ("cancel", "1001") in sched.calls
    assert ended.detail.endswith("no report within 30 s; the job's log ends: PVHPC_READY host=10.0.0.2 port=40000 "
                                 "node=cpu02 at=1.0 | could not report to pvhpc: Permission denied"), ended.detail


# -- a session that never became ready lists no state --------------------------------------------------------

def test_states_of_sessions_that_never_reported_ready_are_not_listed(site, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    add_starting(store, "used", "pvhpc-1", utcnow())
    store.change("used", Change.to(S.READY, "", host="10.0.0.2", port=40000, ready_at=utcnow()))
    add_starting(store, "neverready", "pvhpc-2", utcnow())
    where = saved_state_dir(site, "u")
    where.mkdir(parents=True)
    names = ["used-20261201T101500Z.pvsm", "neverready-20261201T111500Z.pvsm", "unknown-20261201T121500Z.pvsm"]
    for name in names:
        (where / name).write_text("<x/>")
    (where / "index.tsv").write_text("".join(f"{name}\t4\n" for name in names))
    assert [s["session"] for s in asyncio.run(SavedStates(site, LocalRunner()).list("u"))] == [
        "unknown", "neverready", "used"]   # without the sessions to go by: every state
    listed = asyncio.run(SavedStates(site, LocalRunner(), store=store).list("u"))
    assert [s["session"] for s in listed] == ["unknown", "used"]


# -- the proxy says why it gave up ----------------------------------------------------------------------------

def test_every_dial_failure_has_words():
    assert why_unreachable(TimeoutError(), 15) == "no answer within 15 s (the node or its network may be down)"
    assert "refused" in why_unreachable(ConnectionRefusedError(111, "Connection refused"), 15)
    assert why_unreachable(OSError(13, "Permission denied"), 15) == "Permission denied (no route to the node)"
    assert why_unreachable(OSError(113, "No route to host"), 15) == "No route to host (no route to the node)"
    assert why_unreachable(ConnectionError("the server closed the connection during the handshake"), 15)


def test_a_server_that_is_gone_is_answered_with_why(caplog):
    async def go(rig):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]   # nothing listens here once the socket closes
        rig.frontend.rebuild([record("s1", closed)])
        return await rig.refused("s1")

    with caplog.at_level(logging.WARNING, logger="pvhpc.frontends.builtin"):
        code, message = with_rig(go)
    assert code == 502 and message.startswith("the session's server does not answer: connection refused"), message
    assert "connection refused" in caplog.text


def test_a_server_that_never_answers_is_answered_with_the_time_waited(caplog, monkeypatch):
    """A node whose link is cut takes the connection nowhere; here a socket that accepts and says nothing."""
    monkeypatch.setattr(builtin, "CONNECT_TIMEOUT", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()

    async def go(rig):
        rig.frontend.rebuild([record("s1", silent.getsockname()[1])])
        return await rig.refused("s1")

    try:
        with caplog.at_level(logging.WARNING, logger="pvhpc.frontends.builtin"):
            code, message = with_rig(go)
    finally:
        silent.close()
    assert code == 502 and message == ("the session's server does not answer: no answer within 0.5 s (the node "
                                       "or its network may be down)"), message
    [line] = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert line.endswith(": no answer within 0.5 s (the node or its network may be down)"), line


# -- the whole path, on the real cluster ---------------------------------------------------------------------

def unheard_jobscript(directory) -> str:
    """The real job script, its reports sent where nothing listens: the server starts, pvhpc never hears."""
    from pvhpc.paths import JOBSCRIPTS_DIR

    text = (JOBSCRIPTS_DIR / "paraview-web.sh").read_text()
    line = "export PVHPC_REPORT_URL={{ report_url }}"
    assert line in text, "the job script no longer sets its report URL as this stand-in expects"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]
    path = directory / "unheard.sh"
    path.write_text(text.replace(line, f"export PVHPC_REPORT_URL=http://127.0.0.1:{nowhere}/report", 1))
    return str(path)


@pytest.mark.cluster
def test_a_session_never_heard_from_ends_with_its_logs_words_and_lists_no_state(service_factory, cluster, tmp_path):
    from tests.harness.cluster import pvhpc_jobs
    from tests.helpers import wait_until

    data = tmp_path / "data"
    data.mkdir()
    svc = service_factory(applications={"paraview": {"data_roots": [str(data)], "start_timeout": 40,
                                                     "jobscript": unheard_jobscript(tmp_path)}}).start()
    client = svc.client()
    session = client.create("paraview", partition="cpu")
    ended = client.wait(session["id"], timeout=120)
    assert (ended["state"], ended["end_reason"]) == ("ended", "start_timeout"), ended
    assert "no report within 40 s; the job's log ends: " in ended["detail"], ended["detail"]
    assert "PVHPC_READY" in client.log(session["id"]), "the server never started: nothing could be saved"
    wait_until(lambda: not pvhpc_jobs(cluster), 30, message="the job was cancelled")
    # The server saved its state when the job was cancelled (on disk, in the index), and it is not listed.
    index = svc.dir / "jobs" / "states" / session["user"] / "index.tsv"
    wait_until(lambda: index.exists() and session["id"] in index.read_text(), 30,
               message="the server saved its state when its job was cancelled (else this test shows nothing)")
    assert [s for s in client.saved_states() if s["session"] == session["id"]] == []
