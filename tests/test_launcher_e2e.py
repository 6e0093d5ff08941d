"""The launcher end to end on the real cluster: real jobs, real ParaViewWeb servers, real images."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest

from pvhpc.client.api import ClientError
from pvhpc.scheduler import EndCause

from tests import backends
from tests.harness.cluster import block_gpu_partition, cancel, job, pvhpc_jobs, slow_start_jobscript
from tests.helpers import foreground_fraction, processes_of_cluster_job, render, wait_until

pytestmark = pytest.mark.cluster


def raw_post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_launcher_post_gives_a_rendering_session_and_delete_cancels_it(backend, service_factory, cluster, artifacts):
    svc = service_factory(scheduler=backends.scheduler_section(cluster, backend)).start()
    # The service says which backend it runs and which Slurm release that found (the test cluster's).
    about = svc.client().health()["scheduler"]
    assert about["backend"] == backend and about["slurm"] == str(cluster.slurm.version), about
    # Exactly what the ParaViewWeb JS client sends: its whole config, as text/plain, to /paraview/.
    status, session = raw_post(svc.url + "/paraview/", json.dumps({
        "application": "paraview", "sessionManagerURL": svc.url + "/paraview/", "secret": "client-made-up",
    }).encode())
    assert status == 200, session
    assert {"id", "sessionURL", "secret"} <= session.keys() and session["state"] == "ready"
    assert session["secret"] != "client-made-up" and len(session["secret"]) >= 24 and len(session["id"]) >= 24
    assert session["sessionURL"] == f"ws://{session['host']}:{session['port']}/ws"
    [running] = pvhpc_jobs(cluster)
    assert running.job_id == session["job_id"] and running.is_running and running.nodes in ("gpu01", "gpu02")

    image = render(session["sessionURL"], session["secret"])
    (artifacts / "cone.jpg").write_bytes(image)
    assert foreground_fraction(image) > 0.01

    client = svc.client()
    assert client.request("GET", f"/paraview/{session['id']}")["state"] == "ready"
    ended = client.request("DELETE", f"/paraview/{session['id']}")
    assert ended["state"] == "ended" and ended["end_reason"] == "cancelled" and "secret" not in ended
    wait_until(lambda: job(cluster, session["job_id"]).end in (EndCause.CANCELLED, EndCause.COMPLETED), 20,
               message="job cancelled")
    wait_until(lambda: not processes_of_cluster_job(cluster, session["job_id"]), 20, message="job processes gone")
    # The older URL without the trailing slash works too.
    status, second = raw_post(svc.url + "/paraview", b'{"application": "paraview", "partition": "cpu"}')
    assert status == 200 and second["partition"] == "cpu" and second["node"] in ("cpu01", "cpu02")
    client.request("DELETE", f"/paraview/{second['id']}")
    # Session ids and secrets never reach the service's log.
    log = svc.log.read_text()
    assert "POST /paraview/" in log and "/report" in log
    for value in (session["id"], session["secret"], second["id"], second["secret"]):
        assert value not in log


def test_native_api_pushes_every_state_and_a_full_partition_queues_with_its_reason(service_factory, cluster):
    blockers = block_gpu_partition(cluster)
    svc = service_factory().start()
    client = svc.client()
    try:
        created = client.create("paraview", partition="gpu", gpus=1, walltime="00:20:00")
        assert created["state"] in ("submitting", "queued")
        events = client.events(created["id"], timeout=120)
        seen = []
        for event in events:
            seen.append(event)
            if event["state"] == "queued" and "free nodes" in event["detail"]:
                break
        queued = seen[-1]
        assert queued["detail"] == "waiting for free nodes or GPUs"
        assert client.partitions()["partitions"][0]["now"]["gpus_free"] == 0
        cancel(cluster, blockers)
        states = []
        for event in events:
            states.append(event["state"])
            if event["state"] in ("ready", "ended"):
                break
        assert states[-1] == "ready", states
        assert "starting" in states
        ready = client.get(created["id"])
        assert [h["state"] for h in ready["history"]][:2] == ["submitting", "queued"]
        assert foreground_fraction(render(ready["sessionURL"], ready["secret"])) > 0.01
    finally:
        cancel(cluster, blockers)


def test_launcher_wait_ends_in_503_and_a_retry_attaches_instead_of_submitting_again(service_factory, cluster):
    blockers = block_gpu_partition(cluster)
    svc = service_factory(launcher_wait=3).start()
    body = json.dumps({"application": "paraview", "sessionManagerURL": "x"}).encode()
    try:
        status, first = raw_post(svc.url + "/paraview/", body)
        assert status == 503 and first["state"] == "queued" and "repeat the same request" in first["error"]
        status, again = raw_post(svc.url + "/paraview/", body)
        assert status == 503 and again["id"] == first["id"]
        assert len(pvhpc_jobs(cluster)) == 1
        cancel(cluster, blockers)

        def launch_retrying() -> dict:
            """As SmartConnect's launcherRetry does: POST again after a 503; every retry must attach, not submit."""
            ids = set()
            for _ in range(10):
                status, answer = raw_post(svc.url + "/paraview/", body)
                ids.add(answer.get("id"))
                if status == 200:
                    assert len(ids) == 1, f"a retry made a new session: {ids}"
                    return answer
                assert status == 503, answer
            raise AssertionError(f"not ready after 10 tries of {svc.config_path}")

        ready = launch_retrying()
        assert ready["id"] == first["id"] and ready["state"] == "ready"
        assert len(pvhpc_jobs(cluster)) == 1
        # Handed out: the same request now means a second session.
        second = launch_retrying()
        assert second["id"] != first["id"]
        assert len(pvhpc_jobs(cluster, "running")) == 2
    finally:
        cancel(cluster, blockers)


