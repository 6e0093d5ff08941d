"""Prove that a partition can run a ParaViewWeb session: submit a session's job as the service would,
wait for its ready line, authenticate, render one image, cancel.

Used by ``pvhpc demo`` and by staff checks; it goes around the pvhpc service on
purpose, so it tells apart "the nodes cannot run ParaViewWeb" from "pvhpc is
misconfigured".

It also proves the path a session's job reports on: before anything else the job
GETs each ``service.callback_url``'s health endpoint (which answers anyone) from
the node, under the job helper's python and the job's environment (its proxies
too), as the job helper's reports go, and prints the outcome, which the probe
reads with the ready line. The URLs name no session and carry no secret, so they
may stand on the job's command line.
"""

from __future__ import annotations

import asyncio
import re
import shlex
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
CALLBACK = re.compile(r"^PVHPC_CALLBACK node=(\S*) url=(\S+) (?:(ok)|failed (.*))$", re.MULTILINE)
HEALTH_PATH = "/api/v1/health"

# Standard library only: it runs under the node's runtime.helper_python, as the job helper does. Any answer but
# pvhpc's own ({"ok": true}) is a failure: another server on that port would take no report either.
CALLBACK_CHECK = f"""\
import json, os, sys, urllib.request
node = os.environ.get("SLURMD_NODENAME", "")
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url + "{HEALTH_PATH}", timeout=5) as answer:
            body = answer.read(65536)
    except Exception as e:
        outcome = "failed " + (" ".join(str(e).split()) or type(e).__name__)
    else:
        try:
            ok = json.loads(body.decode()).get("ok") is True
        except Exception:
            ok = False
        outcome = "ok" if ok else "failed it answers {HEALTH_PATH}, but not as pvhpc does"
    print("PVHPC_CALLBACK node=%s url=%s %s" % (node, url, outcome), flush=True)
"""


def with_callback_check(script: str, python: str, urls: tuple[str, ...]) -> str:
    """``script`` that first runs CALLBACK_CHECK on ``urls``: right after its leading comments, since sbatch reads
    #SBATCH lines only up to the first command. A plain sh command, whatever shell a site's template is for."""
    if not urls:
        return script
    lines = script.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")),
                 len(lines))
    command = shlex.join([python, "-c", CALLBACK_CHECK, *urls]) + " || true\n"
    return "".join(lines[:first]) + command + "".join(lines[first:])


def callback_outcomes(output: str) -> dict[str, tuple[str, str]]:
    """What the job printed of each callback URL: url -> (node, "" when pvhpc answered, else why not)."""
    return {m.group(2): (m.group(1), "" if m.group(3) else m.group(4)) for m in CALLBACK.finditer(output)}


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


class PartitionProbe:
    """One probe of a partition. ``callbacks`` holds what the job said so far of each callback URL, also when the
    probe fails later: a node may reach pvhpc and still not run ParaView, or the other way round."""

    def __init__(self, config: SiteConfig, scheduler: Scheduler, partition: str, timeout: float = 180):
        self.config, self.scheduler, self.partition, self.timeout = config, scheduler, partition, timeout
        self.callbacks: dict[str, tuple[str, str]] = {}

    async def run(self) -> ProbeResult:
        """Submit one session's job exactly as the service builds it (pvhpc/sessions/job.py), but reporting to no
        one: the job only prints its ready line, which this reads from the job's output."""
        scheduler, partition, timeout = self.scheduler, self.partition, self.timeout
        workdir = Path(tempfile.mkdtemp(prefix="pvhpc-probe-"))
        workdir.chmod(0o755)
        secret = new_secret()
        # Around the service: no report URL (the launcher then only prints), and the job is the caller's own.
        config = replace(self.config, service=replace(self.config.service, callback_urls=()),
                         scheduler=replace(self.config.scheduler, submit_as="service"))
        spec = parse_spec(config, {"application": probe_application(config, partition), "partition": partition},
                          strict=True)
        job = build_job(config, spec, user=getpass.getuser(), session_id="probe", job_name="pvhpc-probe",
                        secret=secret, report_token="", save_state=False)   # a probe leaves no saved state behind
        script = with_callback_check(job.script, config.runtime.helper_python, self.config.service.callback_urls)
        output = workdir / "job.out"
        started = time.monotonic()
        job_id = await scheduler.submit(replace(job, script=script, output=str(output),
                                                time_limit_minutes=min(job.time_limit_minutes, 10)))
        timings = {"submitted": time.monotonic() - started}
        try:
            deadline = time.monotonic() + timeout
            while True:
                text = output.read_text(errors="replace") if output.exists() else ""
                self.callbacks = callback_outcomes(text)
                ready = READY.search(text)
                if ready:
                    break
                failed = FAILED.search(text)
                if failed:
                    raise ProbeFailed(f"job {job_id} failed to start ParaViewWeb: {failed.group(1)}")
                if time.monotonic() > deadline:
                    info = (await scheduler.query([job_id])).get(job_id)
                    state = f"{info.state} ({info.reason})" if info else "gone from the queue"
                    raise ProbeFailed(f"job {job_id} not ready within {timeout:.0f} s; it is {state}; "
                                      f"output: {text[-500:]}")
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
