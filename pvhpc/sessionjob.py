"""Turn a validated session into the job pvhpc submits: script values and scheduler options."""

from __future__ import annotations

from .config import SiteConfig
from .jobscript import JOB_HELPER
from .scheduler import JobRequest
from .spec import SessionSpec


def report_url(config: SiteConfig, session_id: str) -> str:
    return f"{config.service.callback_url}/api/v1/sessions/{session_id}/report"


def build_job(config: SiteConfig, spec: SessionSpec, session_id: str, job_name: str, secret: str,
              report_token: str) -> JobRequest:
    app = config.applications[spec.application]
    partition = config.partitions[spec.partition]
    script = config.template(app).render({
        "pvpython": config.runtime.pvpython,
        "server_script": app.server_script,
        "helper_python": config.runtime.helper_python,
        "job_helper": JOB_HELPER,
        "data_dir": spec.data_root,
        "load_file": spec.data_file or "",
        "report_url": report_url(config, session_id),
        "render_mode": partition.render,
        "start_timeout": app.start_timeout,
        "idle_timeout": app.idle_timeout,
        "secret": secret,
        "report_token": report_token,
        "pythonpath": config.runtime.pythonpath,
    })
    return JobRequest(
        script=script,
        name=job_name,
        partition=partition.slurm_partition,
        time_limit_minutes=spec.walltime_minutes,
        output=str(config.service.job_output_dir / f"{job_name}.out"),
        gpus=spec.gpus,
        gpu_type=partition.gpu_type if spec.gpus else None,
        cpus=partition.cpus,
        memory_mb=partition.memory_mb,
        account=spec.account,
        qos=spec.qos,
        comment=f"pvhpc {spec.application}",
    )
