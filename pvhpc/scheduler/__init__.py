"""Scheduler backends behind one small interface (see base.py), found as plug-ins by name."""

from pvhpc.scheduler.base import (  # noqa: F401
    ChangeRefused,
    ControllerDown,
    EndCause,
    JobInfo,
    JobRequest,
    JobState,
    NoAnswer,
    PartitionInfo,
    QueueReason,
    Scheduler,
    SchedulerUnavailable,
    SubmitRefused,
    TIME_LIMIT_WAYS,
)


def make_scheduler(scheduler_config, runner, runner_for_user=None) -> Scheduler:
    """Build the backend a site's ``scheduler:`` section names (``backend``: 'slurm', 'pyslurm', or one a
    site installed in the entry-point group ``pvhpc.schedulers``)."""
    from pvhpc import plugins

    backend = plugins.load(plugins.SCHEDULERS, scheduler_config.backend)
    return backend.from_config(scheduler_config, runner, runner_for_user)
