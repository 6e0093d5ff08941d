"""Scheduler backends behind one small interface (see base.py)."""

from pvhpc.scheduler.base import (  # noqa: F401
    ControllerDown,
    JobInfo,
    JobRequest,
    PartitionInfo,
    Scheduler,
    SchedulerUnavailable,
    SubmitRefused,
)


def make_scheduler(kind: str, runner, runner_for_user=None, timeout: float = 30):
    """Build the backend a site asked for: 'slurm' (command-line tools) or 'pyslurm'."""
    if kind == "slurm":
        from pvhpc.scheduler.slurm_cli import SlurmCLI

        return SlurmCLI(runner, timeout=timeout, runner_for_user=runner_for_user)
    if kind == "pyslurm":
        from pvhpc.scheduler.pyslurm_backend import PySlurm

        return PySlurm()
    raise ValueError(f"unknown scheduler backend {kind!r} (choose 'slurm' or 'pyslurm')")