BAD_REQUESTS = [
    (b'{"application": "nope"}', 400, "application"),
    (b'{"application": "paraview", "partition": "huge"}', 400, "partition"),
    (b'{"application": "paraview", "gpus": 3}', 400, "gpus"),
    (b'{"application": "paraview", "walltime": "05:00:00"}', 400, "walltime"),
    (b'{"application": "paraview", "data": "../../etc/passwd"}', 400, "data"),
    (b'{"application": "paraview", "gpus": "1; scancel -u root"}', 400, "gpus"),
    (b'{"application": ', 400, None),
    (b'', 400, None),
    (b'[1, 2]', 400, None),
    (b'{"application": "paraview", "pad": "' + b"x" * 70000 + b'"}', 413, None),
]


def test_bad_requests_get_json_errors_naming_the_field_and_submit_nothing(service_factory, cluster):
    svc = service_factory().start()
    for body, status, field in BAD_REQUESTS:
        for path in ("/paraview/", "/api/v1/sessions"):
            got, answer = raw_post(svc.url + path, body)
            assert got == status, (path, body[:60], answer)
            assert "error" in answer
            if field:
                assert answer["field"] == field and answer["error"].startswith(field + ":")
    assert pvhpc_jobs(cluster) == []
    assert svc.client().list() == []


@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_restart_after_sigkill_reattaches_every_session_without_resubmitting(backend, service_factory, cluster,
                                                                            tmp_path):
    blockers = block_gpu_partition(cluster)
    data = tmp_path / "restart" / "data"
    data.mkdir(parents=True)
    svc = service_factory("restart", scheduler=backends.scheduler_section(cluster, backend), applications={
        "paraview": {"data_roots": [str(data)], "start_timeout": 120},
        "slow": {"data_roots": [str(data)], "start_timeout": 120, "jobscript": slow_start_jobscript(tmp_path)},
    })
    svc.start()
    client = svc.client()
    try:
        ready = client.launch("paraview", partition="cpu")
        starting = client.create("slow", partition="cpu")
        queued = client.create("paraview", partition="gpu")
        wait_until(lambda: client.get(starting["id"])["state"] == "starting", 30, message="slow session starting")
        wait_until(lambda: client.get(queued["id"])["state"] == "queued", 30, message="gpu session queued")
        jobs_before = sorted(j.job_id for j in pvhpc_jobs(cluster))
        assert len(jobs_before) == 3

        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        time.sleep(2)
        svc.start()
        client = svc.client()
        assert client.get(ready["id"])["state"] == "ready"
        assert client.get(starting["id"])["state"] in ("starting", "ready")
        assert client.get(queued["id"])["state"] == "queued"
        # The slow one reports after the restart (the job retries), the queued one starts when GPUs free up.
        assert client.wait(starting["id"], timeout=90)["state"] == "ready"
        cancel(cluster, blockers)
        assert client.wait(queued["id"], timeout=90)["state"] == "ready"
        assert sorted(j.job_id for j in pvhpc_jobs(cluster)) == jobs_before, "a job was lost or submitted twice"
        for s in (ready, starting, queued):
            s = client.get(s["id"])
            assert s["job_id"] in jobs_before
            assert foreground_fraction(render(s["sessionURL"], s["secret"])) > 0.01
    finally:
        cancel(cluster, blockers)


