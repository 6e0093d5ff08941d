"""Prove that a partition can run a ParaViewWeb session: submit a session's job as the service would,
wait for its ready line, authenticate, render one image, cancel.

Used by ``pvhpc demo`` and by staff checks; it goes around the pvhpc service on
purpose, so it tells apart "the nodes cannot run ParaViewWeb" from "pvhpc is
misconfigured".
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
import getpass
from dataclasses import dataclass, field, replace
from pathlib import Path

from pvhpc.client.wslink import WslinkClient
from pvhpc.config import SiteConfig
from pvhpc.errors import PvhpcError
from pvhpc.paths import SERVER_SCRIPT
from pvhpc.scheduler import Scheduler
from pvhpc.sessions.job import build_job
from pvhpc.sessions.service import new_secret
from pvhpc.sessions.spec import parse_spec

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


def probe_application(config: SiteConfig, partition: str) -> str:
    """The application a probe of ``partition`` runs: pvhpc's own server where the site offers it there (the probe
    talks to it with pvhpc's wslink client), else the first application the partition runs."""
    allowed = [app for app in config.applications.values() if partition in app.partitions]
    if not allowed:
        raise ProbeFailed(f"no application of this site runs on partition {partition!r}")
    own = [app for app in allowed if Path(app.server_script) == SERVER_SCRIPT]
    return (own or allowed)[0].name


async def probe_partition(config: SiteConfig, scheduler: Scheduler, partition: str, timeout: float = 180) -> ProbeResult:
    """Submit one session's job exactly as the service builds it (pvhpc/sessions/job.py), but reporting to no
    one: the job only prints its ready line, which this reads from the job's output."""
    workdir = Path(tempfile.mkdtemp(prefix="pvhpc-probe-"))
    workdir.chmod(0o755)
    secret = new_secret()
    # Around the service: no report URL (the launcher then only prints), and the job is the caller's own.
    config = replace(config, service=replace(config.service, callback_urls=()),
                     scheduler=replace(config.scheduler, submit_as="service"))
    spec = parse_spec(config, {"application": probe_application(config, partition), "partition": partition},
                      strict=True)
    job = build_job(config, spec, user=getpass.getuser(), session_id="probe", job_name="pvhpc-probe",
                    secret=secret, report_token="", save_state=False)   # a probe leaves no saved state behind
    output = workdir / "job.out"
    started = time.monotonic()
    job_id = await scheduler.submit(replace(job, output=str(output), time_limit_minutes=min(job.time_limit_minutes, 10)))
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
