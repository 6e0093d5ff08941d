"""What the fault drills (tests/test_fault_drills.py, tests/test_network_drills.py) share: a service set up for
them, and the audit of Slurm's queue against the service's store that ends each drill.

"Orphaned" compares Slurm's queue with the store itself, not with what the API shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from pvhpc.db.store import SessionRecord, Store
from pvhpc.frontends.proxymap import ProxyMapFile
from pvhpc.scheduler import JobInfo

from tests.harness.cluster import every_job, live, slow_start_jobscript

# Room for a dozen sessions of one user, and for clients that poll every 0.1-0.5 s.
DRILL_LIMITS = {"sessions_per_user": 100, "gpus_per_user": 100, "requests_per_minute": 100000}


def drill_service(service_factory, tmp_path, name: str = "svc", **overrides):
    """A test service with the Apache front end, whose map file is returned with it, and a slow-starting app.

    Application ``slow`` is the real job script with a 20 s pause before the server starts: a session that
    stays ``starting`` for a while.
    """
    map_dir = tmp_path / f"{name}-apache"
    map_dir.mkdir()
    data = tmp_path / name / "data"
    data.mkdir(parents=True)
    overrides.setdefault("applications", {
        "paraview": {"data_roots": [str(data)], "start_timeout": 120},
        "slow": {"data_roots": [str(data)], "start_timeout": 120, "jobscript": slow_start_jobscript(tmp_path)},
    })
    overrides.setdefault("limits", DRILL_LIMITS)
    svc = service_factory(name, frontend={"kind": "apache", "map_file": str(map_dir / "session-map.txt")},
                          **overrides)
    return svc, ProxyMapFile(map_dir / "session-map.txt")


def stored_sessions(svc) -> list[SessionRecord]:
    """The service's sessions as its database holds them (job names included, which the API does not show)."""
    url = yaml.safe_load(svc.config_path.read_text())["service"]["database"]
    store = Store(url)
    try:
        return store.find()
    finally:
        store.engine.dispose()


@dataclass
class JobAudit:
    """Slurm's queue against the store: every live session's job exists exactly once, and nothing else runs."""

    sessions: list[SessionRecord] = field(repr=False)
    missing: list[str] = field(default_factory=list)    # a live session whose job is not queued or running
    doubled: list[str] = field(default_factory=list)    # a session with more than one job
    orphaned: list[str] = field(default_factory=list)   # a pvhpc job queued or running with no live session
    # (A second job of a session is both: "doubled" names the session, "orphaned" the job.)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.doubled or self.orphaned)

    def __str__(self) -> str:
        return f"missing: {self.missing}; doubled: {self.doubled}; orphaned: {self.orphaned}"


def audit_jobs(cluster, svc, ignore: set[str]) -> JobAudit:
    """The audit of ``svc``'s sessions against the pvhpc jobs Slurm knows of, but those in ``ignore`` (earlier
    tests' jobs: tests.harness.cluster.known_job_ids)."""
    sessions = stored_sessions(svc)
    jobs = [j for j in every_job(cluster) if j.name.startswith("pvhpc-") and j.job_id not in ignore]
    audit = JobAudit(sessions)
    by_name: dict[str, list[JobInfo]] = {}
    for j in jobs:
        by_name.setdefault(j.name, []).append(j)
    live_sessions = {s.job_name: s for s in sessions if s.state != "ended"}
    for s in sessions:
        mine = by_name.get(s.job_name, [])
        if len(mine) > 1:
            audit.doubled.append(f"session {s.id[:6]}… ({s.state}): {[(j.job_id, j.said) for j in mine]}")
    for s in live_sessions.values():
        running = [j.job_id for j in by_name.get(s.job_name, []) if live(j)]
        if s.job_id not in running:
            audit.missing.append(f"session {s.id[:6]}… ({s.state}, job {s.job_id}): Slurm has {running}")
    for j in jobs:
        if live(j) and (j.name not in live_sessions or live_sessions[j.name].job_id != j.job_id):
            audit.orphaned.append(f"job {j.job_id} {j.name} {j.said}")
    return audit
