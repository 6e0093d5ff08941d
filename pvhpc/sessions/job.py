"""Turn a validated session into the job pvhpc submits: script values and scheduler options."""

from __future__ import annotations

from pvhpc.sessions import joblogs
from pvhpc.config import SiteConfig
from pvhpc.scheduler import JobRequest
from pvhpc.sessions.spec import SessionSpec


def report_urls(config: SiteConfig, session_id: str) -> str:
    """Where the job reports, space-separated: one URL per instance, tried in order by the job helper."""
    return " ".join(f"{url}/api/v1/sessions/{session_id}/report" for url in config.service.callback_urls)


def build_job(config: SiteConfig, spec: SessionSpec, user: str, session_id: str, job_name: str, secret: str,
              report_token: str) -> JobRequest:
    app = config.applications[spec.application]
    partition = config.partitions[spec.partition]
    per_user = joblogs.per_user(config)
    log = joblogs.log_path(config, user, job_name)
    script = config.template(app).render({
        "pvpython": config.runtime.pvpython,
        "server_script": app.server_script,
        "helper_python": config.runtime.helper_python,
        "job_helper": config.runtime.job_helper,
        "data_dir": spec.data_root,
        "load_file": spec.data_file or "",
        "report_url": report_urls(config, session_id),
        "render_mode": partition.render,
        "start_timeout": app.start_timeout,
        "idle_timeout": app.idle_timeout,
        "secret": secret,
        "report_token": report_token,
        "pythonpath": config.runtime.pythonpath,
        # Jobs run as their users write their own log under the user's home (Slurm would need the
        # directory to exist before the job starts); the service account's jobs use Slurm's --output.
        "log_file": str(log) if per_user else "",
    })
    return JobRequest(
        script=script,
        name=job_name,
        partition=partition.slurm_partition,
        time_limit_minutes=spec.walltime_minutes,
        output="/dev/null" if per_user else str(log),
        gpus=spec.gpus,
        gpu_type=partition.gpu_type if spec.gpus else None,
        cpus=partition.cpus,
        memory_mb=partition.memory_mb,
        account=spec.account,
        qos=spec.qos,
        comment=f"pvhpc {spec.application}",
        user=user if per_user else None,
    )
