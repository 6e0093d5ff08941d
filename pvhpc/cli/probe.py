"""Prove that a partition can run a ParaViewWeb session: submit the session job script directly,
wait for its ready line, authenticate, render one image, cancel.

Used by ``pvhpc demo`` and by staff checks; it goes around the pvhpc service on
purpose, so it tells apart "the nodes cannot run ParaViewWeb" from "pvhpc is
misconfigured".
"""

from __future__ import annotations

import asyncio
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pvhpc.errors import PvhpcError
from pvhpc.paths import JOB_HELPER, JOBSCRIPTS_DIR, SERVER_SCRIPT
from pvhpc.sessions.jobscript import JobTemplate
from pvhpc.scheduler import JobRequest, Scheduler
from pvhpc.client.wslink import WslinkClient

READY = re.compile(r"PVHPC_READY host=(\S+) port=(\d+) node=(\S*)")
FAILED = re.compile(r"PVHPC_FAILED (.*)")


class ProbeFailed(PvhpcError):
    """A partition's probe session did not get as far as a rendered image; the message says where it stopped."""


@dataclass
class ProbeResult:
    job_id: str
    node: str
    host: str
    port: int
    image: bytes
    timings: dict[str, float] = field(default_factory=dict)


async def probe_partition(
    scheduler: Scheduler,
    runtime_dir: Path,
    partition: str = "gpu",
    gpus: int = 1,
    render_mode: str = "xvfb",
    pvpython: str = "/usr/bin/pvpython",
    timeout: float = 180,
) -> ProbeResult:
    workdir = Path(tempfile.mkdtemp(prefix="pvhpc-probe-"))
    secret = secrets.token_urlsafe(24)
    script = JobTemplate(JOBSCRIPTS_DIR / "paraview-web.sh").render(dict(
        pvpython=pvpython, server_script=SERVER_SCRIPT, helper_python="/usr/bin/python3",
        job_helper=JOB_HELPER, data_dir=workdir, load_file="", report_url="", render_mode=render_mode,
        start_timeout=int(timeout), idle_timeout=120, secret=secret, report_token="", pythonpath=runtime_dir,
        log_file="",
    ))
    output = workdir / "job.out"
    started = time.monotonic()
    job_id = await scheduler.submit(JobRequest(
        script=script, name="pvhpc-probe", partition=partition, gpus=gpus, time_limit_minutes=10, output=str(output),
    ))
    timings = {"submitted": time.monotonic() - started}
    try:
        deadline = time.monotonic() + timeout
        while True:
            text = output.read_text(errors="replace") if output.exists() else ""
            ready = READY.search(text)
            if ready:
                break
            failed = FAILED.search(text)
            if failed:
                raise ProbeFailed(f"job {job_id} failed to start ParaViewWeb: {failed.group(1)}")
            if time.monotonic() > deadline:
                info = (await scheduler.query([job_id])).get(job_id)
                state = f"{info.state} ({info.reason})" if info else "gone from the queue"
                raise ProbeFailed(f"job {job_id} not ready within {timeout:.0f} s; it is {state}; output: {text[-500:]}")
            await asyncio.sleep(0.1)
        timings["ready"] = time.monotonic() - started
        host, port, node = ready.group(1), int(ready.group(2)), ready.group(3)
        client = await WslinkClient.connect(f"ws://{host}:{port}/ws", secret)
        try:
            await client.create_source("Sphere")
            image = await client.render((400, 300))
        finally:
            client.close()
        timings["first_image"] = time.monotonic() - started
        return ProbeResult(job_id, node, host, port, image, timings)
    finally:
        await scheduler.cancel(job_id)