@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_scheduler_outage_keeps_sessions_as_unknown_and_they_return(backend, service_factory, cluster):
    svc = service_factory(scheduler=backends.scheduler_section(cluster, backend)).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    ctld = next(d for d in cluster.status() if d.name == "slurmctld")
    os.kill(ctld.pid, signal.SIGTERM)
    try:
        wait_until(lambda: client.get(session["id"])["state"] == "unknown", 60, message="session shown as unknown")
        during = client.get(session["id"])
        assert "cannot reach the scheduler" in during["detail"]
        # The API answers and the server still renders while Slurm is away.
        assert foreground_fraction(render(session["sessionURL"], session["secret"])) > 0.01
        time.sleep(5)
        assert client.get(session["id"])["state"] == "unknown"
    finally:
        cluster.start()
    wait_until(lambda: client.get(session["id"])["state"] == "ready", 60, message="session ready again")
    assert [j.job_id for j in pvhpc_jobs(cluster)] == [session["job_id"]], "a job was resubmitted"
    history = [h["state"] for h in client.get(session["id"])["history"]]
    assert history[-2:] == ["unknown", "ready"]


def test_job_cancelled_outside_pvhpc_ends_the_session_with_that_reason(service_factory, cluster):
    svc = service_factory().start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    cancel(cluster, [session["job_id"]])
    ended = client.wait(session["id"], until=("ended",), timeout=30)
    assert ended["end_reason"] == "cancelled_outside"
    with pytest.raises(ClientError) as e:
        client.request("GET", "/paraview/no-such-session")
    assert e.value.status == 404


def test_a_server_that_cannot_start_ends_the_session_with_the_reason(service_factory, cluster):
    import pvhpc.paths

    svc = service_factory(runtime={"pvpython": "/usr/bin/no-such-pvpython",
                                   "pythonpath": str(pvhpc.paths.runtime_dir())}).start()
    client = svc.client()
    session = client.create("paraview", partition="cpu")
    ended = client.wait(session["id"], timeout=60)
    assert ended["state"] == "ended" and ended["end_reason"] == "start_failed"
    assert "no-such-pvpython" in ended["detail"] or "exited" in ended["detail"]
    assert "no-such-pvpython" in client.log(session["id"])
    wait_until(lambda: not pvhpc_jobs(cluster), 20, message="the failed job is gone")


def test_a_server_that_never_reports_is_cancelled_after_the_start_timeout(service_factory, cluster, tmp_path):
    data = tmp_path / "slow" / "data"
    data.mkdir(parents=True)
    svc = service_factory("slow", applications={"slow": {
        "data_roots": [str(data)], "start_timeout": 5, "jobscript": slow_start_jobscript(tmp_path)}}).start()
    client = svc.client()
    session = client.create("slow", partition="cpu")
    ended = client.wait(session["id"], timeout=60)
    assert (ended["state"], ended["end_reason"]) == ("ended", "start_timeout")
    wait_until(lambda: not pvhpc_jobs(cluster), 20, message="the job was cancelled")


def test_a_lost_sbatch_answer_is_found_by_job_name_not_submitted_twice(cluster, runtime_dir, tmp_path):
    """sbatch queued the job but its answer never came back (a timeout): the session attaches to that job."""
    from pvhpc import config as site_config
    from pvhpc.sessions.events import EventBus
    from pvhpc.scheduler.runners import CommandUnavailable, LocalRunner
    from pvhpc.scheduler.slurm_cli import SlurmCLI
    from pvhpc.sessions.service import SessionService
    from pvhpc.sessions.spec import parse_spec
    from pvhpc.db.store import Store

    from tests.harness.service import site_config as make_site_config

    class AnswerLostRunner(LocalRunner):
        async def run(self, argv, input=None, timeout=30):
            result = await super().run(argv, input=input, timeout=timeout)
            if argv[0] == "sbatch":
                raise CommandUnavailable("sbatch did not finish within 30 s")
            return result

    cfg = site_config.parse(make_site_config(cluster, tmp_path, runtime_dir), "test")
    store = Store(cfg.service.database_url)
    store.open()
    slurm = SlurmCLI(AnswerLostRunner(cluster.environment()))
    service = SessionService(cfg, store, slurm, EventBus())
    record = asyncio.run(service.create("alice", parse_spec(cfg, {"application": "paraview", "partition": "cpu"}, True)))
    try:
        assert record.state == "queued" and record.job_id
        jobs = [j for j in pvhpc_jobs(cluster) if j.name == record.job_name]
        assert [j.job_id for j in jobs] == [record.job_id], "the job was lost or doubled"
    finally:
        asyncio.run(service.cancel(store.get(record.id)))
