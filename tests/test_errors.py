"""One error root, and one place that turns errors into answers.

The mapping itself is pure logic; the answers are checked on pvhpc's real routes (the
Tornado application ``pvhpc.app`` builds, in-process: tests/harness/inprocess.py).
"""

from __future__ import annotations

import ast
import builtins
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from tornado.web import HTTPError

import pvhpc
from pvhpc.db import store as store_module
from pvhpc.errors import PvhpcError
from pvhpc.scheduler import ControllerDown, Scheduler
from pvhpc.scheduler.runners import CommandUnavailable
from pvhpc.jobs.reports import ReportError
from pvhpc.sessions.outcomes import JobRefused, NotAllowed, NotRecorded, OverLimit, WrongState
from pvhpc.sessions.service import ServiceError
from pvhpc.sessions.spec import RequestError
from pvhpc.web.errors import DATABASE_DOWN, INTERNAL, APIError, error_answer

from tests.harness.inprocess import fetch_all, make_app

PACKAGE = Path(pvhpc.__file__).parent
# Run by path on compute nodes, outside pvhpc's environment: they may not import pvhpc.errors.
STANDALONE = {"node/jobhelper.py", "node/pvweb_server.py", "node/dataroots.py", "node/pvstate.py", "node/supervisor.py",
              "node/desktop_bridge.py"}
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}


