"""GET /api/v1/sessions/<id>/report: the node's watchdog asks whether its session is still live (pvhpc's real
routes and store in-process, a scheduler that records every call)."""

from __future__ import annotations

import json
import logging

from sqlalchemy import event

from pvhpc.db.store import Change
from pvhpc.sessions import lifecycle
from pvhpc.sessions.service import token_hash
from pvhpc.jobs.states import EndReason, SessionState

from tests.fakes import ScriptedScheduler
from tests.harness.inprocess import fetch_all, make_app
from tests.helpers import session_record

TOKEN = "the-jobs-report-token-0123456789abcdef"
LIVE_ID, ENDED_ID = "livesessionxxxxxxxxxxxxxxxxxxxxx", "endedsessionxxxxxxxxxxxxxxxxxxxx"


def app_with_sessions(tmp_path):
    scheduler = ScriptedScheduler()
    app = make_app(tmp_path, scheduler)
    store = app.ctx.store
    for i, sid in enumerate((LIVE_ID, ENDED_ID)):
        store.add(session_record(i, id=sid, report_token_hash=token_hash(TOKEN), job_id=str(100 + i)))
        store.change(sid, lifecycle.ready("10.0.0.2", 40000, "cpu01"))
    store.change(ENDED_ID, lifecycle.ended(EndReason.NODE_FAILURE))
    return app, scheduler


def asked(app, session_id, token=TOKEN):
    headers = {"Authorization": f"token {token}"} if token is not None else {}
    [response] = fetch_all(app, [("GET", f"/api/v1/sessions/{session_id}/report", None)], headers=headers)
    return response.code, json.loads(response.body)


def test_the_job_learns_whether_its_session_is_live_and_nothing_else(tmp_path):
    app, scheduler = app_with_sessions(tmp_path)
    assert asked(app, LIVE_ID) == (200, {"live": True, "state": "ready"})
    assert asked(app, ENDED_ID) == (200, {"live": False, "state": "ended", "end_reason": "node_failure"})
    app.ctx.store.change(LIVE_ID, Change.to(SessionState.UNKNOWN, "Slurm does not answer"))
    assert asked(app, LIVE_ID) == (200, {"live": True, "state": "unknown"})   # "could not ask" is not "ended"
    assert scheduler.calls == [], "the watchdog's question must not reach the scheduler"


def test_unknown_sessions_and_wrong_tokens_are_refused_alike_as_the_report_is(tmp_path):
    app, _ = app_with_sessions(tmp_path)
    refused = (403, {"error": "unknown session or wrong report token"})
    assert asked(app, LIVE_ID, token="someone-elses-token") == refused
    assert asked(app, LIVE_ID, token=None) == refused
    assert asked(app, LIVE_ID, token="") == refused
    assert asked(app, "nosuchsessionxxxxxxxxxxxxxxxxxxx") == refused
    [posted] = fetch_all(app, [("POST", f"/api/v1/sessions/{LIVE_ID}/report", '{"event": "idle_warning"}')],
                         headers={"Authorization": "token someone-elses-token"})
    assert (posted.code, json.loads(posted.body)) == refused


def test_each_ask_is_one_read_of_the_session_and_one_of_its_share_grants(tmp_path):
    app, _ = app_with_sessions(tmp_path)
    statements = []
    event.listen(app.ctx.store.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    assert asked(app, LIVE_ID)[0] == 200
    # The grants tell the server's share gate whom to let in and whom to cut off (pvhpc/node/share_gate.py).
    assert len(statements) == 2 and all(s.lstrip().upper().startswith("SELECT") for s in statements), statements
    assert "share_grants" in statements[1]


def test_asks_are_logged_at_debug_and_refusals_as_ever(tmp_path, caplog):
    app, _ = app_with_sessions(tmp_path)
    caplog.set_level(logging.DEBUG, logger="tornado.access")
    asked(app, LIVE_ID)
    asked(app, LIVE_ID, token="wrong")
    lines = [(r.levelno, r.getMessage()[:10]) for r in caplog.records if r.name == "tornado.access"]
    assert lines == [(logging.DEBUG, "200 GET /a"), (logging.WARNING, "403 GET /a")]
    assert LIVE_ID not in caplog.text and TOKEN not in caplog.text
