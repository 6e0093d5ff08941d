"""Slurm through pyslurm's C bindings: no process per call, for sites that can build pyslurm.

Optional. pyslurm X.Y builds only against Slurm X.Y, and PyPI serves only recent
releases (23.x and later API: JobSubmitDescription, Jobs.load, Partitions.load),
so this backend is for sites whose Slurm matches an installable pyslurm. It
answers the same interface as the command-line backend; pyslurm's calls block,
so each runs in a worker thread. Where ``import pyslurm`` fails, choosing it is
a configuration error with that reason.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial

from pvhpc.scheduler.base import JobInfo, JobRequest, PartitionInfo, Scheduler, SchedulerUnavailable, SubmitRefused
from pvhpc.scheduler.slurm_cli import _gres_gpus


class PySlurmUnavailable(Exception):
    pass


def _import():
    try:
        import pyslurm  # noqa: F401
    except ImportError as e:
        raise PySlurmUnavailable(
            f"scheduler.backend 'pyslurm' needs the pyslurm module matching this Slurm release: {e}"
        ) from None
    return pyslurm


def _state(value) -> str:
    return str(value or "").split()[0].upper() if value else ""


def _when(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(int(value))
    except (TypeError, ValueError, OSError):
        return None


class PySlurm(Scheduler):
    name = "pyslurm"

    def __init__(self):
        self.slurm = _import()

    async def _call(self, fn, *args, **kwargs):
        try:
            return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kwargs))
        except self.slurm.RPCError as e:  # pyslurm's error for a failed call to slurmctld
            text = str(e)
            if "Unable to contact" in text or "timed out" in text.lower():
                raise SchedulerUnavailable(text) from None
            raise

    def _job_info(self, job) -> JobInfo:
        state = _state(getattr(job, "state", ""))
        return JobInfo(
            job_id=str(job.id), state=state, reason=str(getattr(job, "state_reason", "") or ""),
            nodes=str(getattr(job, "allocated_nodes", None) or getattr(job, "nodes", "") or ""),
            name=str(getattr(job, "name", "") or ""),
            expected_start=_when(getattr(job, "start_time", None)) if state == "PENDING" else None,
        )

    async def submit(self, request: JobRequest) -> str:
        description = self.slurm.JobSubmitDescription(
            name=request.name, partition=request.partition, time_limit=request.time_limit_minutes,
            standard_output=request.output, cpus_per_task=request.cpus, nodes=1, ntasks=1,
            account=request.account, qos=request.qos, comment=request.comment,
            working_directory=request.workdir, memory_per_node=request.memory_mb,
            gres_per_node=(f"gpu:{request.gpu_type}:{request.gpus}" if request.gpu_type else f"gpu:{request.gpus}")
            if request.gpus else None,
            script=request.script,
        )
        try:
            return str(await self._call(description.submit))
        except SchedulerUnavailable:
            raise
        except Exception as e:
            raise SubmitRefused(str(e)) from None

    async def _all_jobs(self) -> list[JobInfo]:
        try:
            jobs = await self._call(self.slurm.Jobs.load)
        except SchedulerUnavailable:
            raise
        except Exception as e:
            raise SchedulerUnavailable(f"pyslurm Jobs.load failed: {e}") from None
        return [self._job_info(j) for j in jobs.values()]

    async def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        # One RPC loads every job: the same cost to slurmctld however many sessions there are.
        wanted = set(job_ids)
        return {j.job_id: j for j in await self._all_jobs() if j.job_id in wanted}

    async def find_by_name(self, names: list[str]) -> dict[str, JobInfo]:
        wanted = set(names)
        found: dict[str, JobInfo] = {}
        for job in await self._all_jobs():
            if job.name in wanted and (job.name not in found or not job.is_finished):
                found[job.name] = job
        return found

    async def lookup_finished(self, job_id: str) -> JobInfo | None:
        try:
            job = await self._call(self.slurm.db.Job.load, int(job_id))
        except Exception:
            return None  # no accounting database, or no record of it
        return self._job_info(job)

    async def cancel(self, job_id: str, user: str | None = None) -> None:
        # pyslurm acts as the service's own user; sites that run jobs as their users use the slurm backend.
        try:
            await self._call(self.slurm.Job(int(job_id)).cancel)
        except SchedulerUnavailable:
            raise
        except Exception as e:
            if "Invalid job id" not in str(e) and "already completed" not in str(e):
                raise SchedulerUnavailable(f"cancel {job_id}: {e}") from None

    async def node_addresses(self) -> dict[str, set[str]]:
        try:
            nodes = await self._call(self.slurm.Nodes.load)
        except SchedulerUnavailable:
            raise
        except Exception as e:
            raise SchedulerUnavailable(f"pyslurm Nodes.load failed: {e}") from None
        return {n.name: {n.name, *(a for a in (getattr(n, "address", None), getattr(n, "hostname", None)) if a)}
                for n in nodes.values()}

    async def partitions(self) -> list[PartitionInfo]:
        try:
            parts = await self._call(self.slurm.Partitions.load)
            nodes = await self._call(self.slurm.Nodes.load)
        except SchedulerUnavailable:
            raise
        except Exception as e:
            raise SchedulerUnavailable(f"pyslurm Partitions.load failed: {e}") from None
        out = []
        for p in parts.values():
            members = [n for n in nodes.values() if p.name in (getattr(n, "partitions", None) or [])]
            gpu_types: dict[str, int] = {}
            total = used = 0
            for n in members:
                for gtype, count in _gres_gpus(",".join(getattr(n, "configured_gres", None) or [])):
                    gpu_types[gtype] = max(gpu_types.get(gtype, 0), count)
                    total += count
                used += sum(c for _, c in _gres_gpus(",".join(getattr(n, "allocated_gres", None) or [])))
            max_time = getattr(p, "max_time", None)
            default_time = getattr(p, "default_time", None)
            out.append(PartitionInfo(
                name=p.name, available=_state(getattr(p, "state", "")) == "UP",
                max_time_minutes=max_time if isinstance(max_time, int) else None,
                default_time_minutes=default_time if isinstance(default_time, int) else None,
                nodes=tuple(n.name for n in members),
                idle_nodes=sum(1 for n in members if _state(getattr(n, "state", "")) == "IDLE"),
                gpu_types=gpu_types, gpus_total=total, gpus_used=used,
            ))
        return out