def class_definitions() -> list[tuple[str, str, list[str]]]:
    """Every class pvhpc defines, read from the source (nothing imported): (file, name, names of its bases)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))]
                found.append((path.relative_to(PACKAGE).as_posix(), node.name, bases))
    return found


def test_every_pvhpc_exception_derives_from_the_one_root():
    definitions = class_definitions()
    bases_of: dict[str, list[list[str]]] = {}
    for _, name, bases in definitions:
        bases_of.setdefault(name, []).append(bases)

    def derives(name: str, roots: set[str], seen: tuple = ()) -> bool:
        return name in roots or (name not in seen and any(derives(b, roots, seen + (name,))
                                                          for bases in bases_of.get(name, []) for b in bases))

    errors = [(file, name, bases) for file, name, bases in definitions
              if any(derives(b, BUILTIN_ERRORS) for b in bases)]
    assert {"RequestError", "ServiceError", "APIError", "ClientError", "SchemaError"} <= {e[1] for e in errors}
    outside = [f"{file}: {name}" for file, name, bases in errors
               if file not in STANDALONE and not derives(name, {"PvhpcError"})]
    assert not outside, f"exception classes that are not a pvhpc.errors.PvhpcError: {outside}"


@pytest.mark.parametrize("error, status, body", [
    (RequestError("must not be negative", field="gpus"), 400,
     {"error": "gpus: must not be negative", "field": "gpus"}),
    (RequestError("you already have 4 live sessions", status=429), 429, {"error": "you already have 4 live sessions"}),
    (ServiceError("Slurm refused the job: bad account", status=400), 400,
     {"error": "Slurm refused the job: bad account"}),
    (ServiceError("the scheduler did not answer, nothing was queued"), 503,
     {"error": "the scheduler did not answer, nothing was queued"}),
    (NotAllowed("unknown session or wrong report token"), 403, {"error": "unknown session or wrong report token"}),
    (WrongState("the session has ended"), 409, {"error": "the session has ended"}),
    (OverLimit("4 more GPUs would make 6", field="gpus"), 429,
     {"error": "gpus: 4 more GPUs would make 6", "field": "gpus"}),
    (JobRefused("Slurm refused the job: bad account"), 400, {"error": "Slurm refused the job: bad account"}),
    (NotRecorded("Slurm gave job 4 its new walltime of 90 min, but pvhpc could not record it"), 503,
     {"error": "Slurm gave job 4 its new walltime of 90 min, but pvhpc could not record it", "retry_after": 2}),
    (ReportError("must be a node name", field="node"), 400, {"error": "node: must be a node name", "field": "node"}),
    (APIError("too many requests", status=429, extra={"retry_after": 7}), 429,
     {"error": "too many requests", "retry_after": 7}),
    (CommandUnavailable("sbatch did not finish within 30 s"), 503, {"error": "sbatch did not finish within 30 s"}),
    (PvhpcError("a status no HTTP answer has", status=0), 500, {"error": "a status no HTTP answer has"}),
    (HTTPError(404, "log only: /srv/static/x.css"), 404, {"error": "not found: GET /static/x.css"}),
    (OperationalError("SELECT 1", {}, Exception("database is locked")), 503,
     {"error": DATABASE_DOWN, "retry_after": 2}),
    (ZeroDivisionError("division by zero"), 500, {"error": INTERNAL}),
])
def test_each_family_of_error_answers_with_its_status_message_and_field(error, status, body):
    answer = error_answer(error, 500, "GET", "/static/x.css")
    assert (answer.status, answer.body) == (status, body)
    assert answer.headers.get("Retry-After") == (str(body["retry_after"]) if "retry_after" in body else None)


def test_a_method_the_url_does_not_take_names_the_methods_it_does():
    answer = error_answer(HTTPError(405), 405, "PUT", "/api/v1/sessions", allowed=("GET", "POST"))
    assert answer.status == 405 and answer.headers["Allow"] == "GET, POST"
    assert answer.body == {"error": "method not allowed: PUT /api/v1/sessions (this URL takes GET, POST)"}


def test_one_argument_order_message_first():
    error = RequestError("must be minutes or HH:MM:SS", field="walltime")
    assert (error.message, error.field, error.status, str(error)) == (
        "must be minutes or HH:MM:SS", "walltime", 400, "walltime: must be minutes or HH:MM:SS")
    with pytest.raises(TypeError):
        RequestError("walltime", "must be minutes or HH:MM:SS")   # the old order (field first) is refused


# -- on the real routes ---------------------------------------------------------------------------------

@pytest.fixture
def service(tmp_path, monkeypatch):
    """No scheduler at all (the base class answers nothing): none of these requests may get that far."""
    monkeypatch.setattr(store_module, "LOCK_WAIT_SECONDS", 1)   # a locked database answers after 1 s, not 3
    return make_app(tmp_path, Scheduler()), tmp_path / "db.sqlite"


def answer(response) -> tuple[int, dict]:
    assert response.headers["Content-Type"] == "application/json; charset=utf-8", response.body
    return response.code, json.loads(response.body)


def test_refused_requests_answer_json_with_their_reason_and_log_no_traceback(service, caplog):
    app, _ = service
    caplog.set_level(logging.DEBUG)
    responses = fetch_all(app, [
        ("PUT", "/api/v1/sessions", "{}"),
        ("PATCH", "/paraview/", "{}"),
        ("GET", "/api/v1/nothing-here", None),
        ("POST", "/api/v1/sessions", '{"application": "paraview", "gpus": -1}'),
        ("POST", "/paraview/", "not json"),
        ("DELETE", "/api/v1/sessions/no-such-id", None),
        ("GET", "/api/v1/sessions?state=sleeping", None),
        ("GET", "/static/missing.css", None),
        ("GET", "/proxy?sessionId=no-such-id&path=ws", None),
        ("POST", "/proxy?sessionId=no-such-id&path=ws", "x"),
    ])
    assert [answer(r) for r in responses] == [
        (405, {"error": "method not allowed: PUT /api/v1/sessions (this URL takes GET, POST)"}),
        (405, {"error": "method not allowed: PATCH /paraview/ (this URL takes POST)"}),
        (404, {"error": "no such endpoint: GET /api/v1/nothing-here"}),
        (400, {"error": "gpus: must not be negative", "field": "gpus"}),
        (400, {"error": "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"}),
        (404, {"error": "no session no-such-id"}),
        (400, {"error": "state: 'sleeping' is not a session state or 'live'", "field": "state"}),
        (404, {"error": "not found: GET /static/missing.css"}),
        (404, {"error": "no such session"}),
        (405, {"error": "method not allowed: POST /proxy (this URL takes GET)"}),
    ]
    assert responses[0].headers["Allow"] == "GET, POST"
    # The access log has each refusal; nothing else is worth a line, and no traceback.
    noise = [r for r in caplog.records if r.exc_info or (r.levelno >= logging.WARNING and r.name != "tornado.access")]
    assert not noise, caplog.text


def test_the_page_answers_its_errors_as_a_page(service):
    app, _ = service
    [response] = fetch_all(app, [("DELETE", "/", None)])
    assert response.code == 405 and response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"method not allowed: DELETE / (this URL takes GET)" in response.body


def test_a_locked_database_answers_503_with_retry_after(service):
    app, db_file = service
    holder = sqlite3.connect(db_file, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")   # another writer holds the database: pvhpc's write cannot get in
    try:
        [response] = fetch_all(app, [("POST", "/api/v1/sessions", '{"application": "paraview"}')])
    finally:
        holder.rollback()
        holder.close()
    assert answer(response) == (503, {"error": DATABASE_DOWN, "retry_after": 2})
    assert response.headers["Retry-After"] == "2"
    assert app.ctx.store.find() == [], "a refused request left a session behind"


def test_an_unexpected_error_answers_500_and_logs_its_traceback_once_without_the_request_headers(service, caplog):
    app, _ = service
    app.ctx.tracker = None   # a bug in the making: the health handler reads the tracker's counters
    caplog.set_level(logging.DEBUG)
    [response] = fetch_all(app, [("GET", "/api/v1/health", None)], headers={"Authorization": "token secret-word"})
    assert answer(response) == (500, {"error": INTERNAL})
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [(r.name, r.getMessage()) for r in tracebacks] == [("pvhpc.web", "unexpected error in GET /api/v1/health")]
    assert "secret-word" not in caplog.text


class ControllerAway(Scheduler):
    """A scheduler whose controller does not answer a submission (the one call this test lets through)."""

    async def submit(self, request):
        raise ControllerDown("slurm_submit_batch_job error: Unable to contact slurm controller")


def test_an_explained_server_side_error_answers_its_message_and_logs_one_line_without_traceback(tmp_path, caplog):
    app = make_app(tmp_path, ControllerAway())
    caplog.set_level(logging.DEBUG)
    [response] = fetch_all(app, [("POST", "/api/v1/sessions", '{"application": "paraview"}')])
    status, body = answer(response)
    assert status == 503 and body["error"].startswith("Slurm's controller cannot be reached, nothing was queued")
    lines = [r for r in caplog.records if r.name == "pvhpc.web"]
    assert [(r.levelname, r.exc_info) for r in lines] == [("INFO", None)], caplog.text
    assert "POST /api/v1/sessions answered 503: Slurm's controller cannot be reached" in lines[0].getMessage()
