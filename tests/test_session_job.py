"""The session job script on the real cluster: a real ParaViewWeb server on a GPU node."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest

from pvhpc.paths import JOB_HELPER, JOBSCRIPTS_DIR, SERVER_SCRIPT
from pvhpc.jobs.template import JobTemplate
from pvhpc.scheduler import JobRequest
from pvhpc.scheduler.base import EndCause, JobState
from pvhpc.client.wslink import WslinkClient, WslinkError

from tests.helpers import foreground_fraction, processes_of_job, run, wait_for_line, wait_until

pytestmark = pytest.mark.cluster


def render_job(runtime_dir, data_dir, secret):
    """pvhpc's own server, as its default application command runs it (no report URL: the job only prints)."""
    command = ["/usr/bin/pvpython", str(SERVER_SCRIPT), "--host", "0.0.0.0", "--port", "${port}", "--timeout", "600",
               "--data", str(data_dir), "--ready-file", "${port_file}"]
    return JobTemplate(JOBSCRIPTS_DIR / "paraview-web.sh").render(dict(
        helper_python="/usr/bin/python3", job_helper=JOB_HELPER, launcher=JOB_HELPER.parent / "supervisor.py",
        command=json.dumps(command), ready=json.dumps({"port_file": True}), report_url="", render_mode="xvfb",
        start_timeout=120, secret=secret, report_token="unused", pythonpath=runtime_dir, venv="", log_file="",
        parallel="", server_listen="node", state_save="", state_load="", continues="", state_roots="", data_roots="",
        input_idle="", idle_timeout="", watchdog="", modules="", modules_init="", module_paths="",
    ))


def test_gpu_job_serves_rendered_images_and_cleans_up(slurm, runtime_dir, tmp_path, artifacts):
    secret = secrets.token_urlsafe(24)
    output = tmp_path / "job.out"
    job_id = run(slurm.submit(JobRequest(
        script=render_job(runtime_dir, tmp_path, secret), name=f"pvhpc-test-{uuid.uuid4().hex[:8]}",
        partition="gpu", gpus=1, time_limit_minutes=10, output=str(output),
    )))
    try:
        ready = wait_for_line(output, r"PVHPC_READY host=(\S+) port=(\d+) node=(\S+)", timeout=120,
                              explain=lambda: f"job: {run(slurm.query([job_id]))}")
        host, port, node = ready.group(1), int(ready.group(2)), ready.group(3)
        info = run(slurm.query([job_id]))[job_id]
        assert info.state is JobState.RUNNING
        assert info.nodes in ("gpu01", "gpu02") and node == info.nodes

        async def session():
            with pytest.raises(WslinkError, match="Authentication failed"):
                await WslinkClient.connect(f"ws://{host}:{port}/ws", "not-the-secret")
            client = await WslinkClient.connect(f"ws://{host}:{port}/ws", secret)
            try:
                await client.create_source("Sphere")
                return await client.render((400, 300))
            finally:
                client.close()

        image = run(session())
        (artifacts / "sphere.jpg").write_bytes(image)
        assert foreground_fraction(image) > 0.02, "the rendered image is (almost) all background"
        assert processes_of_job(job_id), "no process of the job found while it runs"
    finally:
        run(slurm.cancel(job_id))
    wait_until(lambda: run(slurm.query([job_id]))[job_id].is_finished, 30, message="job finished after scancel")
    try:
        wait_until(lambda: not processes_of_job(job_id), 20)
    except AssertionError:
        pytest.fail(f"processes of cancelled job {job_id} left behind: {processes_of_job(job_id)}")


def test_job_reports_failure_when_server_cannot_start(slurm, runtime_dir, tmp_path):
    """A data directory that does not exist: the server refuses before it listens, the job says why and ends."""
    output = tmp_path / "job.out"
    job_id = run(slurm.submit(JobRequest(
        script=render_job(runtime_dir, tmp_path / "missing", "s3cret-value"), name="pvhpc-test-fail",
        partition="cpu", time_limit_minutes=5, output=str(output),
    )))
    failed = wait_for_line(output, r"PVHPC_FAILED (.*)", timeout=90)
    assert "is not an existing directory" in failed.group(1)
    wait_until(lambda: run(slurm.query([job_id]))[job_id].is_finished, 30, message="job ended")
    assert run(slurm.query([job_id]))[job_id].end is EndCause.FAILED
