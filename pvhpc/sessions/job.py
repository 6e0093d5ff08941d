"""Turn a validated session into the job pvhpc submits: script values and scheduler options."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pvhpc.config import ApplicationConfig, SiteConfig
from pvhpc.jobs import command, modules
from pvhpc.jobs.template import JobTemplate
from pvhpc import runtime
from pvhpc.scheduler import JobRequest
from pvhpc.sessions import joblogs, parallel_request, savedstates
from pvhpc.sessions.spec import SessionSpec

# pvhpc's supervisor on the node, found beside the job helper (runtime.job_helper): node-side files travel together.
SUPERVISOR_NAME = "supervisor.py"


def report_urls(config: SiteConfig, session_id: str) -> str:
    """Where the job reports, space-separated: one URL per instance, tried in order by the job helper."""
    return " ".join(f"{url}/api/v1/sessions/{session_id}/report" for url in config.service.callback_urls)


# In what the node's supervisor reads (pvhpc/node/supervisor.py expand), ``${name}`` is a placeholder it fills in and
# ``$$`` a ``$`` of the argument's own. A ``$`` of the command as staff wrote it that could be read otherwise (before
# ``{`` or ``$``), and every ``$`` of a value filled in here (a data file called ``${port}x.vtk``), is written ``$$``:
# each value is filled in once, here or there, and never again.
_LITERAL_DOLLAR = re.compile(r"(\$\{[^}]*\})|\$(?=[{$])")


def _template(arg: str) -> str:
    return _LITERAL_DOLLAR.sub(lambda m: m.group(1) or "$$", arg)


def _escaped(value: str) -> str:
    return value.replace("$", "$$")


def command_line(config: SiteConfig, app: ApplicationConfig, spec: SessionSpec) -> list[str]:
    """The application's command with everything known before the job runs filled in, as templates of the node's
    launcher (a ``$`` of the command's own or of a value written ``$$``)."""
    python = str(app.runtime.venv / "bin" / "python") if app.runtime.venv else config.runtime.helper_python
    return command.fill(tuple(_template(arg) for arg in app.command), {name: _escaped(value) for name, value in {
        "pvpython": config.runtime.pvpython,
        "python": python,
        "server_script": str(app.server_script),
        "data_dir": spec.data_root,
        "load_file": spec.data_file or "",
        "load_path": os.path.join(spec.data_root, spec.data_file) if spec.data_file else "",
        "idle_timeout": str(app.idle_timeout),
        "web_client": str(app.web_client or ""),
    }.items()})


def pvserver_guard(config: SiteConfig) -> str:
    """Where ``pvhpc runtime install`` builds the library a parallel session's pvserver ranks run with (the
    runtime directory, runtime.pythonpath, which the nodes share)."""
    return str(Path(config.runtime.pythonpath.split(os.pathsep)[0]) / runtime.PVSERVER_GUARD)


def pythonpath(config: SiteConfig, app: ApplicationConfig) -> str:
    if app.runtime.venv is not None:
        # pvpython does not run the venv's python, so the venv's packages reach it through PYTHONPATH.
        found = sorted((app.runtime.venv / "lib").glob("python3*/site-packages"))
        return ":".join(str(p) for p in found)
    return ":".join(app.runtime.pythonpath)


def session_modules(config: SiteConfig, spec: SessionSpec) -> tuple[str, ...]:
    """The environment modules the session's job loads, in order: its partition's, its application's, its
    version's."""
    app = config.applications[spec.application]
    version = app.versions.get(spec.version, ()) if spec.version else ()
    return modules.for_session(config.partitions[spec.partition].modules, app.modules, version)


def watchdog_setting(config: SiteConfig) -> str:
    runtime = config.runtime
    if not runtime.watchdog_interval or not config.service.callback_urls:
        return ""
    return f"{runtime.watchdog_interval}:{runtime.watchdog_grace}"


def script_values(config: SiteConfig, spec: SessionSpec, user: str, session_id: str, job_name: str, secret: str,
                  report_token: str, save_state: bool = True, continues: bool = False) -> dict:
    """Every value a job script template may name (template.JOB_SCRIPT_VALUES, kept equal by a test)."""
    app = config.applications[spec.application]
    partition = config.partitions[spec.partition]
    per_user = joblogs.per_user(config)
    log = joblogs.log_path(config, user, job_name)
    data_roots = os.pathsep.join(str(root) for root in app.data_roots)
    return {
        "helper_python": config.runtime.helper_python,
        "job_helper": config.runtime.job_helper,
        "launcher": str(Path(config.runtime.job_helper).parent / SUPERVISOR_NAME),
        # A JSON list in one quoted shell word, read by the launcher: no argument passes through a shell.
        "command": json.dumps(command_line(config, app, spec)),
        "ready": json.dumps({"line": app.ready.line} if app.ready.line else {"port_file": True}),
        "server_listen": config.runtime.server_listen,
        "report_url": report_urls(config, session_id),
        "render_mode": app.render or partition.render,
        "start_timeout": app.start_timeout,
        "secret": secret,
        "report_token": report_token,
        "pythonpath": pythonpath(config, app),
        "venv": str(app.runtime.venv or ""),
        # Jobs run as their users write their own log under the user's home (Slurm would need the
        # directory to exist before the job starts); the service account's jobs use Slurm's --output.
        "log_file": str(log) if per_user else "",
        "pvpython": config.runtime.pvpython,
        "server_script": app.server_script,
        "data_dir": spec.data_root,
        "load_file": spec.data_file or "",
        "idle_timeout": app.idle_timeout,
        # Seconds without user input before the server stops, and the warning's lead (pvhpc/node/input_idle.py).
        "input_idle": f"{app.input_idle_timeout}:{app.input_idle_warning}" if app.input_idle_timeout else "",
        # INTERVAL:GRACE of the node's watchdog (pvhpc/node/watchdog.py); none without a URL to ask (doctor's probe).
        "watchdog": watchdog_setting(config),
        "parallel": parallel_request.job_value(app, spec.nodes, spec.ranks, pvserver_guard(config)),
        # The ParaView state: where the server saves it when the job is ended, the one it starts from (checked
        # before submit) and the roots its data must lie in, checked again on the node (pvhpc/node/pvstate.py).
        "state_save": savedstates.save_prefix(config, user, session_id) if save_state else "",
        "state_load": spec.saved_state_file or "",
        # A successor job (pvhpc/sessions/continuation.py): the state to load comes from its handover, once the
        # job it takes over from has saved it.
        "continues": "1" if continues else "",
        # One value, two names: a state reads files only inside the session's data roots, and the server
        # (pvhpc/node/pvstate.py) and the clients' containment (pvhpc/node/contained.py) each read their own.
        "state_roots": data_roots,
        "data_roots": data_roots,
        # Loaded before anything else runs, with the module system the node has (pvhpc/jobs/modules.py).
        "modules": modules.job_value(session_modules(config, spec)),
        "modules_init": modules.init_value(config.runtime.modules_init),
        "module_paths": modules.paths_value(config.runtime.module_paths),
    }


def build_job(config: SiteConfig, spec: SessionSpec, user: str, session_id: str, job_name: str, secret: str,
              report_token: str, save_state: bool = True, continues: bool = False) -> JobRequest:
    """``save_state``: the job's server saves its ParaView state when the job is ended (not for doctor's probe).
    ``continues``: a continued session's successor job, which starts from its predecessor's state."""
    values = script_values(config, spec, user, session_id, job_name, secret, report_token, save_state, continues)
    template = JobTemplate.current(config.applications[spec.application].jobscript)   # as the file is now
    partition = config.partitions[spec.partition]
    per_user = joblogs.per_user(config)
    # A template uses the values it needs; the config check made sure it names none pvhpc lacks.
    script = template.render({name: value for name, value in values.items() if name in template.names})
    return JobRequest(
        script=script,
        name=job_name,
        partition=partition.slurm_partition,
        time_limit_minutes=spec.walltime_minutes,
        output="/dev/null" if per_user else str(joblogs.log_path(config, user, job_name)),
        gpus=spec.gpus,
        gpu_type=partition.gpu_type if spec.gpus else None,
        cpus=partition.cpus,
        memory_mb=partition.memory_mb,
        nodes=spec.nodes,
        ntasks=max(spec.ranks, 1),
        account=spec.account,
        qos=spec.qos,
        comment=f"pvhpc {spec.application}" + (f" {spec.version}" if spec.version else ""),
        user=user if per_user else None,
    )
