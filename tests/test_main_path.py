"""The main path, in-process and in a few seconds: a ParaViewWeb client's POST /paraview/ creates a session and
waits; its job is queued, starts, and reports ready through the report endpoint with the token its script holds;
the waiting POST then hands the session out (its URL and secret), the native API shows it ready, and a cancel
ends it and its job. pvhpc's own application, store and routes (tests/harness/inprocess.py); only the scheduler
is a stand-in (tests/fakes.py). The same path on the real cluster is tests/test_launcher_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import shlex

from tests.fakes import SubmittingScheduler
from tests.harness.inprocess import make_app, served

NODE = "localhost"   # the job's node: this very host, so the ready report's loopback address is its own


def script_exports(script: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of a rendered job script, as the shell reads them."""
    values = {}
    for line in script.splitlines():
        if line.startswith("export ") and "=" in line:
            for word in shlex.split(line[len("export "):]):
                name, _, value = word.partition("=")
                values[name] = value
    return values


async def until(predicate, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)
    return value


def test_a_session_is_created_starts_reports_ready_is_handed_out_and_cancelled(tmp_path):
    scheduler = SubmittingScheduler(nodes={NODE: {NODE, "127.0.0.1"}})
    app = make_app(tmp_path, scheduler, service={"launcher_wait": 20, "job_output_dir": str(tmp_path / "jobs")})

    async def main_path() -> None:
        async with served(app) as there:
            # An unmodified ParaViewWeb client launches, and waits for the answer.
            launch = asyncio.ensure_future(there.fetch("POST", "/paraview/", {"application": "paraview"}))
            job_id = await until(lambda: next(iter(scheduler.submitted), None))
            [session] = json.loads((await there.fetch("GET", "/api/v1/sessions")).body)["sessions"]
            assert (session["state"], session["job_id"]) == ("queued", job_id)

            # Slurm finds room: the tracker sees the job run.
            scheduler.start(job_id, NODE)
            await app.tracker.poll_once()
            session = json.loads((await there.fetch("GET", f"/api/v1/sessions/{session['id']}")).body)
            assert session["state"] == "starting" and not launch.done()

            # The job's server listens: the job reports it, with the token its script was given.
            exports = script_exports(scheduler.submitted[job_id].script)
            token = exports["PVHPC_REPORT_TOKEN"]
            report = f"/api/v1/sessions/{session['id']}/report"
            ready = {"event": "ready", "host": "127.0.0.1", "port": 40000, "job_id": job_id, "node": NODE}
            refused = await there.fetch("POST", report, ready, headers={"Authorization": "token not-the-token"})
            assert refused.code == 403 and not launch.done()
            taken = await there.fetch("POST", report, ready, headers={"Authorization": f"token {token}"})
            assert (taken.code, json.loads(taken.body)) == (200, {"ok": True})

            # The waiting POST /paraview/ answers: the session, ready, handed out with its secret.
            answer = await asyncio.wait_for(launch, 10)
            handed = json.loads(answer.body)
            assert answer.code == 200, handed
            assert handed["id"] == session["id"] and handed["state"] == "ready" and handed["secret"]
            assert handed["sessionURL"].endswith(f"/proxy?sessionId={session['id']}&path=ws")
            assert (handed["host"], handed["port"], handed["node"]) == ("127.0.0.1", 40000, NODE)
            assert token not in answer.body.decode(), "the job's report token left the service"

            # The native API says the same; the launcher's own GET too.
            native = json.loads((await there.fetch("GET", f"/api/v1/sessions/{session['id']}")).body)
            assert (native["state"], native["job_id"], native["node"]) == ("ready", job_id, NODE)
            again = json.loads((await there.fetch("GET", f"/paraview/{session['id']}")).body)
            assert again["secret"] == handed["secret"] and again["sessionURL"] == handed["sessionURL"]
            # The front end routes it now.
            assert app.ctx.frontend.routes.get(session["id"]) is not None

            # Cancelled: the session ends, its job is cancelled, its route is gone.
            cancelled = await there.fetch("DELETE", f"/api/v1/sessions/{session['id']}")
            ended = json.loads(cancelled.body)
            assert cancelled.code == 200 and (ended["state"], ended["end_reason"]) == ("ended", "cancelled"), ended
            assert ("cancel", job_id) in scheduler.calls and job_id not in scheduler.jobs
            assert app.ctx.frontend.routes.get(session["id"]) is None
            late = await there.fetch("POST", report, {"event": "exited", "code": 0},
                                     headers={"Authorization": f"token {token}"})
            assert late.code == 409, "an ended session took a report"

    asyncio.run(main_path())
