"""More time over HTTP and from the command line, in-process (tests/harness/inprocess.py): pvhpc's own routes,
handlers, service and store, with a scheduler that records its calls. Every refusal names what was wrong and
asks nothing of Slurm; another user's session is answered as one that does not exist."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from datetime import timedelta

import prometheus_client

from pvhpc.cli import build_parser
from pvhpc.db.store import SessionRecord, utcnow

from tests.fakes import TimeLimitScheduler
from tests.harness.inprocess import fetch_all, make_app, served

ME = pwd.getpwuid(os.geteuid()).pw_name   # auth.kind local: the service's own account asks
PARTITIONS = {"cpu": {"extend_walltime": "operator", "walltime": {"default": 60, "max": 120},
                      "extend_walltime_max": 90},
              "fixed": {}}


def add(app, i: int, user: str = ME, state: str = "ready", partition: str = "cpu", walltime: int = 60):
    app.ctx.store.add(SessionRecord(
        id=f"s{i}" + "0" * 30, user=user, application="paraview", partition=partition, gpus=0,
        walltime_minutes=walltime, request_key="k", state=state, detail="", job_name=f"pvhpc-{i}", secret="x",
        report_token_hash="h", job_id=str(40 + i), running_since=utcnow() - timedelta(minutes=1)))
    return f"s{i}" + "0" * 30


def answer(response) -> dict:
    return json.loads(response.body or b"{}")


def test_each_refusal_names_what_was_wrong_and_asks_nothing_of_slurm(tmp_path):
    sched = TimeLimitScheduler()
    app = make_app(tmp_path, sched, partitions=PARTITIONS)
    mine, bobs = add(app, 1), add(app, 2, user="bob")
    queued, fixed = add(app, 3, state="queued"), add(app, 4, partition="fixed")
    path = lambda sid: f"/api/v1/sessions/{sid}/extend"   # noqa: E731
    cases = [
        (mine, '{"minutes": 0}', 400, "minutes", "positive whole number"),
        (mine, '{"minutes": "10"}', 400, "minutes", "positive whole number"),
        (mine, '{"minutes": 2.5}', 400, "minutes", "positive whole number"),
        (mine, '{}', 400, "minutes", "missing"),
        (mine, '{"minutes": 5, "job": 1}', 400, "job", "unknown field"),
        (mine, '[5]', 400, None, "JSON object"),
        (mine, '{"minutes": 31}', 400, "minutes", "at most 30 more"),
        (fixed, '{"minutes": 5}', 403, "partition", "partition fixed does not allow more time"),
        (queued, '{"minutes": 5}', 409, "state", "the session is queued"),
        (bobs, '{"minutes": 5}', 404, None, f"no session {bobs}"),
    ]
    responses = fetch_all(app, [("POST", path(sid), body) for sid, body, *_ in cases] +
                          [("GET", f"/api/v1/sessions/{bobs}", None)])
    for (sid, body, status, field, words), response in zip(cases, responses):
        got = answer(response)
        assert (response.code, got.get("field")) == (status, field) and words in got["error"], (body, got)
    # Another user's session: the very answer a GET of it gets.
    assert answer(responses[-1]) == answer(responses[-2]) and responses[-1].code == 404
    assert sched.calls == []
    assert app.ctx.store.get(mine).walltime_minutes == 60


def test_granted_over_http_the_session_as_the_api_shows_it_and_slurms_refusal_in_its_words(tmp_path):
    sched = TimeLimitScheduler()
    app = make_app(tmp_path, sched, partitions=PARTITIONS)
    sid = add(app, 1)
    before = app.ctx.store.get(sid)

    async def run():
        async with served(app) as there:
            granted = await there.fetch("POST", f"/api/v1/sessions/{sid}/extend", {"minutes": 20})
            sched.refuse = "scontrol exited 1: slurm_update error: Access/permission denied"
            refused = await there.fetch("POST", f"/api/v1/sessions/{sid}/extend", {"minutes": 5})
            shown = await there.fetch("GET", f"/api/v1/sessions/{sid}")
            return granted, refused, shown

    granted, refused, shown = asyncio.run(run())
    got = answer(granted)
    assert granted.code == 200 and got["walltime"] == "01:20:00" and got["walltime_minutes"] == 80
    assert got["more_time"] == {"allowed": True, "most_minutes": 10, "why": None}
    assert got["ends_at"].startswith((before.running_since + timedelta(minutes=80)).isoformat()[:19])
    assert 78 * 60 < got["time_left"] <= 79 * 60
    assert refused.code == 400 and answer(refused)["field"] == "minutes"
    assert "Access/permission denied" in answer(refused)["error"]
    assert answer(shown)["walltime_minutes"] == 80   # unchanged by the refusal
    assert sched.calls == [("set_time_limit", "41", 80, "operator"), ("set_time_limit", "41", 85, "operator")]
    text = prometheus_client.generate_latest(app.ctx.metrics.registry).decode()
    for line in ('pvhpc_walltime_extensions_total{outcome="granted",partition="cpu"} 1.0',
                 'pvhpc_walltime_extensions_total{outcome="slurm_refused",partition="cpu"} 1.0',
                 'pvhpc_walltime_extended_minutes_total{partition="cpu"} 20.0',
                 'pvhpc_scheduler_calls_total{call="set_time_limit"} 2.0'):
        assert line in text, line


def test_pvhpc_status_says_what_more_time_there_is():
    from pvhpc.cli.session_format import details

    ready = {"id": "s1", "state": "ready", "more_time": {"allowed": True, "most_minutes": 30, "why": None}}
    assert "more time:   up to 30 min (pvhpc extend)" in details(ready)
    full = {**ready, "more_time": {"allowed": False, "most_minutes": 0, "why": "the most walltime (90 min)"}}
    assert "more time:   the most walltime (90 min)" in details(full)
    assert "more time" not in details({**ready, "state": "ended"}) and "more time" not in details({"id": "s"})


def test_the_command_takes_a_positive_whole_number_of_minutes(capsys):
    parser = build_parser()
    assert parser.parse_args(["extend", "Xy3k", "30"]).minutes == 30
    for bad in ("0", "-5", "1.5", "ten"):
        try:
            parser.parse_args(["extend", "Xy3k", bad])
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(bad)
        assert "positive whole number of minutes" in capsys.readouterr().err
